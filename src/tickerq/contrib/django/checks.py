"""Checks of the set-up: Django system checks, and the store's state for ``manage.py
tickerq check``.

System checks (run by ``manage.py check``, ``runserver``, ``migrate``...):

- ``tickerq.E001``: a problem in a jobs module (one per problem, naming the function);
- ``tickerq.E002``: the ``TICKERQ`` setting is wrong (or no store can be derived).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from tickerq.urls import mask_secrets, mask_url

__all__ = ["STORE_TIMEOUT", "StoreState", "check_setup", "store_state"]

STORE_TIMEOUT = 10.0
"""Seconds ``manage.py tickerq check`` waits for the store to answer."""


def check_setup(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The system check: the jobs modules' problems and the ``TICKERQ`` setting."""
    from tickerq.contrib.django.conf import load_config
    from tickerq.contrib.django.project import registration_problems

    found: list[checks.CheckMessage] = [
        checks.Error(
            f"function {problem.function!r}: {problem.problem}",
            hint="fix the @job(...) declaration in the jobs module",
            obj=problem.function,
            id="tickerq.E001",
        )
        for problem in registration_problems()
    ]
    try:
        load_config()
    except ImproperlyConfigured as exc:
        found.append(checks.Error(str(exc), hint="see the tickerq Django docs", id="tickerq.E002"))
    return found


@dataclass(frozen=True)
class StoreState:
    """What ``manage.py tickerq check`` found at the store."""

    ok: bool
    message: str


def store_state(url: str, timeout: float = STORE_TIMEOUT) -> StoreState:
    """Whether the store at ``url`` answers and has the schema this tickerq needs."""
    from tickerq.errors import InvalidArgumentError
    from tickerq.stores.sql import migrate
    from tickerq.stores.sql.dialects import for_url

    safe = mask_url(url)
    if url.split("://", 1)[0] == "memory":
        return StoreState(True, f"store {safe}: in this process only (nothing to check)")
    try:
        dialect = for_url(url)
    except InvalidArgumentError as exc:
        return StoreState(False, mask_secrets(str(exc), url))
    if dialect.file is not None and not os.path.exists(dialect.file):
        return StoreState(
            False, f"store {safe}: no database file; run `manage.py tickerq db` to create it"
        )

    async def read() -> migrate.SchemaStatus:
        engine = dialect.create_engine(1)
        try:
            return await asyncio.wait_for(migrate.status(engine), timeout)
        finally:
            await engine.dispose()

    try:
        state = asyncio.run(read())
    except TimeoutError:
        return StoreState(False, f"store {safe}: no answer within {timeout:g} s")
    except Exception as exc:
        driver_error = getattr(exc, "orig", None) or exc
        detail = (str(driver_error).strip().splitlines() or [type(driver_error).__name__])[0]
        return StoreState(False, f"store {safe} is unreachable: {mask_secrets(detail, url)}")
    revision = state.effective_revision or "none"
    if state.up_to_date:
        return StoreState(True, f"store {safe}: schema {revision} (up to date)")
    if state.state == "unknown":
        what = f"schema {revision} is newer than this tickerq knows (it needs {state.head})"
        todo = "upgrade tickerq"
    elif state.effective_revision is None:
        what, todo = "no tickerq tables", "run `manage.py tickerq db`"
    else:
        what = f"schema {revision} is behind (this tickerq needs {state.head})"
        todo = "run `manage.py tickerq db`"
    return StoreState(False, f"store {safe}: {what}; {todo}")

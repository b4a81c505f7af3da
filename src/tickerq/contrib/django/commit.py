"""Enqueue when the database transaction commits: nothing when it rolls back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from django.db import transaction

from tickerq.context import Req
from tickerq.errors import FunctionNotFoundError
from tickerq.functions import TickerFunction
from tickerq.managers import TimeTickerSpec
from tickerq.unique import OnConflict, check_on_conflict, check_unique_key

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["enqueue_on_commit"]


@overload
def enqueue_on_commit(
    function: TickerFunction[Req],
    request: Req | None = None,
    *,
    at: datetime | None = None,
    after: timedelta | float | None = None,
    description: str = "",
    retries: int | None = None,
    retry_intervals: Sequence[float] | None = None,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
    unique_key: str | None = None,
    on_conflict: OnConflict = "keep",
    using: str | None = None,
    robust: bool = False,
) -> None: ...
@overload
def enqueue_on_commit(
    function: str,
    request: Any = None,
    *,
    at: datetime | None = None,
    after: timedelta | float | None = None,
    description: str = "",
    retries: int | None = None,
    retry_intervals: Sequence[float] | None = None,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
    unique_key: str | None = None,
    on_conflict: OnConflict = "keep",
    using: str | None = None,
    robust: bool = False,
) -> None: ...
def enqueue_on_commit(
    function: TickerFunction[Any] | str,
    request: Any = None,
    *,
    at: datetime | None = None,
    after: timedelta | float | None = None,
    description: str = "",
    retries: int | None = None,
    retry_intervals: Sequence[float] | None = None,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
    unique_key: str | None = None,
    on_conflict: OnConflict = "keep",
    using: str | None = None,
    robust: bool = False,
) -> None:
    """Add a time ticker of ``function`` (a ``@job`` function or its name) once the
    current transaction of the database ``using`` commits.

    A rolled-back transaction adds nothing; outside a transaction it is added at
    once (Django's ``transaction.on_commit``). The arguments are those of
    ``app.schedule`` (``unique_key`` and ``on_conflict`` too), checked now for a
    function registered here: an unknown name or a bad request raises here, not at
    the commit (a name only the cluster knows is checked at the commit). ``after``
    counts from the commit. The ticker is stored through ``get_sync_app()``
    (blocking), so call it from sync code, as the ORM's transactions are;
    ``robust=True`` logs an error of the enqueue at commit instead of raising it.
    """
    from tickerq.contrib.django.project import get_app, get_sync_app

    app = get_app()
    name = function if isinstance(function, str) else function.name
    if _registered(app, name):
        spec = TimeTickerSpec(
            function=name,
            request=request,
            execution_time=at,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
        )
        app.time_tickers._build(spec, app.clock.now(), None, after)  # raises what add() would
    check_unique_key(unique_key)
    check_on_conflict(on_conflict)

    def add() -> None:
        get_sync_app().schedule(
            name,
            request,
            at=at,
            after=after,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    transaction.on_commit(add, using=using, robust=robust)


def _registered(app: TickerQ, name: str) -> bool:
    try:
        app.get_function(name)
    except FunctionNotFoundError:
        return False
    return True

"""What each optional part of tickerq needs installed, and the error naming the
``pip install`` that brings it.

The core (``pip install tickerq``) is the engine, the memory store, the command
line and the blocking facade: cronsim, pydantic, tzdata and click. The rest comes
with extras: ``[sqlite]``, ``[postgres]``, ``[dashboard]``, ``[demo]``,
``[prometheus]``, ``[otel]``, ``[django]``, ``[fastapi]``/``[starlette]``,
``[flask]``, or ``[all]``.
"""

from __future__ import annotations

import importlib.util

from tickerq.errors import MissingDependencyError

__all__ = ["EXTRAS", "MissingDependencyError", "need", "need_for_store"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "sqlite": ("sqlalchemy", "alembic"),
    "postgres": ("sqlalchemy", "alembic", "asyncpg", "greenlet"),
    "dashboard": ("starlette", "jinja2", "multipart", "uvicorn", "h11"),
    "demo": ("rich",),
    "django": ("django",),
}
"""The modules each extra brings that tickerq imports (by import name)."""


def need(extra: str, feature: str) -> None:
    """Raise MissingDependencyError when a module of ``extra`` is not installed."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(feature, extra, missing)


def need_for_store(url: str) -> None:
    """Raise MissingDependencyError when the store of ``url`` needs an extra that is
    not installed (``sqlite://``: ``[sqlite]``; ``postgresql://``: ``[postgres]``)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        need("sqlite", "the SQLite store")
    elif scheme in ("postgresql", "postgres"):
        need("postgres", "the PostgreSQL store")

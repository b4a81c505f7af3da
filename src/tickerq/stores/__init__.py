"""Store implementations; see :mod:`tickerq.stores.base` for the contract."""

from __future__ import annotations

from tickerq.stores.base import Job, Outcome, Store, TickerQuery
from tickerq.stores.memory import MemoryStore

__all__ = ["Job", "MemoryStore", "Outcome", "Store", "TickerQuery", "open_store"]


def open_store(url: str) -> Store:
    """The store for a URL: ``memory://``, ``sqlite:///path`` or ``postgresql://...``."""
    from tickerq.errors import InvalidArgumentError

    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else url
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("sqlite", "postgresql", "postgres"):
        try:
            from tickerq.stores.sql import SqlStore
        except ImportError as exc:  # the SQL extra is not installed
            raise InvalidArgumentError(
                f"the {scheme} store needs SQLAlchemy and its driver: "
                f"pip install 'tickerq[{'sqlite' if scheme == 'sqlite' else 'postgresql'}]' ({exc})"
            ) from None
        return SqlStore(url)
    raise InvalidArgumentError(
        f"unsupported store URL scheme {scheme!r} in {url!r}; "
        "supported: memory://, sqlite:///path, postgresql://user@host/db"
    )

"""Store implementations; see :mod:`tickerq.stores.base` for the contract."""

from __future__ import annotations

from tickerq.stores.base import Job, Outcome, Store, TickerQuery
from tickerq.stores.memory import MemoryStore

__all__ = ["Job", "MemoryStore", "Outcome", "Store", "TickerQuery", "open_store"]


def open_store(url: str) -> Store:
    """Make the store for a URL: ``memory://`` (more schemes come with their stores)."""
    from tickerq.errors import InvalidArgumentError

    scheme = url.split("://", 1)[0] if "://" in url else url
    if scheme == "memory":
        return MemoryStore()
    raise InvalidArgumentError(
        f"unsupported store URL scheme {scheme!r} in {url!r}; supported: memory://"
    )

"""Store implementations; see :mod:`tickerq.stores.base` for the contract."""

from __future__ import annotations

from tickerq.stores.base import Job, Outcome, Store, TickerQuery
from tickerq.stores.memory import MemoryStore

__all__ = ["Job", "MemoryStore", "Outcome", "Store", "TickerQuery", "open_store"]


def open_store(url: str, *, auto_upgrade: bool = False) -> Store:
    """The store for a URL: ``memory://``, ``sqlite:///path`` or ``postgresql://...``.

    ``auto_upgrade`` lets a SQL store migrate an older schema when it opens.
    """
    from tickerq.errors import InvalidArgumentError
    from tickerq.stores.sql import SqlStore, mask_password

    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else url
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("sqlite", "postgresql", "postgres"):
        return SqlStore(url, auto_upgrade=auto_upgrade)
    raise InvalidArgumentError(
        f"unsupported store URL scheme {scheme!r} in {mask_password(url)!r}; "
        "supported: memory://, sqlite:///path, postgresql://user@host/db"
    )

"""Store implementations; see :mod:`tickerq.stores.base` for the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tickerq.stores.base import Job, Outcome, Store, TickerQuery

if TYPE_CHECKING:
    from tickerq.stores.memory import MemoryStore

__all__ = [
    "Job",
    "MemoryStore",
    "Outcome",
    "Store",
    "TickerQuery",
    "mask_password",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # MemoryStore is imported when first asked for: a SQL worker never loads it.
    if name == "MemoryStore":
        from tickerq.stores.memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (see :func:`tickerq.urls.mask_url`)."""
    from tickerq.urls import mask_url

    return mask_url(url)


def open_store(url: str, *, auto_upgrade: bool = False) -> Store:
    """The store for a URL: ``memory://``, ``sqlite:///path`` or ``postgresql://...``.

    ``memory://?history_limit=N`` bounds the ended rows a memory store keeps
    (``none``: no bound; default :data:`~tickerq.stores.memory.DEFAULT_HISTORY_LIMIT`).

    ``auto_upgrade`` lets a SQL store migrate an older schema when it opens.
    """
    from tickerq.errors import InvalidArgumentError

    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else url
    if scheme == "memory":
        from tickerq.stores.memory import MemoryStore

        return MemoryStore.from_url(url)
    if scheme in ("sqlite", "postgresql", "postgres"):
        from tickerq._extras import need_for_store

        need_for_store(url)
        from tickerq.stores.sql import SqlStore  # SQLAlchemy only when a SQL store is used

        return SqlStore(url, auto_upgrade=auto_upgrade)
    raise InvalidArgumentError(
        f"unsupported store URL scheme {mask_password(scheme)!r} in {mask_password(url)!r}; "
        "supported: memory://, sqlite:///path, postgresql://user@host/db"
    )

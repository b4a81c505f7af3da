"""SQL stores (SQLite and PostgreSQL) over SQLAlchemy 2 Core."""

from __future__ import annotations

from tickerq.stores import mask_password
from tickerq.stores.sql.store import SqlStore

__all__ = ["SqlStore", "mask_password"]

"""What differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Case, ColumnElement, Engine, Select, Table, case, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from tickerq.errors import InvalidArgumentError
from tickerq.stores import mask_password
from tickerq.urls import mask_url

__all__ = ["Dialect", "as_utc", "for_url", "later_of", "new_id", "utcnow"]


def utcnow() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def new_id() -> UUID:
    """A new row id."""
    return uuid4()


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def later_of(column: ColumnElement[Any], now: datetime) -> Case[Any]:
    """``column`` if it is after ``now``, else ``now``."""
    return case((column.is_(None), now), (column < now, now), else_=column)


@dataclass(frozen=True)
class Dialect:
    """A database family and how tickerq talks to it."""

    name: str
    driver_url: str
    safe_url: str
    """The URL without its password, for messages and logs."""
    poll_interval: float
    plain_url: str = ""
    """The URL for a raw driver connection (PostgreSQL LISTEN)."""
    where: str = ""
    """Host, port and database (or the file), for messages."""

    def create_engine(self, pool_size: int) -> AsyncEngine:
        """An async engine with this dialect's connection settings."""
        if self.name == "sqlite":
            engine = create_async_engine(self.driver_url, pool_size=pool_size, max_overflow=0)
            _sqlite_settings(engine.sync_engine)
            return engine
        return create_async_engine(
            self.driver_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )

    def create_writer_engine(self) -> Engine:
        """SQLite: a plain (sync) engine of one connection for the store's writer thread,
        where each write transaction runs whole (see ``SqlBase.write``)."""
        url = make_url(self.driver_url).set(drivername="sqlite+pysqlite")
        engine = create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        _sqlite_settings(engine)
        return engine

    async def prepare(self, engine: AsyncEngine, auto_upgrade: bool = False) -> None:
        """Bring the schema to what this tickerq needs, serialized across processes.

        An empty database is created through the migrations; tables from before
        migrations are stamped; an older schema is upgraded only if
        ``auto_upgrade``, else TickerStateError says how to upgrade it.
        """
        from tickerq.stores.sql import migrate

        await migrate.ensure(engine, auto_upgrade=auto_upgrade, url=self.safe_url)

    def insert_ignore(self, table: Table, values: dict[str, Any]) -> Insert:
        """INSERT that does nothing when a unique key already exists."""
        module: Any = postgresql if self.name == "postgresql" else sqlite
        stmt: Insert = module.insert(table).values(**values).on_conflict_do_nothing()
        return stmt

    def upsert(self, table: Table, values: dict[str, Any], key: str) -> Insert:
        """INSERT, or UPDATE the row with the same ``key``."""
        module: Any = postgresql if self.name == "postgresql" else sqlite
        stmt = module.insert(table).values(**values)
        updates = {k: stmt.excluded[k] for k in values if k != key}
        result: Insert = stmt.on_conflict_do_update(index_elements=[key], set_=updates)
        return result

    def skip_locked(self, stmt: Select[Any]) -> Select[Any]:
        """Lock the selected rows, skipping rows other transactions hold (PostgreSQL)."""
        if self.name == "postgresql":
            return stmt.with_for_update(skip_locked=True)
        return stmt  # SQLite: the write transaction already runs alone


def for_url(url: str) -> Dialect:
    """The dialect of a ``sqlite:///`` or ``postgresql://`` URL."""
    try:
        parsed = make_url(url)
    except Exception:
        raise InvalidArgumentError(f"not a database URL: {mask_password(url)!r}") from None
    safe = mask_url(url)
    if parsed.host and "@" in parsed.host:
        # the driver would take the end of the password for the host (and look it up)
        raise InvalidArgumentError(
            f"{safe!r}: the password holds an unencoded '@'; write it as %40"
        )
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidArgumentError(
                f"{safe!r}: the SQLite store needs a file (sqlite:///path/to/tickerq.db); "
                "use memory:// for an in-memory store"
            )
        driver = parsed.set(drivername="sqlite+aiosqlite")
        return Dialect(
            "sqlite",
            driver.render_as_string(hide_password=False),
            safe,
            0.5,
            where=f"file {parsed.database}",
        )
    if backend in ("postgresql", "postgres"):
        driver = parsed.set(drivername="postgresql+asyncpg")
        plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
        return Dialect(
            "postgresql", driver.render_as_string(hide_password=False), safe, 5.0, plain, where
        )
    raise InvalidArgumentError(
        f"unsupported store URL scheme {parsed.drivername!r} in {safe!r}; "
        "supported: memory://, sqlite:///path, postgresql://user@host/db"
    )


def _sqlite_settings(engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE so writers queue up."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        # Switching a new file to WAL does not wait on the busy timeout when another
        # process does the same at once; retry it for a while instead of failing.
        for attempt in range(200):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as exc:
                if "locked" not in str(exc) or attempt == 199:
                    raise
                time.sleep(0.01 + random.random() * 0.02)
        for pragma in (
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA mmap_size=268435456",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

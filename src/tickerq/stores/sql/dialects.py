"""What differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import (
    Case,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Select,
    Table,
    UnaryExpression,
    case,
    create_engine,
    event,
    extract,
    func,
    select,
    text,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import make_url
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert

from tickerq import ids
from tickerq.errors import InvalidArgumentError, StoreConnectionError
from tickerq.stores import mask_password
from tickerq.stores.sql.threaded import ThreadedEngine
from tickerq.urls import mask_url

if TYPE_CHECKING:  # PostgreSQL only: SQLite runs on ThreadedEngine (see create_engine)
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DEFAULT_PG_POOL_SIZE",
    "DEFAULT_SQLITE_POOL_SIZE",
    "NO_LISTEN_POLL_INTERVAL",
    "ConnectionBudget",
    "Dialect",
    "as_utc",
    "for_url",
    "later_of",
    "new_id",
    "utcnow",
]

DEFAULT_PG_POOL_SIZE = 3
"""A PostgreSQL node's connections by default, all counted: one pooled connection,
the worker's hot path and the LISTEN connection. 25 nodes then take 75 of the 97
connections a default server (max_connections 100, 3 reserved) lets users open."""

DEFAULT_SQLITE_POOL_SIZE = 10
"""SQLite's pool of reader connections (a file has no connection limit)."""

NO_LISTEN_POLL_INTERVAL = 1.0
"""Seconds between a PostgreSQL node's polls for work when it does not LISTEN."""

_OPTIONS = ("pool_size", "pgbouncer", "listen_url")
"""Query parameters of a store URL that tickerq reads and the driver never sees."""


def utcnow() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def new_id() -> UUID:
    """A new row id (time-ordered: :func:`tickerq.ids.new_id`)."""
    return ids.new_id()


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def later_of(column: ColumnElement[Any], now: datetime) -> Case[Any]:
    """``column`` if it is after ``now``, else ``now``."""
    return case((column.is_(None), now), (column < now, now), else_=column)


@dataclass(frozen=True)
class ConnectionBudget:
    """How a node shares out its connections to the database (see docs/stores.md).

    ``total`` bounds everything the node opens: the pool (``pool``, no overflow),
    the worker's hot-path connection and the LISTEN connection. A small budget
    drops the hot path first (the worker then claims through the pool), then
    LISTEN (the node polls instead).
    """

    total: int
    pool: int
    hot_path: bool
    listen: bool


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
    pool_size: int | None = None
    """The ``pool_size`` URL option (the node's connection budget), if given."""
    pgbouncer: bool = False
    """``pgbouncer=true``: keep no session state on pooled connections (PgBouncer in
    transaction mode): no prepared statements kept, no session settings."""
    listen_url: str = ""
    """The ``listen_url`` URL option: a direct URL for the LISTEN connection (raw
    driver form, with its password); "" = the store's URL, or none in PgBouncer mode."""

    @property
    def file(self) -> str | None:
        """SQLite: the database file's path (None on PostgreSQL)."""
        return self.where.removeprefix("file ") if self.name == "sqlite" else None

    @property
    def row_locks(self) -> bool:
        """Whether transactions write side by side, so rows and keys are locked
        (PostgreSQL); False: write transactions run one at a time (SQLite)."""
        return self.name == "postgresql"

    def poll_interval_for(self, listening: bool) -> float:
        """Seconds between a node's polls for work: PostgreSQL polls often when it
        cannot LISTEN (no room in the connection budget, or PgBouncer)."""
        if self.name == "postgresql" and not listening:
            return NO_LISTEN_POLL_INTERVAL
        return self.poll_interval

    def check_location(self) -> None:
        """Raise StoreConnectionError when an SQLite file's folder does not exist (the
        driver would say only "unable to open database file")."""
        if self.file is not None:
            folder = Path(self.file).parent
            if not folder.is_dir():
                raise StoreConnectionError(
                    f"cannot open sqlite at {self.where}: folder {folder} does not exist"
                )

    def lock(self, conn: Connection, key: int) -> None:
        """Hold ``key`` until the transaction ends, so transactions that take it run
        one after another (PostgreSQL advisory lock; SQLite's write transactions run
        one at a time anyway)."""
        if self.row_locks:
            conn.execute(select(func.pg_advisory_xact_lock(key)))

    def notify(self, conn: Connection, channel: str, payload: str) -> None:
        """Send ``payload`` to the listeners of ``channel`` when the transaction
        commits (PostgreSQL NOTIFY; SQLite nodes poll instead)."""
        if self.name == "postgresql":
            conn.execute(select(func.pg_notify(channel, payload)))

    def notify_each(self, conn: Connection, channel: str, payloads: list[str]) -> None:
        """Send each of ``payloads`` as its own notice when the transaction commits,
        in one statement (PostgreSQL; SQLite nodes poll instead)."""
        if self.name == "postgresql" and payloads:
            conn.execute(
                text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p"),
                {"channel": channel, "payloads": payloads},
            )

    def with_options(
        self, *, pgbouncer: bool | None = None, listen_url: str | None = None
    ) -> Dialect:
        """This dialect with the PgBouncer mode or LISTEN URL set (None: keep the URL's)."""
        changes: dict[str, Any] = {}
        if pgbouncer is not None:
            changes["pgbouncer"] = bool(pgbouncer)
        if listen_url is not None:
            changes["listen_url"] = _listen_url_option(listen_url, self.safe_url)
        if changes and self.name != "postgresql":
            raise InvalidArgumentError(
                f"{self.safe_url!r}: pgbouncer and listen_url are PostgreSQL options"
            )
        return replace(self, **changes) if changes else self

    def budget(self, pool_size: int | None = None) -> ConnectionBudget:
        """How ``pool_size`` connections (default: the URL's, else the dialect's) are
        shared out; see :class:`ConnectionBudget`."""
        total = pool_size if pool_size is not None else self.pool_size
        if total is not None and (isinstance(total, bool) or total < 1):
            raise InvalidArgumentError(f"pool_size must be 1 or more, got {total!r}")
        if self.name == "sqlite":
            # The file's writer and hot-path connections are sqlite3 handles, not
            # server connections: the knob sizes the pool of readers only.
            size = total or DEFAULT_SQLITE_POOL_SIZE
            return ConnectionBudget(size, size, hot_path=True, listen=False)
        total = total or DEFAULT_PG_POOL_SIZE
        can_listen = not self.pgbouncer or bool(self.listen_url)
        listen = can_listen and total >= 2
        hot_path = total - listen >= 2
        return ConnectionBudget(total, total - listen - hot_path, hot_path, listen)

    def create_engine(self, pool_size: int) -> AsyncEngine | ThreadedEngine:
        """An engine for asyncio whose pool holds at most ``pool_size`` connections.

        SQLite: a plain engine whose connections each run on a thread of their own
        (:class:`~tickerq.stores.sql.threaded.ThreadedEngine`: no asyncio extension,
        greenlet or aiosqlite to load). PostgreSQL: SQLAlchemy's ``AsyncEngine``
        over asyncpg, with no pre-ping on checkout (it costs a round trip per
        use): a connection the server closed is noticed locally (see
        :func:`_drop_closed_on_checkout`), and the callers that matter retry once
        on a connection error.
        """
        if self.name == "sqlite":
            plain = create_engine(
                self.driver_url,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"check_same_thread": False},  # a pooled one moves between threads
            )
            _sqlite_settings(plain)
            return ThreadedEngine(plain, pool_size, name="tickerq-sqlite-reader")
        from sqlalchemy.ext.asyncio import create_async_engine

        connect_args: dict[str, Any] = {}
        if self.pgbouncer:
            # no named prepared statements: neither asyncpg's cache nor SQLAlchemy's
            connect_args = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
        engine = create_async_engine(
            self.driver_url, pool_size=pool_size, max_overflow=0, connect_args=connect_args
        )
        event.listen(engine.sync_engine.pool, "checkout", _drop_closed_on_checkout)
        return engine

    def create_writer_engine(self) -> Engine:
        """SQLite: a plain (sync) engine of one connection for the store's writer thread,
        where each write transaction runs whole (see ``SqlBase.write``)."""
        engine = create_engine(
            self.driver_url,
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        _sqlite_settings(engine)
        return engine

    async def prepare(
        self, engine: AsyncEngine | ThreadedEngine, auto_upgrade: bool = False
    ) -> None:
        """Bring the schema to what this tickerq needs, serialized across processes.

        An empty database is created through the migrations; tables from before
        migrations are stamped; an older schema is upgraded only if
        ``auto_upgrade``, else TickerStateError says how to upgrade it.
        """
        from tickerq.stores.sql import migrate

        await migrate.ensure(engine, auto_upgrade=auto_upgrade, url=self.safe_url)

    def insert_ignore(self, table: Table, values: dict[str, Any]) -> Insert:
        """INSERT that does nothing when a unique key already exists."""
        module = self._insert_module()
        stmt: Insert = module.insert(table).values(**values).on_conflict_do_nothing()
        return stmt

    def upsert(self, table: Table, values: dict[str, Any], key: str) -> Insert:
        """INSERT, or UPDATE the row with the same ``key``."""
        module = self._insert_module()
        stmt = module.insert(table).values(**values)
        updates = {k: stmt.excluded[k] for k in values if k != key}
        result: Insert = stmt.on_conflict_do_update(index_elements=[key], set_=updates)
        return result

    def _insert_module(self) -> Any:
        """The SQLAlchemy dialect module with this database's INSERT ... ON CONFLICT
        (imported here: a SQLite process never loads the PostgreSQL dialect)."""
        if self.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql
        from sqlalchemy.dialects import sqlite

        return sqlite

    def nulls_last(self, order: UnaryExpression[Any]) -> UnaryExpression[Any]:
        """A DESC order with NULLs last (SQLite's DESC puts them last by itself, and
        its indexes take no NULLS LAST)."""
        return order.nulls_last() if self.name == "postgresql" else order

    def epoch_seconds(self, column: ColumnElement[Any]) -> ColumnElement[int]:
        """A timestamp column as whole seconds since the epoch."""
        if self.name == "sqlite":
            return sql_cast(func.strftime("%s", column), Integer)
        return sql_cast(func.floor(extract("epoch", column)), Integer)

    def deletions_marker(self, table: Table) -> Executable:
        """A query of one value that changes when rows of ``table`` are deleted:
        PostgreSQL's count of deleted tuples (from its statistics: it may lag a
        moment), SQLite's row count."""
        if self.name == "postgresql":
            query = "SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = :name"
            return text(query).bindparams(name=table.name)
        return select(func.count()).select_from(table)

    def skip_locked(self, stmt: Select[Any]) -> Select[Any]:
        """Lock the selected rows, skipping rows other transactions hold (PostgreSQL)."""
        if self.row_locks:
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
        pool_size = _pool_size_option(parsed.query.get("pool_size"), safe)
        if "pgbouncer" in parsed.query or "listen_url" in parsed.query:
            raise InvalidArgumentError(f"{safe!r}: pgbouncer and listen_url are PostgreSQL options")
        parsed = parsed.difference_update_query(_OPTIONS)
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidArgumentError(
                f"{safe!r}: the SQLite store needs a file (sqlite:///path/to/tickerq.db); "
                "use memory:// for an in-memory store"
            )
        driver = parsed.set(drivername="sqlite+pysqlite")
        return Dialect(
            "sqlite",
            driver.render_as_string(hide_password=False),
            safe,
            0.5,
            where=f"file {parsed.database}",
            pool_size=pool_size,
        )
    options = {k: v for k, v in parsed.query.items() if k in _OPTIONS}
    parsed = parsed.difference_update_query(_OPTIONS)
    pool_size = _pool_size_option(options.get("pool_size"), safe)
    if backend in ("postgresql", "postgres"):
        from tickerq.stores.sql.schema import add_postgresql_options

        add_postgresql_options()
        driver = parsed.set(drivername="postgresql+asyncpg")
        plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
        return Dialect(
            "postgresql",
            driver.render_as_string(hide_password=False),
            safe,
            5.0,
            plain,
            where,
            pool_size=pool_size,
            pgbouncer=_flag_option("pgbouncer", options.get("pgbouncer"), safe),
            listen_url=_listen_url_option(options.get("listen_url"), safe),
        )
    raise InvalidArgumentError(
        f"unsupported store URL scheme {parsed.drivername!r} in {safe!r}; "
        "supported: memory://, sqlite:///path, postgresql://user@host/db"
    )


def _one(value: str | tuple[str, ...] | None, name: str, safe: str) -> str | None:
    if isinstance(value, tuple):
        raise InvalidArgumentError(f"{safe!r}: the option {name} is given more than once")
    return value


def _pool_size_option(value: str | tuple[str, ...] | None, safe: str) -> int | None:
    text = _one(value, "pool_size", safe)
    if text is None:
        return None
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise InvalidArgumentError(f"{safe!r}: pool_size must be a whole number >= 1, got {text!r}")
    return size


def _flag_option(name: str, value: str | tuple[str, ...] | None, safe: str) -> bool:
    text = _one(value, name, safe)
    if text is None:
        return False
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidArgumentError(f"{safe!r}: {name} must be true or false, got {text!r}")


def _listen_url_option(value: str | tuple[str, ...] | None, safe: str) -> str:
    text = _one(value, "listen_url", safe)
    if not text:
        return ""
    try:
        parsed = make_url(text)
    except Exception:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise InvalidArgumentError(
            f"{safe!r}: listen_url must be a postgresql:// URL (percent-encoded), "
            f"got {mask_url(text)!r}"
        )
    parsed = parsed.set(drivername="postgresql").difference_update_query(_OPTIONS)
    return parsed.render_as_string(hide_password=False)


def _drop_closed_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed (restart, idle timeout, terminated) is
    replaced at checkout, without a round trip: asyncpg has seen its socket close."""
    from sqlalchemy.exc import DisconnectionError

    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


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
        # No memory-mapped reads (mmap_size=0): every page of the file a connection
        # read stayed mapped in the process, 5 MB of a worker's RSS after 10,000
        # jobs (more on a bigger file: up to the map size per connection), and the
        # SQLite drain of bench/scale.py was no faster with it.
        for pragma in (
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA mmap_size=0",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

"""The SQL schema, defined once for every dialect (SQLAlchemy 2 Core).

Time tickers and cron occurrences share one table, ``tickerq_tickers``,
told apart by ``kind``: the engine claims both with a single statement, and an
occurrence's ``(cron_ticker_id, fire_time)`` is unique, so each cron fire
exists once however many nodes materialize it. ``execution_time`` is when a
row is next due (it moves on retries); ``fire_time`` never moves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.elements import TextClause

from tickerq.enums import Priority

__all__ = [
    "KEYED_RUNNING_SQL",
    "SCHEMA_VERSION",
    "UNIQUE_HELD_SQL",
    "WAITING_PRIORITIES",
    "WAITING_SQL",
    "JSONColumn",
    "NullableJSON",
    "UTCDateTime",
    "add_postgresql_options",
    "metadata",
    "tables",
    "waiting",
]

SCHEMA_VERSION = "0008"
"""The Alembic revision the code expects."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class JSONColumn(TypeDecorator[Any]):
    """Any JSON value, kept exactly: JSON on PostgreSQL, JSON text in a TEXT column on SQLite.

    SQLite gives a column declared ``JSON`` NUMERIC affinity, which turns the text
    of a bare number (``5``, ``2.5``, ``1.0``) into an INTEGER or REAL: its type
    changes (1.0 comes back as 1), big integers lose digits, and the text is no
    longer text. A TEXT column keeps what was written.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return value
        return json.dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return value
        return decode_sqlite_json(value)


class NullableJSON(JSONColumn):
    """A :class:`JSONColumn` where Python None is SQL NULL (not the JSON ``null``), for
    values that are mostly absent (headers, results): the fast paths that write them
    as NULL and the general path store the same thing, and NULL costs nothing."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite" or value is None:
            return value
        return json.dumps(value)


def decode_sqlite_json(value: Any) -> Any:
    """A JSON column's value as read from SQLite (rows written before migration 0003
    may hold a bare number as INTEGER or REAL)."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


metadata = MetaData()

tickers = Table(
    "tickerq_tickers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("function", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("execution_time", UTCDateTime, nullable=True),
    Column("request", JSONColumn, nullable=True),
    Column("retries", Integer, nullable=False, default=0),
    Column("retry_intervals", JSON, nullable=True),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("timeout", Float, nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("parent_id", Uuid, ForeignKey("tickerq_tickers.id", ondelete="CASCADE"), nullable=True),
    Column("run_condition", String(32), nullable=True),
    Column("awaiting_parent", Boolean, nullable=False, default=False),
    Column(
        "cron_ticker_id",
        Uuid,
        ForeignKey("tickerq_cron_tickers.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("fire_time", UTCDateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("lock_holder", String(200), nullable=True),
    Column("locked_at", UTCDateTime, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("executed_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("elapsed_ms", Float, nullable=True),
    Column("error_type", String(200), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("skipped_reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Counts the claims of the row: (lock_holder, claims) names one claim, so the
    # result of a run whose claim was lost (lease ran out) never lands on a newer one.
    Column("claims", Integer, nullable=False, default=0, server_default="0"),
    # How many runs of the row were lost (their node stopped heartbeating).
    Column("stale_restarts", Integer, nullable=False, default=0, server_default="0"),
    # Set on a parent in the transaction that adds a child to it; ending a run
    # reads it from the row, so a child added while its parent ran is resolved.
    Column("has_children", Boolean, nullable=False, default=False, server_default=false()),
    # A time ticker's headers (text to text), NULL when it has none; what the
    # row's last attempt returned, NULL while none succeeded.
    Column("headers", NullableJSON, nullable=True),
    Column("result", NullableJSON, nullable=True),
    # A time ticker's unique key (held while the row waits or runs: see
    # uq_tickerq_tickers_unique) and the key its per-key concurrency limit counts
    # it under; NULL when it has none.
    Column("unique_key", String(200), nullable=True),
    Column("concurrency_key", String(200), nullable=True),
    UniqueConstraint("cron_ticker_id", "fire_time", name="uq_tickerq_occurrence_fire"),
    # Rows by status: running rows whose lease lapsed (reclaim), counts by status.
    Index("ix_tickerq_tickers_status", "status", "lease_until"),
    Index("ix_tickerq_tickers_parent", "parent_id"),
    Index("ix_tickerq_tickers_updated", "kind", "updated_at"),
)

# Rows waiting to run, by priority then due time: partial (status IDLE, not
# waiting for a chain parent), so ended rows, running rows and chain children
# have no entry. The claim reads one bounded range per priority (due rows of
# that priority, oldest first) and stops at the rows it takes; the next due
# time is one probe per priority. Neither depends on how many rows ended or
# wait for later. The predicate is written as the queries write it (see
# :data:`WAITING_SQL`), or SQLite would not use the index.
WAITING_SQL = {
    "postgresql": "status = 'IDLE' AND NOT awaiting_parent",
    "sqlite": "status = 'IDLE' AND awaiting_parent = 0",
}
"""The predicate of the waiting index, per dialect, as raw SQL text."""


def waiting(dialect: str) -> TextClause:
    """The waiting index's predicate as a WHERE clause of ``tickerq_tickers``."""
    return text(WAITING_SQL[dialect])


WAITING_PRIORITIES = tuple(sorted(Priority, reverse=True))
"""Priorities in claim order (LONG_RUNNING, HIGH, NORMAL, LOW): a query of the
waiting index reads one range per priority."""

Index(
    "ix_tickerq_tickers_waiting",
    tickers.c.priority,
    tickers.c.execution_time,
    sqlite_where=text(WAITING_SQL["sqlite"]),
)

# The dashboard's list of time tickers (latest execution time first) walks this
# index in its ORDER BY, so a page costs the rows it shows, however deep it is:
# on PostgreSQL the filters (status, function, roots only) and the id are in the
# index too, so rows skipped by OFFSET or filtered out are never read from the
# table. (SQLite orders NULLs last in DESC by itself and has no NULLS LAST here.)
Index(
    "ix_tickerq_tickers_list",
    tickers.c.kind,
    tickers.c.execution_time.desc().nulls_last(),
    tickers.c.created_at.desc(),
    tickers.c.id.desc(),
)

# Rows that ended, by when: the dashboard's throughput chart reads one time range
# from it (index only on PostgreSQL). Partial, so the engine writes an entry only
# when a row ends, not on every claim or retry.
Index(
    "ix_tickerq_tickers_finished",
    tickers.c.finished_at,
    sqlite_where=tickers.c.finished_at.is_not(None),
)

UNIQUE_HELD_SQL = "unique_key IS NOT NULL AND status IN ('IDLE', 'QUEUED', 'IN_PROGRESS')"
"""The rows that hold their unique key: those waiting or running."""

# One waiting or running row per (function, unique key), cluster-wide: an enqueue
# with a key already held conflicts here, whichever node adds it.
Index(
    "uq_tickerq_tickers_unique",
    tickers.c.function,
    tickers.c.unique_key,
    unique=True,
    sqlite_where=text(UNIQUE_HELD_SQL),
)

KEYED_RUNNING_SQL = "concurrency_key IS NOT NULL AND status = 'IN_PROGRESS'"
"""The running rows a per-key concurrency limit counts."""

# Running rows with a concurrency key, by function and key: a claim counts a key's
# running rows from it, however many rows ended.
Index(
    "ix_tickerq_tickers_key_running",
    tickers.c.function,
    tickers.c.concurrency_key,
    sqlite_where=text(KEYED_RUNNING_SQL),
)

cron_tickers = Table(
    "tickerq_cron_tickers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("function", String(200), nullable=False),
    Column("expression", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("request", JSONColumn, nullable=True),
    Column("retries", Integer, nullable=False, default=0),
    Column("retry_intervals", JSON, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("misfire", String(16), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("seed_key", String(420), nullable=True, unique=True),
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_tickerq_cron_due", "enabled", "next_fire_at"),
)

attempts = Table(
    "tickerq_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ticker_id", Uuid, ForeignKey("tickerq_tickers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("number", Integer, nullable=False),
    Column("node", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("elapsed_ms", Float, nullable=True),
    Column("error_type", String(200), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("traceback", Text, nullable=True),
    Column("result", NullableJSON, nullable=True),
    Index("ix_tickerq_attempts_ticker", "ticker_id", "number"),
)

nodes = Table(
    "tickerq_nodes",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_heartbeat", UTCDateTime, nullable=False),
    Column("version", String(32), nullable=False),
    Column("max_concurrency", Integer, nullable=False),
    Column("active", Integer, nullable=False, default=0),
    Column("functions", JSON, nullable=False),
)

pauses = Table(
    "tickerq_pauses",
    metadata,
    # A paused function's name, or ``*`` for the whole cluster.
    Column("function", String(200), primary_key=True),
    Column("paused_at", UTCDateTime, nullable=False),
    Column("paused_by", String(200), nullable=True),
)

rate_starts = Table(
    "tickerq_rate_starts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The rate limit (its name) and how many jobs one claim started under it when.
    Column("bucket", String(220), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("count", Integer, nullable=False),
    Index("ix_tickerq_rate_starts_bucket", "bucket", "started_at"),
)

key_leases = Table(
    "tickerq_key_leases",
    metadata,
    # Room a node holds under a function's per-key limit (PostgreSQL: see
    # tickerq.stores.sql.prepaid): up to ``room`` runs per key until ``until``.
    Column("function", String(200), primary_key=True),
    Column("node", String(200), primary_key=True),
    Column("room", Integer, nullable=False),
    Column("until", UTCDateTime, nullable=False),
)

tables = {
    t.name: t for t in (tickers, cron_tickers, attempts, nodes, pauses, rate_starts, key_leases)
}

_POSTGRESQL_INDEX_OPTIONS: dict[str, dict[str, Any]] = {
    "ix_tickerq_tickers_waiting": {"postgresql_where": text(WAITING_SQL["postgresql"])},
    "ix_tickerq_tickers_list": {"postgresql_include": ["status", "function", "parent_id"]},
    "ix_tickerq_tickers_finished": {
        "postgresql_include": ["status"],
        "postgresql_where": tickers.c.finished_at.is_not(None),
    },
    "uq_tickerq_tickers_unique": {"postgresql_where": text(UNIQUE_HELD_SQL)},
    "ix_tickerq_tickers_key_running": {"postgresql_where": text(KEYED_RUNNING_SQL)},
}
"""The indexes' PostgreSQL options (partial predicates, INCLUDE columns), by index."""


def add_postgresql_options() -> None:
    """Give the indexes their PostgreSQL options (:data:`_POSTGRESQL_INDEX_OPTIONS`).

    Called before a PostgreSQL database is used (``dialects.for_url``): setting a
    ``postgresql_*`` option loads SQLAlchemy's PostgreSQL dialect and its
    drivers' modules, which a SQLite process never needs. Idempotent.
    """
    for index in tickers.indexes:
        for key, value in _POSTGRESQL_INDEX_OPTIONS.get(index.name or "", {}).items():
            if index.dialect_kwargs.get(key) is not value:
                index.dialect_kwargs[key] = value


@compiles(CreateIndex, "sqlite")
def _sqlite_create_index(create: CreateIndex, compiler: Any, **kw: Any) -> str:
    """SQLite's CREATE INDEX takes no NULLS LAST (its DESC puts NULLs last anyway)."""
    sql: str = compiler.visit_create_index(create, **kw)
    name = create.element.name or ""
    return sql.replace(" NULLS LAST", "") if name.startswith("ix_tickerq_") else sql

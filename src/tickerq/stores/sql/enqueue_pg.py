"""One time ticker into PostgreSQL in one round trip.

``enqueue()`` of a single job is the call web apps make most. Through the
general path it costs a pool pre-ping, BEGIN, the INSERT, a separate
``pg_notify`` and COMMIT. Here it is one statement, its own transaction: the
INSERT and, in the same statement, the notice that wakes the other nodes (sent
only if the row went in, since ``pg_notify`` reads from the INSERT's RETURNING).
It runs on the pool's connection through the driver, without SQLAlchemy's
transaction handling; with asyncpg's statement cache (off in PgBouncer mode)
the statement is parsed once per connection.

A connection that died (server restart, idle timeout) is retried once on a
fresh connection. Ticker ids are made by the client, so the retry is safe even
when the first attempt's outcome is unknown: a duplicate id on the retry whose
stored row is this ticker means the first attempt went in.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from tickerq.enums import TickerKind
from tickerq.errors import DuplicateTickerError
from tickerq.models import TimeTicker
from tickerq.stores.sql.notify import CHANNEL

__all__ = ["PgEnqueue"]

logger = logging.getLogger(__name__)

_INSERT = f"""
INSERT INTO tickerq_tickers (
    id, kind, function, status, priority, execution_time, request, retries,
    retry_intervals, retry_count, timeout, description, run_condition,
    awaiting_parent, cancel_requested, created_at, updated_at)
VALUES ($1::uuid, '{TickerKind.TIME.value}', $2::text, $3::text, $4::int, $5::timestamptz,
    $6::json, $7::int, $8::json, $9::int, $10::float8, $11::text, $12::text,
    false, false, $13::timestamptz, $14::timestamptz)
"""

_INSERT_AND_NOTIFY = f"""
WITH ins AS ({_INSERT} RETURNING 1)
SELECT pg_notify('{CHANNEL}', $15::text) FROM ins
"""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (
        OSError,
        asyncpg.InterfaceError,  # "connection is closed"
        asyncpg.PostgresConnectionError,  # "connection was closed in the middle of operation"
        asyncpg.AdminShutdownError,  # the backend was terminated (restart, pg_terminate_backend)
    )


_CONNECTION_ERRORS = _connection_errors()

_STORED = "SELECT created_at, function FROM tickerq_tickers WHERE id = $1::uuid"


def _arguments(t: TimeTicker) -> list[Any]:
    intervals = list(t.retry_intervals) if t.retry_intervals is not None else None
    return [
        t.id,
        t.function,
        t.status.value,
        int(t.priority),
        t.execution_time,
        json.dumps(t.request),
        t.retries,
        json.dumps(intervals),
        t.retry_count,
        t.timeout,
        t.description,
        t.run_condition.value if t.run_condition else None,
        t.created_at,
        t.updated_at,
    ]


class PgEnqueue:
    """Inserts a ticker without a parent (and notifies other nodes) in one statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, t: TimeTicker) -> None:
        """Insert ``t``; DuplicateTickerError if its id is taken."""
        import asyncpg

        args = _arguments(t)
        if t.execution_time is not None:
            sql = _INSERT_AND_NOTIFY
            args.append(f"due {t.execution_time.isoformat()}")
        else:
            sql = _INSERT
        retried = False
        while True:
            raw = await self._engine.raw_connection()
            try:
                conn: Any = raw.driver_connection
                await conn.execute(sql, *args)
                return
            except asyncpg.UniqueViolationError:
                if retried and await self._landed(conn, t):
                    return  # the attempt that lost its connection went in
                raise DuplicateTickerError("time ticker", t.id) from None
            except _CONNECTION_ERRORS as exc:
                await greenlet_spawn(raw.invalidate, exc)
                if retried:
                    raise
                logger.info(
                    "enqueue: connection lost (%s: %s); retrying once on a new connection",
                    type(exc).__name__,
                    exc,
                    extra={"action": "enqueue_retry"},
                )
                retried = True
            finally:
                await greenlet_spawn(raw.close)

    @staticmethod
    async def _landed(conn: Any, t: TimeTicker) -> bool:
        row = await conn.fetchrow(_STORED, t.id)
        return (
            row is not None
            and row["created_at"] == t.created_at
            and (row["function"] == t.function)
        )

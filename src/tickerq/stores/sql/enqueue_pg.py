"""Time tickers into PostgreSQL in one round trip, many enqueues per statement.

``enqueue()`` of a single job is the call web apps make most. Through the
general path it costs a pool pre-ping, BEGIN, the INSERT, a separate
``pg_notify`` and COMMIT. Here it is one statement, its own transaction: the
INSERT and, in the same statement, the notice that wakes the other nodes (sent
only if a row went in). It runs on the pool's connection through the driver,
without SQLAlchemy's transaction handling; with asyncpg's statement cache (off
in PgBouncer mode) the statement is parsed once per connection.

Enqueues that arrive while a statement is out (concurrent requests of a web
app) wait for it and then go together, as rows of the next statement: one
commit, and its flush to disk, for all of them (group commit), so a node's
small connection budget does not cap how many enqueues per second it makes.
Each call returns once its own row is committed; a taken id fails its own
call only (``ON CONFLICT (id) DO NOTHING``: the rows that went in are named by
the statement's result).

A loop of enqueues (a script or a handler adding jobs one by one) keeps the
pool's connection from one statement to the next instead of checking it out
for each, for at most :data:`HOLD` seconds at a time: then it hands the
connection back, so the node's claims and reads that wait for it go first.

A connection that died (server restart, idle timeout) is retried once on a
fresh connection. Ticker ids are made by the client, so the retry is safe even
when the first attempt's outcome is unknown: a row missing from the retry's
result whose stored row is this ticker went in with the first attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from tickerq.enums import TickerKind
from tickerq.errors import DuplicateTickerError
from tickerq.models import TimeTicker
from tickerq.notices import WorkDue, encode
from tickerq.stores.sql.notify import CHANNEL

__all__ = ["PgEnqueue"]

logger = logging.getLogger(__name__)

_COLUMNS = """
    id, kind, function, status, priority, execution_time, request, retries,
    retry_intervals, retry_count, timeout, description, run_condition,
    awaiting_parent, cancel_requested, created_at, updated_at, headers, concurrency_key"""

_INSERT_AND_NOTIFY = f"""
WITH ins AS (
    INSERT INTO tickerq_tickers ({_COLUMNS})
    SELECT id, '{TickerKind.TIME.value}', function, status, priority, execution_time,
        request, retries, retry_intervals, retry_count, timeout, description, run_condition,
        false, false, created_at, updated_at, headers, concurrency_key
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[],
        $6::json[], $7::int[], $8::json[], $9::int[], $10::float8[], $11::text[], $12::text[],
        $13::timestamptz[], $14::timestamptz[], $16::json[], $17::text[])
        AS r(id, function, status, priority, execution_time, request, retries,
             retry_intervals, retry_count, timeout, description, run_condition,
             created_at, updated_at, headers, concurrency_key)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), notice AS (
    SELECT pg_notify('{CHANNEL}', $15::text) FROM (SELECT 1 FROM ins LIMIT 1) AS any_row
    WHERE $15::text IS NOT NULL
)
SELECT id, (SELECT count(*) FROM notice) AS notified FROM ins
"""

_INSERT_ONE_AND_NOTIFY = f"""
WITH ins AS (
    INSERT INTO tickerq_tickers ({_COLUMNS})
    VALUES ($1::uuid, '{TickerKind.TIME.value}', $2::text, $3::text, $4::int, $5::timestamptz,
        $6::json, $7::int, $8::json, $9::int, $10::float8, $11::text, $12::text,
        false, false, $13::timestamptz, $14::timestamptz, $16::json, $17::text)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), notice AS (
    SELECT pg_notify('{CHANNEL}', $15::text) FROM ins WHERE $15::text IS NOT NULL
)
SELECT id, (SELECT count(*) FROM notice) AS notified FROM ins
"""
"""The same for one ticker: scalar parameters cost less to encode than arrays of one."""

BATCH = 500
"""Most enqueues sent in one statement."""

HOLD = 0.002
"""Seconds the sender keeps the pool's connection across statements before it hands
it back for a turn (others of the node, claims and reads, may be waiting for it)."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (
        OSError,
        asyncpg.InterfaceError,  # "connection is closed"
        asyncpg.PostgresConnectionError,  # "connection was closed in the middle of operation"
        asyncpg.AdminShutdownError,  # the backend was terminated (restart, pg_terminate_backend)
    )


_STORED = "SELECT created_at, function FROM tickerq_tickers WHERE id = $1::uuid"


def _arguments_one(t: TimeTicker) -> list[Any]:
    """:data:`_INSERT_ONE_AND_NOTIFY`'s parameters."""
    due = t.execution_time
    intervals = t.retry_intervals
    return [
        t.id,
        t.function,
        t.status.value,
        int(t.priority),
        due,
        json.dumps(t.request),
        t.retries,
        json.dumps(list(intervals) if intervals is not None else None),
        t.retry_count,
        t.timeout,
        t.description,
        t.run_condition.value if t.run_condition else None,
        t.created_at,
        t.updated_at,
        None if due is None else encode(WorkDue(due)),
        json.dumps(t.headers) if t.headers else None,
        t.concurrency_key,
    ]


def _arguments(batch: Sequence[TimeTicker]) -> list[Any]:
    """The statement's arrays (one element per ticker) and the notice's payload."""
    due = [t.execution_time for t in batch if t.execution_time is not None]
    return [
        [t.id for t in batch],
        [t.function for t in batch],
        [t.status.value for t in batch],
        [int(t.priority) for t in batch],
        [t.execution_time for t in batch],
        [json.dumps(t.request) for t in batch],
        [t.retries for t in batch],
        [
            json.dumps(list(t.retry_intervals) if t.retry_intervals is not None else None)
            for t in batch
        ],
        [t.retry_count for t in batch],
        [t.timeout for t in batch],
        [t.description for t in batch],
        [t.run_condition.value if t.run_condition else None for t in batch],
        [t.created_at for t in batch],
        [t.updated_at for t in batch],
        encode(WorkDue(min(due))) if due else None,
        [json.dumps(t.headers) if t.headers else None for t in batch],
        [t.concurrency_key for t in batch],
    ]


class PgEnqueue:
    """Inserts tickers without a parent (and notifies other nodes), batching the
    enqueues that wait for the same connection into one statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection_errors = _connection_errors()  # asyncpg is imported on PostgreSQL only
        self._pending: list[tuple[TimeTicker, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._raw: Any = None
        """The pool's connection the sender holds while enqueues keep coming."""
        self._held_since = 0.0

    async def add(self, t: TimeTicker) -> None:
        """Insert ``t`` (returns once it is committed); DuplicateTickerError if its
        id is taken."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((t, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending())
        await done

    async def close(self) -> None:
        """Let the enqueues under way finish (their callers wait for them), so the
        connection the sender holds goes back to the pool before it is disposed."""
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.gather(sender, return_exceptions=True)

    async def _send_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._pending:
                    # A caller the last statement resumed may enqueue again as soon as
                    # it runs: let it, and keep the connection for it (a loop of
                    # enqueues then costs no pool checkout or task per call).
                    await asyncio.sleep(0)
                    if not self._pending:
                        return
                if self._raw is not None and loop.time() - self._held_since > HOLD:
                    await self._release()
                    await asyncio.sleep(0)  # whoever waits for the connection takes it now
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    await self._send_or_split(batch)
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        for _, done in self._pending:
                            done.cancel()
                        self._pending = []
                        raise
        finally:
            await self._release()

    async def _release(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            await greenlet_spawn(raw.close)

    async def _send_or_split(self, batch: list[tuple[TimeTicker, asyncio.Future[None]]]) -> None:
        """Send ``batch``; if the database refuses a row (not a taken id), halve the
        batch until the refused row fails its own enqueue alone."""
        try:
            await self._send(batch)
        except self._connection_errors:
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            half = len(batch) // 2
            await self._send_or_split(batch[:half])
            await self._send_or_split(batch[half:])

    async def _send(self, batch: list[tuple[TimeTicker, asyncio.Future[None]]]) -> None:
        if len(batch) == 1:
            statement, args = _INSERT_ONE_AND_NOTIFY, _arguments_one(batch[0][0])
        else:
            statement, args = _INSERT_AND_NOTIFY, _arguments([t for t, _ in batch])
        retried = False
        while True:
            raw = self._raw
            if raw is None:
                raw = self._raw = await self._engine.raw_connection()
                self._held_since = asyncio.get_running_loop().time()
            try:
                conn: Any = raw.driver_connection
                stored = {r["id"] for r in await conn.fetch(statement, *args)}
                for t, done in batch:
                    if done.done():
                        continue
                    if t.id in stored:
                        stored.discard(t.id)  # a second ticker of the same id is a duplicate
                        done.set_result(None)
                    elif retried and await self._landed(conn, t):
                        done.set_result(None)  # the attempt that lost its connection went in
                    else:
                        done.set_exception(DuplicateTickerError("time ticker", t.id))
                return
            except self._connection_errors as exc:
                self._raw = None
                try:
                    await greenlet_spawn(raw.invalidate, exc)
                finally:
                    await greenlet_spawn(raw.close)
                if retried:
                    raise
                logger.info(
                    "enqueue: connection lost (%s: %s); retrying once on a new connection",
                    type(exc).__name__,
                    exc,
                    extra={"action": "enqueue_retry"},
                )
                retried = True

    @staticmethod
    async def _landed(conn: Any, t: TimeTicker) -> bool:
        row = await conn.fetchrow(_STORED, t.id)
        return (
            row is not None
            and row["created_at"] == t.created_at
            and (row["function"] == t.function)
        )

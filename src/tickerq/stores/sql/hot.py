"""The worker's hot path on PostgreSQL: results in, next jobs out, one statement.

A worker that runs short jobs spends most of its time telling the database
that jobs ended and asking for the next ones. Here both are one statement,
sent on a connection of its own (no pool checkout, no BEGIN/COMMIT: a single
statement is its own transaction), prepared once by asyncpg:

* ``fin`` unnests the batch of results sent as arrays (a job's return value as
  JSON text, NULL when it is None);
* ``done`` ends (or re-schedules) the rows this node still holds, except the
  final results of rows with chain children (``left_over``: the store writes
  them through its general path, which resolves the children);
* ``att`` records one attempt per row ``done`` changed, so a row taken over
  after its lease ran out gets no second record of the same run;
* ``slot_picked`` locks the best due rows with ``FOR UPDATE SKIP LOCKED`` up
  to the free slots, ``long_picked`` the due LONG_RUNNING ones (they run
  outside the slots); ``claimed`` starts them, and ``kids`` starts their
  IN_PROGRESS chain children;
* ``notice`` sends the node's paced notice that rows changed (``pg_notify``,
  when the store passes one and something was ended or claimed): no round
  trip of its own.

The store falls back to its general path (SQLAlchemy, one transaction, several
statements) for cluster-wide concurrency limits and for results of chain
parents, whose children need resolving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status
from tickerq.models import CLUSTER
from tickerq.stores.base import Job, Outcome
from tickerq.stores.sql.notify import CHANNEL
from tickerq.stores.sql.rows import JOB_COLUMN_NAMES, Decode, job_from_row
from tickerq.stores.sql.schema import WAITING_SQL

__all__ = ["HotPath"]

logger = logging.getLogger(__name__)

_WAITING = WAITING_SQL["postgresql"]


def _due(priority: Priority) -> str:
    """The due rows of one priority this node may run, oldest first, locked.

    One bounded range of the waiting index: the claim's cost is the rows it
    takes (plus due rows of functions this node lacks), not the table's size.
    Functions paused when the statement starts are left out, whatever the
    engine last read of the pauses (two one-time subqueries of a tiny table).
    """
    return f"""SELECT id FROM (
        SELECT id FROM tickerq_tickers
        WHERE {_WAITING} AND priority = {int(priority)}
          AND execution_time <= $16 AND function = ANY($17::text[])
          AND function <> ALL(ARRAY(SELECT function FROM tickerq_pauses))
          AND NOT EXISTS (SELECT 1 FROM tickerq_pauses WHERE function = '{CLUSTER}')
        ORDER BY execution_time
        LIMIT {{limit}}
        FOR UPDATE SKIP LOCKED
    ) AS p{int(priority)}"""


_SLOT_PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)

_FINISH_AND_CLAIM = f"""
WITH fin AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
        $6::timestamptz[], $7::timestamptz[], $8::int[], $9::int[], $10::text[],
        $11::float8[], $12::text[], $13::text[], $14::text[], $21::int[], $23::json[]
    ) AS f(id, status, attempt_status, started_at, finished_at, final_at, retry_at,
           increment, number, skipped_reason, elapsed, error_type, error_message, traceback,
           claim, result)
), done AS (
    UPDATE tickerq_tickers t SET
        status = f.status,
        execution_time = coalesce(f.retry_at, t.execution_time),
        retry_count = t.retry_count + f.increment,
        finished_at = f.final_at,
        skipped_reason = f.skipped_reason,
        elapsed_ms = f.elapsed,
        error_type = f.error_type,
        error_message = f.error_message,
        result = f.result,
        lock_holder = NULL, locked_at = NULL, lease_until = NULL,
        cancel_requested = false,
        updated_at = f.finished_at
    FROM fin f
    WHERE t.id = ANY($1::uuid[]) AND t.id = f.id AND t.lock_holder = $15
      AND t.claims = f.claim AND NOT (t.has_children AND f.final_at IS NOT NULL)
    RETURNING t.id, t.kind
), left_over AS (
    SELECT coalesce(array_agg(f.id), '{{}}') AS ids FROM fin f
    WHERE f.final_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM done d WHERE d.id = f.id)
), att AS (
    INSERT INTO tickerq_attempts (ticker_id, kind, number, node, status, started_at,
        finished_at, elapsed_ms, error_type, error_message, traceback, result)
    SELECT d.id, d.kind, f.number, $15, f.attempt_status, f.started_at, f.finished_at,
        f.elapsed, f.error_type, f.error_message, f.traceback, f.result
    FROM done d JOIN fin f ON f.id = d.id
), long_picked AS (
    {_due(Priority.LONG_RUNNING).format(limit="$18")}
), slot_picked AS (
    {" UNION ALL ".join(_due(p).format(limit="$19") for p in _SLOT_PRIORITIES)}
    LIMIT $19
), claimed AS (
    UPDATE tickerq_tickers t SET
        status = '{Status.IN_PROGRESS.value}', lock_holder = $15, locked_at = $16,
        lease_until = $20, executed_at = $16, updated_at = $16, claims = t.claims + 1
    WHERE t.id = ANY(ARRAY(SELECT id FROM long_picked UNION ALL SELECT id FROM slot_picked))
    RETURNING {", ".join(f"t.{name}" for name in JOB_COLUMN_NAMES)}
), kids AS (
    UPDATE tickerq_tickers c SET
        awaiting_parent = false,
        execution_time = greatest(c.execution_time, $16),
        updated_at = $16
    WHERE EXISTS (SELECT 1 FROM claimed WHERE has_children)
      AND c.parent_id = ANY(ARRAY(SELECT id FROM claimed WHERE has_children))
      AND c.awaiting_parent AND c.status = '{Status.IDLE.value}'
      AND c.run_condition = '{RunCondition.IN_PROGRESS.value}'
), notice AS (
    SELECT pg_notify('{CHANNEL}', $22::text)
    WHERE $22::text IS NOT NULL
      AND (EXISTS (SELECT 1 FROM done) OR EXISTS (SELECT 1 FROM claimed))
)
SELECT l.ids AS left_over, (SELECT count(*) FROM notice) AS notified, c.*
FROM left_over l LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.execution_time
"""


class HotPath:
    """A dedicated asyncpg connection for the finish-and-claim statement.

    Connected lazily; dropped on any error (the engine retries, and the next
    call connects again), so an outage costs nothing here but failed calls.
    """

    def __init__(self, url: str, *, pgbouncer: bool = False) -> None:
        self.url = url
        self.pgbouncer = pgbouncer
        """PgBouncer mode: no server settings, no prepared statement kept."""
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def finish_and_claim(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        long_limit: int,
        functions: Collection[str],
        finished: Sequence[Outcome],
        notice: str | None = None,
    ) -> tuple[list[Job], set[UUID], bool]:
        """Write ``finished`` and claim up to ``slots`` due rows, plus up to
        ``long_limit`` LONG_RUNNING ones; send the ``notice`` payload if a row
        was ended or claimed.

        Returns the claimed jobs, the ids of the final results left over: not
        written because their row has chain children (added while it ran, after
        the claim, so the caller did not know) or is no longer this node's (the
        caller writes those through the general path, which resolves the
        children in the same transaction, or changes nothing), and whether the
        notice was sent.
        """
        done = sorted(finished, key=lambda o: o.job.id)
        args = (
            [o.job.id for o in done],
            [o.status.value for o in done],
            [o.attempt_status.value for o in done],
            [o.started_at for o in done],
            [o.finished_at for o in done],
            [o.final_at for o in done],
            [o.next_run_at for o in done],
            [o.retry_increment for o in done],
            [o.job.retry_count for o in done],
            [o.skipped_reason for o in done],
            [o.elapsed_ms for o in done],
            [o.error_type for o in done],
            [o.error_message for o in done],
            [o.traceback for o in done],
            node,
            now,
            list(functions),
            max(long_limit, 0),
            max(slots, 0),
            lease_until,
            [o.claim for o in done],
            notice,
            # JSON text; NULL (no encoding) for the usual None of a failure or a job
            # that returns nothing
            [None if o.result is None else json.dumps(o.result) for o in done],
        )
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                records = await self._conn.fetch(_FINISH_AND_CLAIM, *args)
            except BaseException:
                await self._drop()
                raise
        first = records[0]
        jobs = [job_from_row(r, _DECODE) for r in records if r["id"] is not None]
        return jobs, set(first["left_over"]), bool(first["notified"])

    async def _connect(self) -> Any:
        import asyncpg

        if self.pgbouncer:
            # Through PgBouncer (transaction mode) the server connection changes
            # between statements: nothing may live in the session, neither a
            # setting nor a named prepared statement, so the statement is parsed
            # and planned on each call.
            return await asyncpg.connect(self.url, timeout=10, statement_cache_size=0)
        # One plan for the statement, made once: PostgreSQL would otherwise plan
        # this many-CTE statement on every call (its custom plans looked no
        # worse), which costs more than running it. That plan lives as long as
        # the connection, made from the statistics of the moment: a node that
        # started on an empty table got sequential scans (cheapest for a few
        # rows), then paid for every row the table gained. No sequential scan
        # here: every row the statement touches is found by an index (ids, the
        # waiting index, parents), whatever the table held when it was planned.
        # No JIT: its compile time is wasted on a statement that reads a few
        # index entries (the generic plan cannot see the LIMIT).
        return await asyncpg.connect(
            self.url,
            timeout=10,
            server_settings={
                "plan_cache_mode": "force_generic_plan",
                "jit": "off",
                "enable_seqscan": "off",
            },
        )

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (Exception, asyncio.CancelledError):
                conn.terminate()


def _json_text(value: Any) -> Any:
    """asyncpg hands JSON columns over as text (no codec is set on the connection)."""
    return json.loads(value) if isinstance(value, str) else value


_DECODE = Decode(json=_json_text)

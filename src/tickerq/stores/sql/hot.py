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
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status
from tickerq.models import CLUSTER
from tickerq.stores.base import Job, Outcome
from tickerq.stores.sql.notify import CHANNEL
from tickerq.stores.sql.rows import JOB_COLUMN_NAMES, Admit, Decode, job_from_row
from tickerq.stores.sql.schema import KEYED_RUNNING_SQL, WAITING_SQL

__all__ = ["HotPath"]

logger = logging.getLogger(__name__)

_WAITING = WAITING_SQL["postgresql"]


def _due(priority: Priority, *, gated: bool = False) -> str:
    """The due rows of one priority this node may run, oldest first, locked.

    One bounded range of the waiting index: the claim's cost is the rows it
    takes (plus due rows of functions this node lacks), not the table's size.
    Functions paused when the statement starts are left out, whatever the
    engine last read of the pauses (two one-time subqueries of a tiny table).
    ``gated``: the rows of keys at their per-key limit (``saturated``) are left
    out too, so one busy key's backlog does not stand in front of the others;
    the columns the gate decides on come along.
    """
    columns = "id, function, concurrency_key, priority, execution_time" if gated else "id"
    saturated = (
        """
          AND (concurrency_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM saturated s
              WHERE s.function = tickerq_tickers.function
                AND s.key = tickerq_tickers.concurrency_key))"""
        if gated
        else ""
    )
    return f"""SELECT {columns} FROM (
        SELECT {columns} FROM tickerq_tickers
        WHERE {_WAITING} AND priority = {int(priority)}
          AND execution_time <= $16 AND function = ANY($17::text[])
          AND function <> ALL(ARRAY(SELECT function FROM tickerq_pauses))
          AND NOT EXISTS (SELECT 1 FROM tickerq_pauses WHERE function = '{CLUSTER}'){saturated}
        ORDER BY execution_time
        LIMIT {{limit}}
        FOR UPDATE SKIP LOCKED
    ) AS p{int(priority)}"""


_SLOT_PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)

_FINISH = """fin AS (
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
    SELECT coalesce(array_agg(f.id), '{}') AS ids FROM fin f
    WHERE f.final_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM done d WHERE d.id = f.id)
), att AS (
    INSERT INTO tickerq_attempts (ticker_id, kind, number, node, status, started_at,
        finished_at, elapsed_ms, error_type, error_message, traceback, result)
    SELECT d.id, d.kind, f.number, $15, f.attempt_status, f.started_at, f.finished_at,
        f.elapsed, f.error_type, f.error_message, f.traceback, f.result
    FROM done d JOIN fin f ON f.id = d.id
"""
"""The results in: ``fin``, ``done``, ``left_over``, ``att`` (see the module)."""

_KIDS = f"""kids AS (
    UPDATE tickerq_tickers c SET
        awaiting_parent = false,
        execution_time = greatest(c.execution_time, {{now}}),
        updated_at = {{now}}
    WHERE EXISTS (SELECT 1 FROM claimed WHERE has_children)
      AND c.parent_id = ANY(ARRAY(SELECT id FROM claimed WHERE has_children))
      AND c.awaiting_parent AND c.status = '{Status.IDLE.value}'
      AND c.run_condition = '{RunCondition.IN_PROGRESS.value}'"""
"""The IN_PROGRESS chain children of the ``claimed`` rows start with them."""

_FINISH_AND_CLAIM = f"""
WITH {_FINISH}), long_picked AS (
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
), {_KIDS.format(now="$16")}
), notice AS (
    SELECT pg_notify('{CHANNEL}', $22::text)
    WHERE $22::text IS NOT NULL
      AND (EXISTS (SELECT 1 FROM done) OR EXISTS (SELECT 1 FROM claimed))
)
SELECT l.ids AS left_over, (SELECT count(*) FROM notice) AS notified, c.*
FROM left_over l LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.execution_time
"""


# A gated claim, step 1 (after the claim's advisory locks): the results in, what
# the limits count (the running rows of each key, results just written aside;
# the starts within each rate limit's window) and the due rows, locked but not
# started: the store's gate admits some of them (see :mod:`tickerq.limits`).
_FINISH_AND_PICK = f"""
WITH {_FINISH}), running AS (
    SELECT function, concurrency_key AS key, count(*) AS n FROM tickerq_tickers
    WHERE {KEYED_RUNNING_SQL} AND function = ANY($20::text[]) AND id <> ALL($1::uuid[])
    GROUP BY function, concurrency_key
), saturated AS (
    SELECT r.function, r.key FROM running r
    JOIN unnest($20::text[], $22::int[]) AS u(function, most) ON u.function = r.function
    WHERE r.n >= u.most
), used AS (
    SELECT s.bucket, s.started_at, s.count
    FROM unnest($24::text[], $25::timestamptz[]) AS b(bucket, oldest)
    JOIN tickerq_rate_starts s ON s.bucket = b.bucket AND s.started_at > b.oldest
), long_picked AS (
    {_due(Priority.LONG_RUNNING, gated=True).format(limit="$18")}
), slot_picked AS (
    {" UNION ALL ".join(_due(p, gated=True).format(limit="$19") for p in _SLOT_PRIORITIES)}
    LIMIT $19
), picked AS (
    SELECT * FROM long_picked UNION ALL SELECT * FROM slot_picked
)
SELECT l.ids AS left_over, (SELECT count(*) FROM done) AS ended,
    ARRAY(SELECT function FROM running) AS running_functions,
    ARRAY(SELECT key FROM running) AS running_keys,
    ARRAY(SELECT n FROM running) AS running_counts,
    ARRAY(SELECT bucket FROM used) AS start_buckets,
    ARRAY(SELECT started_at FROM used) AS start_times,
    ARRAY(SELECT count FROM used) AS start_counts,
    p.*
FROM left_over l LEFT JOIN picked p ON true
"""

# Step 2: start the rows the gate admitted, store the starts it counted, drop the
# starts no window needs (at most once a second), send the notice; COMMIT follows.
_START_ADMITTED = f"""
WITH claimed AS (
    UPDATE tickerq_tickers t SET
        status = '{Status.IN_PROGRESS.value}', lock_holder = $1, locked_at = $2,
        lease_until = $3, executed_at = $2, updated_at = $2, claims = t.claims + 1
    WHERE t.id = ANY($4::uuid[])
    RETURNING {", ".join(f"t.{name}" for name in JOB_COLUMN_NAMES)}
), {_KIDS.format(now="$2")}
), starts AS (
    INSERT INTO tickerq_rate_starts (bucket, started_at, count)
    SELECT x.bucket, $2, x.n FROM unnest($5::text[], $6::int[]) AS x(bucket, n)
), pruned AS (
    DELETE FROM tickerq_rate_starts s
    USING unnest($7::text[], $8::timestamptz[]) AS x(bucket, cutoff)
    WHERE s.bucket = x.bucket AND s.started_at <= x.cutoff
), notice AS (
    SELECT pg_notify('{CHANNEL}', $9::text)
    WHERE $9::text IS NOT NULL AND ($10::bool OR EXISTS (SELECT 1 FROM claimed))
)
SELECT (SELECT count(*) FROM notice) AS notified, c.*
FROM (SELECT 1) AS one LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.execution_time
"""


def _arguments(
    finished: Sequence[Outcome],
    *,
    node: str,
    now: datetime,
    functions: Collection[str],
    long_limit: int,
    slots: int,
    arg20: Any,
    arg22: Any,
) -> list[Any]:
    """The 23 arguments of the statements that start with :data:`_FINISH`; $20
    and $22 are the lease end and the notice for a claim, the keyed functions and
    their max_per_key for a gated pick."""
    done = sorted(finished, key=lambda o: o.job.id)
    return [
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
        arg20,
        [o.claim for o in done],
        arg22,
        # JSON text; NULL (no encoding) for the usual None of a failure or a job
        # that returns nothing
        [None if o.result is None else json.dumps(o.result) for o in done],
    ]


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
        args = _arguments(
            finished, node=node, now=now, functions=functions,
            long_limit=long_limit, slots=slots, arg20=lease_until, arg22=notice,
        )  # fmt: skip
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

    async def finish_and_claim_gated(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        long_limit: int,
        functions: Collection[str],
        finished: Sequence[Outcome],
        notice: str | None,
        locks: Collection[int],
        per_key: Mapping[str, int],
        windows: Mapping[str, datetime],
        admit: Admit,
    ) -> tuple[list[Job], set[UUID], bool]:
        """:meth:`finish_and_claim` under cluster-wide limits, in one transaction
        of four round trips: ``BEGIN`` with the advisory ``locks`` (one order on
        every node: two nodes cannot count the same room); the results in and the
        due rows picked (locked), with what the limits count: the running rows of
        each key of the ``per_key`` functions (keys at their limit left out of
        the pick) and the starts after each bucket's ``windows`` time; ``admit``
        (the store's gate) chooses among the picked rows; the admitted ones start
        and their starts are stored; ``COMMIT``. What the lock statement reads
        comes after the locks, so it sees every claim that held them before.
        """
        keyed = sorted(per_key)
        buckets = sorted(windows)
        args = _arguments(
            finished, node=node, now=now, functions=functions, long_limit=long_limit,
            slots=slots, arg20=keyed, arg22=[per_key[f] for f in keyed],
        )  # fmt: skip
        args += [buckets, [windows[b] for b in buckets]]
        lock = "BEGIN; " + " ".join(
            f"SELECT pg_advisory_xact_lock({int(k)});" for k in sorted(set(locks))
        )
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                conn = self._conn
                await conn.execute(lock)
                records = await conn.fetch(_FINISH_AND_PICK, *args)
                first = records[0]
                picked = [r for r in records if r["id"] is not None]
                starts = zip(
                    first["start_buckets"], first["start_times"], first["start_counts"],
                    strict=True,
                )  # fmt: skip
                running = zip(
                    first["running_functions"], first["running_keys"], first["running_counts"],
                    strict=True,
                )  # fmt: skip
                admitted, taken, prune = admit(
                    picked, list(starts), {(f, k): int(n) for f, k, n in running}
                )
                started = await conn.fetch(
                    _START_ADMITTED,
                    node, now, lease_until, admitted, list(taken), list(taken.values()),
                    list(prune), list(prune.values()), notice, bool(first["ended"]),
                )  # fmt: skip
                await conn.execute("COMMIT")
            except BaseException:
                await self._drop()  # the server rolls the transaction back
                raise
        jobs = [job_from_row(r, _DECODE) for r in started if r["id"] is not None]
        return jobs, set(first["left_over"]), bool(started[0]["notified"])

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

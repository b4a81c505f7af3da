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
from tickerq.stores.sql.gating import GatedClaim
from tickerq.stores.sql.notify import CHANNEL
from tickerq.stores.sql.rows import JOB_COLUMN_NAMES, Decode, job_from_row
from tickerq.stores.sql.schema import KEYED_RUNNING_SQL, WAITING_SQL

__all__ = ["HotPath"]

logger = logging.getLogger(__name__)

_WAITING = WAITING_SQL["postgresql"]


def _due(priority: Priority, *, gated: bool = False, keyed: bool = False) -> str:
    """The due rows of one priority this node may run, oldest first, locked.

    One bounded range of the waiting index: the claim's cost is the rows it
    takes (plus due rows of functions this node lacks), not the table's size.
    Functions paused when the statement starts are left out, whatever the
    engine last read of the pauses (two one-time subqueries of a tiny table).
    ``gated``: the columns the gate decides on come along; ``keyed``: the rows of
    keys at their per-key limit (``saturated``) are left out too, so one busy
    key's backlog does not stand in front of the others.
    """
    columns = "id, function, concurrency_key, priority, execution_time" if gated else "id"
    saturated = (
        """
          AND (concurrency_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM saturated s
              WHERE s.function = tickerq_tickers.function
                AND s.key = tickerq_tickers.concurrency_key))"""
        if keyed
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
      AND ($24::timestamptz IS NULL OR statement_timestamp() <= $24::timestamptz)
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


# A claim under cluster-wide limits, sent after the claim's advisory locks (so
# its snapshot holds every claim that held them before): the results in; what
# the limits count (the running rows of each key, the results just written
# aside; the starts within each rate limit's window); the due rows, locked, the
# keys at their limit left out (``picked``, best first); the rows past a key's
# room (``over_key``), then past a rate limit's room (``over_rate``); the others
# start, with their chain children, and their starts are stored, added to their
# slot's row ($33: each bucket's slot, see RateLimit.stored_at); old starts go.
# Built for the limits a claim has (per-key, rate or both): each part a plan
# carries costs time on every call, used or not.
def _gated_sql(*, keys: bool, rates: bool) -> str:
    """The gated claim statement with the parts of per-key limits (``keys``) and
    of rate limits (``rates``); the same parameters and columns either way."""
    parts = [f"WITH {_FINISH})"]
    if keys:
        # A key counts its running rows, plus the room other nodes' leases have
        # not used on it (``spare``: the whole room, on a key with nothing running).
        parts.append(f"""running_on AS (
    SELECT function, concurrency_key AS key, lock_holder AS node, count(*) AS n
    FROM tickerq_tickers
    WHERE {KEYED_RUNNING_SQL} AND function = ANY($24::text[]) AND id <> ALL($1::uuid[])
    GROUP BY function, concurrency_key, lock_holder
), leased AS (
    SELECT function, node, room FROM tickerq_key_leases
    WHERE function = ANY($24::text[]) AND node <> $15 AND until > $16
), spare AS (
    SELECT function, sum(room) AS n FROM leased GROUP BY function
), running AS (
    SELECT k.function, k.key, sum(k.n) + coalesce(max(s.n), 0) - coalesce((
        SELECT sum(least(o.n, l.room)) FROM running_on o
        JOIN leased l ON l.function = o.function AND l.node = o.node
        WHERE o.function = k.function AND o.key = k.key
    ), 0) AS n
    FROM running_on k LEFT JOIN spare s ON s.function = k.function
    GROUP BY k.function, k.key
), saturated AS (
    SELECT r.function, r.key FROM running r
    JOIN unnest($24::text[], $25::int[]) AS u(function, most) ON u.function = r.function
    WHERE r.n >= u.most
)""")
    if rates:
        parts.append("""used AS (
    SELECT b.bucket, b.oldest, b.most, (
        SELECT coalesce(sum(s.count), 0) FROM tickerq_rate_starts s
        WHERE s.bucket = b.bucket AND s.started_at > b.oldest
    ) - (
        SELECT coalesce(sum(r.n), 0)
        FROM unnest($39::text[], $40::timestamptz[], $41::int[]) AS r(bucket, at, n)
        WHERE r.bucket = b.bucket AND r.at > b.oldest
    ) AS n
    FROM unnest($26::text[], $27::timestamptz[], $28::int[]) AS b(bucket, oldest, most)
)""")
    due = {"gated": True, "keyed": keys}
    slot_picks = " UNION ALL ".join(_due(p, **due).format(limit="$19") for p in _SLOT_PRIORITIES)
    parts.append(f"""long_picked AS (
    {_due(Priority.LONG_RUNNING, **due).format(limit="$18")}
), slot_picked AS (
    {slot_picks}
    LIMIT $19
), picked AS (
    SELECT p.*, row_number() OVER (ORDER BY p.priority DESC, p.execution_time) AS pos
    FROM (SELECT * FROM long_picked UNION ALL SELECT * FROM slot_picked) AS p
)""")
    held_back = []
    if keys:
        held_back.append("over_key")
        parts.append("""over_key AS (
    SELECT k.id FROM (
        SELECT p.id, u.most, coalesce(r.n, s.n, 0)
            + row_number() OVER (PARTITION BY p.function, p.concurrency_key ORDER BY p.pos) AS nth
        FROM picked p
        JOIN unnest($24::text[], $25::int[]) AS u(function, most) ON u.function = p.function
        LEFT JOIN running r ON r.function = p.function AND r.key = p.concurrency_key
        LEFT JOIN spare s ON s.function = p.function
        WHERE p.concurrency_key IS NOT NULL
    ) AS k WHERE k.nth > k.most
)""")
    if rates:
        held_back.append("over_rate")
        not_over_key = "\n        WHERE NOT EXISTS (SELECT 1 FROM over_key o WHERE o.id = p.id)"
        parts.append(f"""over_rate AS (
    SELECT q.id FROM (
        SELECT p.id, u.most - u.n AS room,
            row_number() OVER (PARTITION BY m.bucket ORDER BY p.pos) AS nth
        FROM picked p
        JOIN unnest($29::text[], $30::text[]) AS m(function, bucket) ON m.function = p.function
        JOIN used u ON u.bucket = m.bucket{not_over_key if keys else ""}
    ) AS q WHERE q.nth > q.room
)""")
    starting = "SELECT id FROM picked" + "".join(f" EXCEPT SELECT id FROM {c}" for c in held_back)
    parts.append(f"""claimed AS (
    UPDATE tickerq_tickers t SET
        status = '{Status.IN_PROGRESS.value}', lock_holder = $15, locked_at = $16,
        lease_until = $20, executed_at = $16, updated_at = $16, claims = t.claims + 1
    WHERE t.id = ANY(ARRAY({starting}))
    RETURNING {", ".join(f"t.{name}" for name in JOB_COLUMN_NAMES)}
), {_KIDS.format(now="$16")}
)""")
    if rates:
        parts.append("""taken AS (
    SELECT m.bucket, count(*) AS n FROM claimed c
    JOIN unnest($29::text[], $30::text[]) AS m(function, bucket) ON m.function = c.function
    GROUP BY m.bucket
), slotted AS (
    SELECT t.bucket, x.at, t.n FROM taken t
    JOIN unnest($26::text[], $33::timestamptz[]) AS x(bucket, at) ON x.bucket = t.bucket
), bumped AS (
    UPDATE tickerq_rate_starts s SET count = s.count + x.n
    FROM slotted x WHERE s.bucket = x.bucket AND s.started_at = x.at
    RETURNING s.bucket
), starts AS (
    INSERT INTO tickerq_rate_starts (bucket, started_at, count)
    SELECT bucket, at, n FROM slotted WHERE bucket NOT IN (SELECT bucket FROM bumped)
), pruned AS (
    DELETE FROM tickerq_rate_starts s
    USING unnest($31::text[], $32::timestamptz[]) AS x(bucket, cutoff)
    WHERE s.bucket = x.bucket AND s.started_at <= x.cutoff
), filled AS (
    SELECT u.bucket, u.oldest FROM used u LEFT JOIN taken t ON t.bucket = u.bucket
    WHERE u.n + coalesce(t.n, 0) >= u.most
), window_starts AS (
    SELECT s.bucket, s.started_at, s.count FROM filled f
    JOIN tickerq_rate_starts s ON s.bucket = f.bucket AND s.started_at > f.oldest
), granted AS (
    SELECT g.bucket, g.at, least(g.n, g.ceiling - u.n - coalesce(t.n, 0)) AS n
    FROM unnest($34::text[], $35::timestamptz[], $36::int[], $37::int[], $38::int[])
        AS g(bucket, at, n, ceiling, least_n)
    JOIN used u ON u.bucket = g.bucket
    LEFT JOIN taken t ON t.bucket = g.bucket
    WHERE least(g.n, g.ceiling - u.n - coalesce(t.n, 0)) >= g.least_n
      AND (SELECT count(*) FROM claimed) >= $19
), reserved AS (
    UPDATE tickerq_rate_starts s SET count = s.count + g.n
    FROM granted g WHERE s.bucket = g.bucket AND s.started_at = g.at
    RETURNING s.bucket
), reserves AS (
    INSERT INTO tickerq_rate_starts (bucket, started_at, count)
    SELECT bucket, at, n FROM granted WHERE bucket NOT IN (SELECT bucket FROM reserved)
), given_back AS (
    UPDATE tickerq_rate_starts s SET count = s.count - r.n
    FROM unnest($39::text[], $40::timestamptz[], $41::int[]) AS r(bucket, at, n)
    WHERE s.bucket = r.bucket AND s.started_at = r.at
)""")
    if keys:
        # Leases asked for ($42, $43; until $44): granted while the function's
        # leases hold at most half its limit, and with its busiest key's running
        # rows (this claim's too) at most all of it; the others asked for go.
        parts.append("""busiest AS (
    SELECT function, max(n) AS n FROM (
        SELECT function, key, sum(n) AS n FROM (
            SELECT function, key, n FROM running_on
            UNION ALL
            SELECT p.function, p.concurrency_key, 1 FROM picked p
            WHERE p.concurrency_key IS NOT NULL AND p.id IN (SELECT id FROM claimed)
        ) AS x GROUP BY function, key
    ) AS y GROUP BY function
), lease_granted AS (
    SELECT w.function, w.room FROM unnest($42::text[], $43::int[]) AS w(function, room)
    JOIN unnest($24::text[], $25::int[]) AS u(function, most) ON u.function = w.function
    LEFT JOIN spare s ON s.function = w.function
    LEFT JOIN busiest b ON b.function = w.function
    WHERE 2 * (coalesce(s.n, 0) + w.room) <= u.most
      AND coalesce(s.n, 0) + w.room + coalesce(b.n, 0) <= u.most
), lease_kept AS (
    INSERT INTO tickerq_key_leases (function, node, room, until)
    SELECT function, $15, room, $44 FROM lease_granted
    ON CONFLICT (function, node) DO UPDATE SET room = excluded.room, until = excluded.until
), lease_dropped AS (
    DELETE FROM tickerq_key_leases
    WHERE node = $15 AND function = ANY($42::text[])
      AND function NOT IN (SELECT function FROM lease_granted)
)""")
        leases = "ARRAY(SELECT function::text FROM lease_granted) AS leases"
    else:
        leases = "'{}'::text[] AS leases"
    parts.append(f"""notice AS (
    SELECT pg_notify('{CHANNEL}', $22::text)
    WHERE $22::text IS NOT NULL
      AND (EXISTS (SELECT 1 FROM done) OR EXISTS (SELECT 1 FROM claimed))
)""")
    held = " OR ".join(
        f"EXISTS (SELECT 1 FROM {c})" for c in (["saturated"] if keys else []) + held_back
    )
    if rates:
        counts = """ARRAY(SELECT bucket::text FROM taken) AS taken_buckets,
    ARRAY(SELECT n::bigint FROM taken) AS taken_counts,
    ARRAY(SELECT bucket::text FROM window_starts) AS start_buckets,
    ARRAY(SELECT started_at::timestamptz FROM window_starts) AS start_times,
    ARRAY(SELECT count::bigint FROM window_starts) AS start_counts,
    ARRAY(SELECT bucket::text FROM granted) AS granted_buckets,
    ARRAY(SELECT n::bigint FROM granted) AS granted_counts"""
    else:
        counts = """'{}'::text[] AS taken_buckets, '{}'::bigint[] AS taken_counts,
    '{}'::text[] AS start_buckets, '{}'::timestamptz[] AS start_times,
    '{}'::bigint[] AS start_counts, '{}'::text[] AS granted_buckets,
    '{}'::bigint[] AS granted_counts"""
    select = f"""
SELECT l.ids::uuid[] AS left_over, (SELECT count(*) FROM notice)::bigint AS notified,
    ({held})::boolean AS held,
    {counts}, {leases},
    c.*
FROM left_over l LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.execution_time
"""
    return "\n" + ", ".join(parts) + select


_GATED_SQL = {
    (keys, rates): _gated_sql(keys=keys, rates=rates)
    for keys in (False, True)
    for rates in (False, True)
    if keys or rates
}
"""The gated claim by (per-key limits, rate limits) among the claimed functions."""

_GATED_META = (
    "left_over uuid[], notified bigint, held boolean, taken_buckets text[], "
    "taken_counts bigint[], start_buckets text[], start_times timestamptz[], "
    "start_counts bigint[], granted_buckets text[], granted_counts bigint[], leases text[]"
)
"""The first columns :data:`_GATED_SQL` returns (the job's follow)."""

_GATED_PARAMETERS = (
    "uuid[], text[], text[], timestamptz[], timestamptz[], timestamptz[], timestamptz[], "
    "int[], int[], text[], float8[], text[], text[], text[], text, timestamptz, text[], "
    "bigint, bigint, timestamptz, int[], text, json[], text[], int[], text[], "
    "timestamptz[], int[], text[], text[], text[], timestamptz[], timestamptz[], "
    "text[], timestamptz[], int[], int[], int[], text[], timestamptz[], int[], "
    "text[], int[], timestamptz, bigint[]"
)
"""The types of :data:`_GATED_SQL`'s parameters, then the lock keys ($45)."""

_GATED_FUNCTIONS = {
    (True, False): "pg_temp.tickerq_claim_keyed",
    (False, True): "pg_temp.tickerq_claim_rated",
    (True, True): "pg_temp.tickerq_claim_gated",
}
"""Functions of the hot connection's session, one per form of :data:`_GATED_SQL`:
the claim's advisory locks, then the statement, whose snapshot a PL/pgSQL
function takes after the locks: the whole gated claim in one round trip and one
transaction. Made on first use."""

_JOB_TYPES = """
SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
WHERE attrelid = 'tickerq_tickers'::regclass AND attname = ANY($1::text[])
  AND attnum > 0 AND NOT attisdropped
"""

_ARGUMENTS = ", ".join(f"${n}" for n in range(1, 46))


def _gated_function(form: tuple[bool, bool], job_types: str) -> str:
    """The ``CREATE FUNCTION`` of the gated claim's ``form`` (see
    :data:`_GATED_FUNCTIONS`; ``job_types``: the job columns with their types,
    as the table has them)."""
    return f"""CREATE OR REPLACE FUNCTION {_GATED_FUNCTIONS[form]}({_GATED_PARAMETERS})
RETURNS TABLE ({_GATED_META}, {job_types}) LANGUAGE plpgsql AS $body$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(k) FROM unnest($45) AS k ORDER BY k;
    RETURN QUERY {_GATED_SQL[form]};
END
$body$"""


def _arguments(
    finished: Sequence[Outcome],
    *,
    node: str,
    now: datetime,
    functions: Collection[str],
    long_limit: int,
    slots: int,
    lease_until: datetime,
    notice: str | None,
) -> list[Any]:
    """The first 23 arguments of the claim statements (see :data:`_FINISH`)."""
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
        lease_until,
        [o.claim for o in done],
        notice,
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
        self._gated: bool | None = None
        """Whether the session can have the functions of :data:`_GATED_FUNCTIONS`
        (None: not tried yet)."""
        self._made: set[tuple[bool, bool]] = set()
        """The forms whose function the session has."""

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
        deadline: datetime | None = None,
    ) -> tuple[list[Job], set[UUID], bool]:
        """Write ``finished`` and claim up to ``slots`` due rows, plus up to
        ``long_limit`` LONG_RUNNING ones; send the ``notice`` payload if a row
        was ended or claimed. With a ``deadline``, nothing is claimed once the
        database's clock has passed it (a claim on room held ahead: see
        :mod:`tickerq.stores.sql.prepaid`).

        Returns the claimed jobs, the ids of the final results left over: not
        written because their row has chain children (added while it ran, after
        the claim, so the caller did not know) or is no longer this node's (the
        caller writes those through the general path, which resolves the
        children in the same transaction, or changes nothing), and whether the
        notice was sent.
        """
        args = _arguments(
            finished, node=node, now=now, functions=functions,
            long_limit=long_limit, slots=slots, lease_until=lease_until, notice=notice,
        )  # fmt: skip
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                records = await self._conn.fetch(_FINISH_AND_CLAIM, *args, deadline)
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
        gated: GatedClaim,
    ) -> tuple[list[Job], set[UUID], bool]:
        """:meth:`finish_and_claim` under cluster-wide limits: ``BEGIN`` with the
        claim's advisory locks (one order on every node: two nodes cannot count
        the same room), the statement that decides and starts, ``COMMIT``. The
        gates learn what was held back (:meth:`GatedClaim.report`)."""
        keyed = list(gated.per_key)
        buckets = list(gated.windows)
        functions_of, buckets_of = zip(*gated.members, strict=True) if gated.members else ((), ())
        args = _arguments(
            finished, node=node, now=now, functions=functions, long_limit=long_limit,
            slots=slots, lease_until=lease_until, notice=notice,
        )  # fmt: skip
        args += [
            keyed,
            [gated.per_key[f] for f in keyed],
            buckets,
            [gated.windows[b] for b in buckets],
            [gated.limits[b] for b in buckets],
            list(functions_of),
            list(buckets_of),
            list(gated.prune),
            list(gated.prune.values()),
            [gated.gates.stored_at(b, now) for b in buckets],
            [g.bucket for g in gated.grants],
            [g.at for g in gated.grants],
            [g.n for g in gated.grants],
            [g.ceiling for g in gated.grants],
            [g.least for g in gated.grants],
            [r[0] for r in gated.returns],
            [r[1] for r in gated.returns],
            [r[2] for r in gated.returns],
            [w.function for w in gated.wishes],
            [w.room for w in gated.wishes],
            gated.lease_until,
        ]
        locks = sorted(set(gated.locks))
        form = (bool(keyed), bool(buckets))
        if form not in _GATED_SQL:
            form = (True, True)
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                conn = self._conn
                if await self._has_gated_function(conn, form):
                    call = f"SELECT * FROM {_GATED_FUNCTIONS[form]}({_ARGUMENTS})"
                    records = await conn.fetch(call, *args, locks)
                else:  # three round trips: the locks, the claim, COMMIT
                    await conn.execute(
                        "BEGIN; " + " ".join(f"SELECT pg_advisory_xact_lock({k});" for k in locks)
                    )
                    # The form with every part: on its own, a statement's parameters
                    # get their types from where it uses them (it uses them all).
                    records = await conn.fetch(_GATED_SQL[(True, True)], *args)
                    await conn.execute("COMMIT")
            except BaseException:
                await self._drop()  # the server rolls the transaction back
                raise
        first = records[0]
        starts = zip(
            first["start_buckets"], first["start_times"], first["start_counts"], strict=True
        )
        taken = dict(zip(first["taken_buckets"], first["taken_counts"], strict=True))
        granted = dict(zip(first["granted_buckets"], first["granted_counts"], strict=True))
        gated.report(first["held"], list(starts), taken, granted, first["leases"])
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
        # No bitmap scan either: the generic plan cannot see the LIMIT, and on a
        # table whose statistics show few waiting rows it read every due row of a
        # priority through a bitmap, then sorted them, to take ten: a claim cost
        # the backlog, and a drain its square. An index scan walks the waiting
        # index in due order and stops at the LIMIT.
        # No JIT: its compile time is wasted on a statement that reads a few
        # index entries.
        return await asyncpg.connect(
            self.url,
            timeout=10,
            server_settings={
                "plan_cache_mode": "force_generic_plan",
                "jit": "off",
                "enable_seqscan": "off",
                "enable_bitmapscan": "off",
            },
        )

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._drop()

    async def _has_gated_function(self, conn: Any, form: tuple[bool, bool]) -> bool:
        """Whether this session has the function of the gated claim's ``form``
        (:data:`_GATED_FUNCTIONS`), made on first use (not through PgBouncer: a
        session's functions do not outlive a transaction there; nor where the
        role may not make temporary objects)."""
        if form in self._made:
            return True
        if self._gated is False or self.pgbouncer:
            self._gated = False
            return False
        import asyncpg

        try:
            rows = await conn.fetch(_JOB_TYPES, JOB_COLUMN_NAMES)
            types = {r["attname"]: r["type"] for r in rows}
            job = ", ".join(f'"{n}" {types[n]}' for n in JOB_COLUMN_NAMES)
            await conn.execute(_gated_function(form, job))
        except asyncpg.PostgresError as exc:
            self._gated = False
            logger.warning(
                "claims under rate or per-key limits take three round trips: "
                "could not create %s (%s)",
                _GATED_FUNCTIONS[form],
                exc,
            )
            return False
        self._gated = True
        self._made.add(form)
        return True

    async def _drop(self) -> None:
        self._gated = None
        self._made = set()
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

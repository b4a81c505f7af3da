"""The worker's hot path on SQLite: results in, next jobs out, one thread hop.

The general path sends each statement through SQLAlchemy and its connection's
thread: a handful of hops and per-row parameter processing for every batch.
Here one function runs the whole transaction on a dedicated ``sqlite3``
connection in a thread of its own: ``BEGIN IMMEDIATE`` (claims on one file
run one at a time, across processes), the ended jobs' attempt rows and row
updates (only rows this node still holds), the claim of the best due rows up
to the free slots (LONG_RUNNING ones outside the slots) of functions not
paused as the transaction reads them, the start of their IN_PROGRESS chain
children, ``COMMIT``.

Values are stored exactly as SQLAlchemy stores them on SQLite (see
:mod:`tickerq.stores.sql.schema`): UUIDs as 32 hex digits, datetimes as naive
UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as text, booleans as 0/1.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status
from tickerq.pausing import unpaused
from tickerq.stores.base import Job, Outcome
from tickerq.stores.sql.gating import GatedClaim
from tickerq.stores.sql.rows import JOB_COLUMN_NAMES, Decode, job_from_row
from tickerq.stores.sql.schema import KEYED_RUNNING_SQL, WAITING_SQL, decode_sqlite_json
from tickerq.stores.sql.watch import SqliteWatcher

__all__ = ["SqliteHotPath"]

_LONG = int(Priority.LONG_RUNNING)
_SLOT_PRIORITIES = (int(Priority.HIGH), int(Priority.NORMAL), int(Priority.LOW))
_IDLE, _RUNNING = Status.IDLE.value, Status.IN_PROGRESS.value

_INSERT_ATTEMPT = """
INSERT INTO tickerq_attempts (ticker_id, kind, number, node, status, started_at,
    finished_at, elapsed_ms, error_type, error_message, traceback, result)
SELECT id, kind, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
FROM tickerq_tickers WHERE id = ? AND lock_holder = ? AND claims = ?
"""

_FINISH = """
UPDATE tickerq_tickers SET
    status = ?, execution_time = coalesce(?, execution_time),
    retry_count = retry_count + ?, finished_at = ?, skipped_reason = ?, elapsed_ms = ?,
    error_type = ?, error_message = ?, result = ?, lock_holder = NULL, locked_at = NULL,
    lease_until = NULL, cancel_requested = 0, updated_at = ?
WHERE id = ? AND lock_holder = ? AND claims = ?
"""

# One priority's due rows, oldest first: one bounded range of the waiting index
# (INDEXED BY: SQLite refuses the statement rather than walk another index).
_CLAIM = """
UPDATE tickerq_tickers SET
    status = '{running}', lock_holder = ?, locked_at = ?, lease_until = ?,
    executed_at = ?, updated_at = ?, claims = claims + 1
WHERE id IN (
    SELECT id FROM tickerq_tickers INDEXED BY ix_tickerq_tickers_waiting
    WHERE {waiting} AND priority = ? AND execution_time <= ?
      AND function IN ({functions})
    ORDER BY execution_time
    LIMIT ?
)
RETURNING {columns}
"""

_START_CHILDREN = f"""
UPDATE tickerq_tickers SET
    awaiting_parent = 0,
    execution_time = CASE WHEN execution_time IS NULL OR execution_time < ?1
                          THEN ?1 ELSE execution_time END,
    updated_at = ?1
WHERE parent_id = ?2 AND awaiting_parent = 1 AND status = '{_IDLE}'
  AND run_condition = '{RunCondition.IN_PROGRESS.value}'
"""


def _unpaused(db: sqlite3.Connection, names: list[str]) -> list[str]:
    """Of ``names``, the functions not paused as stored now (the engine's view of
    the pauses may be a moment old); none while the cluster is paused."""
    return list(unpaused(names, {r[0] for r in db.execute("SELECT function FROM tickerq_pauses")}))


_PICK = f"""
SELECT id, function, concurrency_key, priority, execution_time
FROM tickerq_tickers INDEXED BY ix_tickerq_tickers_waiting
WHERE {WAITING_SQL["sqlite"]} AND priority = ? AND execution_time <= ?
  AND function IN ({{functions}}){{skipped}}
ORDER BY execution_time
LIMIT ?
"""


def _claim_gated(
    db: sqlite3.Connection,
    gated: GatedClaim,
    names: list[str],
    *,
    claim: tuple[Any, ...],
    slots: int,
    long_limit: int,
    at: str | None,
) -> list[Any]:
    """Within the claim's transaction: read what the limits count, pick the due rows
    (keys at their limit left out), let the gate admit some, start those and store
    their starts."""
    keyed = sorted(f for f in names if f in gated.per_key)
    running: dict[tuple[str, str], int] = {}
    if keyed:
        sql = (
            "SELECT function, concurrency_key, count(*) FROM tickerq_tickers "
            f"WHERE {KEYED_RUNNING_SQL} AND function IN ({', '.join('?' * len(keyed))}) "
            "GROUP BY function, concurrency_key"
        )
        running = {(f, k): n for f, k, n in db.execute(sql, keyed)}
    starts: list[tuple[str, datetime, int]] = []
    for bucket, oldest in gated.windows.items():
        sql = (
            "SELECT started_at, count FROM tickerq_rate_starts WHERE bucket = ? AND started_at > ?"
        )
        found = db.execute(sql, (bucket, _text(oldest)))  # stored as naive UTC text
        starts.extend((bucket, _aware(t), n) for t, n in found)
    skipped, skip_args = "", []
    for function in keyed:
        full = [k for (f, k), n in running.items() if f == function and n >= gated.per_key[f]]
        if full:
            skipped += (
                "\n  AND (function != ? OR concurrency_key IS NULL"
                f" OR concurrency_key NOT IN ({', '.join('?' * len(full))}))"
            )
            skip_args += [function, *full]
    sql = _PICK.format(functions=", ".join("?" * len(names)), skipped=skipped)
    picked: list[Any] = []
    if long_limit > 0:
        picked.extend(db.execute(sql, (_LONG, at, *names, *skip_args, long_limit)))
    for priority in _SLOT_PRIORITIES:
        free = slots - sum(1 for r in picked if r["priority"] != _LONG)
        if free <= 0:
            break
        picked.extend(db.execute(sql, (priority, at, *names, *skip_args, free)))
    ids, taken = gated.admit(picked, starts, running)
    rows: list[Any] = []
    if ids:
        sql = (
            f"UPDATE tickerq_tickers SET status = '{_RUNNING}', lock_holder = ?, locked_at = ?,"
            " lease_until = ?, executed_at = ?, updated_at = ?, claims = claims + 1"
            f" WHERE id IN ({', '.join('?' * len(ids))}) RETURNING {', '.join(JOB_COLUMN_NAMES)}"
        )
        rows = list(db.execute(sql, (*claim, *ids)))
    for bucket, n in taken.items():  # one row per slot
        stored = _text(gated.gates.stored_at(bucket, gated.now))
        bumped = db.execute(
            "UPDATE tickerq_rate_starts SET count = count + ? WHERE bucket = ? AND started_at = ?",
            (n, bucket, stored),
        )
        if not bumped.rowcount:
            db.execute(
                "INSERT INTO tickerq_rate_starts (bucket, started_at, count) VALUES (?, ?, ?)",
                (bucket, stored, n),
            )
    db.executemany(
        "DELETE FROM tickerq_rate_starts WHERE bucket = ? AND started_at <= ?",
        [(b, _text(cutoff)) for b, cutoff in gated.prune.items()],
    )
    return rows


def _text(moment: datetime | None) -> str | None:
    """A datetime as SQLAlchemy keeps it on SQLite (naive UTC text)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _aware(text: str) -> datetime:
    """A stored naive UTC text as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else _aware(text)


def _uuid(value: str | None) -> UUID | None:
    return None if value is None else UUID(hex=value)


class SqliteHotPath:
    """A dedicated sqlite3 connection, used from one thread, for finish-and-claim."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tickerq-sqlite-hot")
        self._claims: dict[int, str] = {}
        self._watcher = SqliteWatcher(path)

    def changed(self) -> bool:
        """Whether another connection committed to the file since the last call
        (see :mod:`tickerq.stores.sql.watch`)."""
        return self._watcher.changed()

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
        gated: GatedClaim | None = None,
    ) -> tuple[list[Job], set[UUID], bool]:
        """Write ``finished`` and claim up to ``slots`` due rows (plus up to
        ``long_limit`` LONG_RUNNING ones) in one transaction (``gated``: see
        :meth:`finish_and_claim_gated`).

        Returns the jobs, the ids of the final results left over (not written
        because their row has chain children, added after the claim; the caller
        writes them through the general path, which resolves the children) and
        False: SQLite sends no ``notice`` (other processes see the file change).
        """
        done = sorted(finished, key=lambda o: o.job.id)
        at = _text(now)
        # JSON text of what each job returned; NULL (no encoding) when it is None
        results = [None if o.result is None else json.dumps(o.result) for o in done]
        attempts = [
            (
                o.job.retry_count, o.node, o.attempt_status.value, _text(o.started_at),
                _text(o.finished_at), o.elapsed_ms, o.error_type, o.error_message,
                o.traceback, result, o.job.id.hex, o.node, o.claim,
            )
            for o, result in zip(done, results, strict=True)
        ]  # fmt: skip
        updates = [
            (
                o.status.value, _text(o.next_run_at), o.retry_increment, _text(o.final_at),
                o.skipped_reason, o.elapsed_ms, o.error_type, o.error_message, result,
                _text(o.finished_at), o.job.id.hex, o.node, o.claim,
            )
            for o, result in zip(done, results, strict=True)
        ]  # fmt: skip
        finals = [o.job.id.hex for o in done if o.status.is_final]
        names = sorted(functions)
        claim = (node, at, _text(lease_until), at, at)
        loop = asyncio.get_running_loop()
        transaction = functools.partial(
            self._transaction,
            gated=gated,
            attempts=attempts,
            updates=updates,
            finals=finals,
            names=names,
            claim=claim,
            slots=max(slots, 0),
            long_limit=max(long_limit, 0),
            at=at,
        )
        rows, left_over = await loop.run_in_executor(self._thread, transaction)
        jobs = [job_from_row(r, _DECODE) for r in rows]
        return jobs, {UUID(hex=i) for i in left_over}, False

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
        """:meth:`finish_and_claim` under cluster-wide limits, in the same one
        transaction: after the results, it reads what the limits count (the
        running rows of each key, the starts within each rate limit's window),
        picks the due rows (keys at their limit left out), lets the gate admit
        some (:meth:`GatedClaim.admit`), starts those and stores their starts. No
        lock is needed: ``BEGIN IMMEDIATE`` runs claims on one file one at a time."""
        return await self.finish_and_claim(
            now,
            node=node,
            lease_until=lease_until,
            slots=slots,
            long_limit=long_limit,
            functions=functions,
            finished=finished,
            notice=notice,
            gated=gated,
        )

    def _transaction(
        self,
        *,
        gated: GatedClaim | None,
        attempts: list[tuple[Any, ...]],
        updates: list[tuple[Any, ...]],
        finals: list[str],
        names: list[str],
        claim: tuple[Any, ...],
        slots: int,
        long_limit: int,
        at: str | None,
    ) -> tuple[list[Any], set[str]]:
        db = self._connect()
        rows: list[Any] = []
        left_over: set[str] = set()
        db.execute("BEGIN IMMEDIATE")
        try:
            if finals:  # rows that got chain children: the general path ends them
                marks = ", ".join("?" * len(finals))
                sql = f"SELECT id FROM tickerq_tickers WHERE id IN ({marks}) AND has_children"
                left_over = {r[0] for r in db.execute(sql, finals)}
                if left_over:  # the id is the 11th value of both
                    attempts = [a for a in attempts if a[10] not in left_over]
                    updates = [u for u in updates if u[10] not in left_over]
            if attempts:
                db.executemany(_INSERT_ATTEMPT, attempts)
                db.executemany(_FINISH, updates)
            names = _unpaused(db, names)
            if names and gated is not None:
                rows = _claim_gated(
                    db, gated, names, claim=claim, slots=slots, long_limit=long_limit, at=at
                )
            elif names:
                rows = self._claim(
                    db, names, claim=claim, slots=slots, long_limit=long_limit, at=at
                )
            for row in rows:
                if row["has_children"]:  # its IN_PROGRESS children start with it
                    db.execute(_START_CHILDREN, (at, row["id"]))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        rows.sort(key=lambda r: (-r["priority"], r["execution_time"]))
        return rows, left_over

    def _claim(
        self,
        db: sqlite3.Connection,
        names: list[str],
        *,
        claim: tuple[Any, ...],
        slots: int,
        long_limit: int,
        at: str | None,
    ) -> list[Any]:
        """Start the best due rows of ``names``: up to ``long_limit`` LONG_RUNNING
        ones, then by priority up to ``slots``."""
        rows: list[Any] = []
        sql = self._claim_sql(len(names))
        if long_limit > 0:
            rows.extend(db.execute(sql, (*claim, _LONG, at, *names, long_limit)))
        for priority in _SLOT_PRIORITIES:
            free = slots - (len(rows) - sum(1 for r in rows if r["priority"] == _LONG))
            if free <= 0:
                break
            rows.extend(db.execute(sql, (*claim, priority, at, *names, free)))
        return rows

    def _claim_sql(self, count: int) -> str:
        sql = self._claims.get(count)
        if sql is None:
            sql = _CLAIM.format(
                columns=", ".join(JOB_COLUMN_NAMES),
                running=_RUNNING,
                waiting=WAITING_SQL["sqlite"],
                functions=", ".join("?" * count),
            )
            self._claims[count] = sql
        return sql

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in (
                "PRAGMA busy_timeout=30000",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA foreign_keys=ON",
                "PRAGMA mmap_size=0",  # as the store's other connections (see dialects)
            ):
                db.execute(pragma)
            db.row_factory = sqlite3.Row  # columns by name, as the Job mapping reads them
            self._db = db
        return self._db

    async def close(self) -> None:
        """Close the connections and the thread."""
        self._watcher.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


_DECODE = Decode(json=decode_sqlite_json, moment=_moment, uuid=_uuid)
"""Columns as sqlite3 hands them over (see :mod:`tickerq.stores.sql.schema`)."""

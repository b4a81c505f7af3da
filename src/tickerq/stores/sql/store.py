"""The SQL store: SQLite (embedded, several processes on one host) and PostgreSQL.

One implementation over SQLAlchemy 2 Core; dialect differences live in
:mod:`tickerq.stores.sql.dialects`. Claims are atomic: on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, on SQLite because every write transaction starts
with ``BEGIN IMMEDIATE`` and so runs alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tickerq.enums import Priority, Status, TickerKind
from tickerq.errors import (
    DuplicateJobError,
    DuplicateTickerError,
    TickerNotFoundError,
    TickerStateError,
)
from tickerq.events import TickerDeleted
from tickerq.models import Attempt, CronOccurrence, CronTicker, TimeTicker
from tickerq.notices import CRONS, TICKERS, CancelRequested, Changed, Notice, WorkDue, encode
from tickerq.operations import CANCEL, RETRY, UPDATE
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import (
    IDLE,
    IN_CHUNK,
    OCCURRENCE,
    RUNNING,
    TIME,
    T,
    kind_name,
)
from tickerq.stores.sql.crons import CronMaterializing, take_back_ahead
from tickerq.stores.sql.enqueue_sqlite import SqliteEnqueue
from tickerq.stores.sql.notify import CHANNEL
from tickerq.stores.sql.pauses import SqlPauses
from tickerq.stores.sql.reads import SqlReads
from tickerq.stores.sql.rows import (
    attempt_from_row,
    cron_from_row,
    cron_values,
    occurrence_from_row,
    ticker_from_row,
    ticker_values,
)
from tickerq.stores.sql.schema import attempts, cron_tickers, tickers
from tickerq.stores.sql.seeding import CronSeeding
from tickerq.stores.sql.unique import SqlUnique, held_keys_of
from tickerq.stores.sql.work import EngineWork
from tickerq.unique import HOLDING, KeyHeld, check_batch_keys

__all__ = ["SqlStore"]

logger = logging.getLogger(__name__)


class SqlStore(CronSeeding, CronMaterializing, EngineWork, SqlUnique, SqlPauses, SqlReads):
    """Tickers in SQLite or PostgreSQL, shared by every node that uses the same database."""

    _sqlite_enqueue: SqliteEnqueue | None = None

    # -- time tickers ------------------------------------------------------------------

    async def add_time_tickers(self, new: Sequence[TimeTicker]) -> None:
        """Insert tickers; children of ended or running parents are resolved at once."""
        if not new:
            return
        batch_ids = {t.id for t in new}
        if len(batch_ids) < len(new):
            seen: set[UUID] = set()
            for t in new:
                if t.id in seen:
                    raise DuplicateTickerError("time ticker", t.id)
                seen.add(t.id)
        keyed = any(t.unique_key is not None for t in new)
        if keyed:
            check_batch_keys(new)
        elif self._pg_enqueue is not None and len(new) == 1 and new[0].parent_id is None:
            await self._pg_enqueue.add(new[0])  # one round trip, notice included
            self._announce(TIME, new[0].id, new[0].function, new[0].status.value, new[0].created_at)
            return
        outside = {t.parent_id for t in new if t.parent_id and t.parent_id not in batch_ids}
        try:
            # Keyed tickers take the general path: the fast paths cannot say which key
            # broke the unique index.
            if keyed or not await self._fast_add(new, outside):
                await self._insert_time_tickers(new, outside)
        except IntegrityError:
            await self._raise_taken(new, batch_ids)
            raise
        for t in new:
            self._announce(TIME, t.id, t.function, t.status.value, t.created_at)

    async def _raise_taken(self, new: Sequence[TimeTicker], batch_ids: set[UUID]) -> None:
        """After an add broke a constraint: raise DuplicateTickerError for an id that
        is taken, DuplicateJobError for a unique key that is held (else return)."""
        async with self.sa_engine.connect() as conn:
            for chunk in _chunks(list(batch_ids), 500):
                taken = (await conn.execute(select(T.id).where(T.id.in_(chunk)))).scalar()
                if taken is not None:
                    raise DuplicateTickerError("time ticker", taken) from None
            pairs = [(t.function, t.unique_key) for t in new if t.unique_key is not None]
            holders = await conn.run_sync(held_keys_of, pairs) if pairs else []
            if holders:
                holder, function, key = holders[0]
                raise DuplicateJobError(function, key, holder) from None

    async def close(self) -> None:
        """Close every connection (the SQLite enqueue's too)."""
        if self._sqlite_enqueue is not None:
            self._sqlite_enqueue.close()
            self._sqlite_enqueue = None
        await super().close()

    async def _fast_add(self, new: Sequence[TimeTicker], outside: set[UUID]) -> bool:
        """Add through the dialect's fast path; False: none applies, or it handed the add back."""
        file = self.dialect.file
        if file is not None:
            if self._sqlite_enqueue is None:
                self._sqlite_enqueue = SqliteEnqueue(file, self.write_sqlite)
            return await self._sqlite_enqueue.add(new, outside)
        return False

    async def _insert_time_tickers(self, new: Sequence[TimeTicker], outside: set[UUID]) -> None:
        def tx(conn: Connection) -> None:
            parent_status: dict[UUID, str] = {}
            if outside:
                # Marking the parents locks their rows: a parent's run ends either
                # before (its status here is final: resolved below) or after this
                # commits (its end sees has_children and resolves the child).
                rows = conn.execute(
                    update(tickers)
                    .where(T.id.in_(outside))
                    .values(has_children=True)
                    .returning(T.id, T.status)
                )
                parent_status = {r.id: r.status for r in rows}
                missing = outside - parent_status.keys()
                if missing:
                    raise TickerNotFoundError("time ticker", next(iter(missing)))
            parents = {t.parent_id for t in new}
            conn.execute(
                insert(tickers),
                [ticker_values(t, t.parent_id is not None, t.id in parents) for t in new],
            )
            now = new[0].updated_at
            due = [t.execution_time for t in new if t.execution_time and t.parent_id is None]
            self._notify(conn, WorkDue(min(due)) if due else CHANGED_TIME)
            for parent_id, status in parent_status.items():
                if Status(status).is_final:
                    self._resolve_children(conn, parent_id, Status(status), now)
                elif status == RUNNING:
                    self._start_in_progress_children(conn, [parent_id], now)

        await self.write(tx)

    async def get_time_ticker(self, ticker_id: UUID) -> TimeTicker | None:
        """One time ticker."""
        async with self.sa_engine.connect() as conn:
            row = (
                await conn.execute(select(tickers).where(T.id == ticker_id, T.kind == TIME))
            ).first()
        return ticker_from_row(row) if row is not None else None

    async def get_time_tickers(self, ids: Sequence[UUID]) -> dict[UUID, TimeTicker]:
        """The time tickers of ``ids`` that exist."""
        out: dict[UUID, TimeTicker] = {}
        async with self.sa_engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids)), IN_CHUNK):
                rows = await conn.execute(select(tickers).where(T.id.in_(chunk), T.kind == TIME))
                out.update((r.id, ticker_from_row(r)) for r in rows)
        return out

    async def update_time_tickers(
        self,
        changes: Mapping[UUID, Mapping[str, Any]],
        allowed: frozenset[Status] = UPDATE.allowed,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Change the tickers among ``changes`` whose status is allowed (see Store):
        one UPDATE per distinct mapping of changes, all in one transaction."""
        wanted = sorted(changes)
        refused: dict[UUID, KeyHeld] = {}

        def tx(conn: Connection) -> tuple[dict[UUID, tuple[Status, str]], list[Any]]:
            found: dict[UUID, tuple[Status, str]] = {}
            groups: dict[int, tuple[Mapping[str, Any], list[UUID]]] = {}
            rows = self._lock_rows(conn, TickerKind.TIME, wanted)
            refused.clear()
            refused.update(self._refused_keys(conn, _new_keys(rows, changes, allowed)))
            for r in rows:
                found[r.id] = (Status(r.status), r.function)
                if Status(r.status) in allowed and r.id not in refused:
                    fields = changes[r.id]
                    groups.setdefault(id(fields), (fields, []))[1].append(r.id)
            changed: list[Any] = []
            for fields, ids in groups.values():
                values = _column_values(fields)
                for chunk in _chunks(ids, IN_CHUNK):
                    changed.extend(
                        conn.execute(
                            update(tickers)
                            .where(T.id.in_(chunk))
                            .values(**values)
                            .returning(
                                T.id, T.function, T.status, T.execution_time, T.awaiting_parent
                            )
                        )
                    )
            due = [
                r.execution_time
                for r in changed
                if r.status == IDLE and not r.awaiting_parent and r.execution_time is not None
            ]
            if changed:
                self._notify(conn, WorkDue(dialects.as_utc(min(due))) if due else CHANGED_TIME)
            return found, changed

        found, changed = await self.write_retrying(tx, integrity=True)
        if held_by is not None:
            held_by.update(refused)
        for row in changed:
            at = changes[row.id].get("updated_at") or dialects.utcnow()
            self._announce(TIME, row.id, row.function, row.status, at)
        return found

    def _lock_rows(self, conn: Connection, kind: TickerKind, ids: list[UUID]) -> list[Any]:
        """Lock the rows of ``ids`` (sorted: every bulk call takes its locks in id order,
        so two calls over the same rows wait for each other instead of deadlocking)
        and read their id, status, function, has_children and unique_key."""
        rows: list[Any] = []
        for chunk in _chunks(ids, IN_CHUNK):
            rows.extend(
                conn.execute(
                    select(T.id, T.status, T.function, T.has_children, T.unique_key)
                    .where(T.id.in_(chunk), T.kind == kind.value)
                    .order_by(T.id)
                    .with_for_update()
                )
            )
        return rows

    async def delete_time_tickers(self, ids: Sequence[UUID]) -> int:
        """Delete tickers with their descendants; refuse if one of them runs."""

        def tx(conn: Connection) -> list[UUID]:
            found = list(
                (conn.execute(select(T.id).where(T.id.in_(ids), T.kind == TIME))).scalars()
            )
            doomed: list[UUID] = []
            frontier = found
            while frontier:
                doomed.extend(frontier)
                frontier = list(
                    (conn.execute(select(T.id).where(T.parent_id.in_(frontier)))).scalars()
                )
            if not doomed:
                return []
            running = (
                conn.execute(select(T.id).where(T.id.in_(doomed), T.status == RUNNING))
            ).scalar()
            if running is not None:
                raise TickerStateError(
                    f"time ticker {running} is running; cancel it before deleting it"
                )
            conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(doomed)))
            for chunk in _chunks(list(reversed(doomed)), 500):
                conn.execute(delete(tickers).where(T.id.in_(chunk)))
            self._notify(conn, CHANGED_TIME)
            return doomed

        doomed = await self.write(tx)
        if not doomed:
            return 0
        bus = self.events
        if bus is not None and bus.active:
            for ticker_id in doomed:
                bus.publish(TickerDeleted(dialects.utcnow(), TickerKind.TIME, ticker_id))
        return len(doomed)

    # -- both kinds ---------------------------------------------------------------------

    async def cancel_many(
        self, kind: TickerKind, ids: Sequence[UUID], now: datetime
    ) -> dict[UUID, tuple[Status, str]]:
        """Cancel waiting rows; flag running ones for their node (see Store)."""
        wanted = sorted(set(ids))

        def tx(conn: Connection) -> tuple[dict[UUID, tuple[Status, str]], list[UUID]]:
            found: dict[UUID, tuple[Status, str]] = {}
            parents: set[UUID] = set()
            for r in self._lock_rows(conn, kind, wanted):
                found[r.id] = (Status(r.status), r.function)
                if r.has_children:
                    parents.add(r.id)
            running = [i for i, (s, _) in found.items() if s is Status.IN_PROGRESS]
            waiting = [
                i for i, (s, _) in found.items() if s is not Status.IN_PROGRESS and CANCEL.allows(s)
            ]
            for chunk in _chunks(running, IN_CHUNK):
                conn.execute(update(tickers).where(T.id.in_(chunk)).values(cancel_requested=True))
            self.dialect.notify_each(conn, CHANNEL, [encode(CancelRequested(i)) for i in running])
            for chunk in _chunks(waiting, IN_CHUNK):
                conn.execute(
                    update(tickers)
                    .where(T.id.in_(chunk))
                    .values(
                        status=Status.CANCELLED.value,
                        finished_at=now,
                        updated_at=now,
                        error_message="cancelled before it started",
                        skipped_reason=None,
                        lock_holder=None,
                        locked_at=None,
                        lease_until=None,
                    )
                )
            self._resolve_children_of(
                conn, [i for i in waiting if i in parents], Status.CANCELLED, now
            )
            if waiting:
                self._notify(conn, CHANGED_TIME if kind is TickerKind.TIME else CHANGED_OCCURRENCES)
            return found, waiting

        found, ended = await self.write(tx)
        for ticker_id in ended:
            self._announce(kind.value, ticker_id, found[ticker_id][1], Status.CANCELLED.value, now)
        return found

    async def retry_many(
        self,
        kind: TickerKind,
        ids: Sequence[UUID],
        now: datetime,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Make rows due now again (see Store); running ones stay as they are."""
        wanted = sorted(set(ids))
        refused: dict[UUID, KeyHeld] = {}

        def tx(conn: Connection) -> tuple[dict[UUID, tuple[Status, str]], list[UUID]]:
            rows = self._lock_rows(conn, kind, wanted)
            found = {r.id: (Status(r.status), r.function) for r in rows}
            ended = [
                (r.id, r.function, r.unique_key)
                for r in rows
                if r.unique_key is not None and Status(r.status) not in HOLDING
            ]
            refused.clear()
            refused.update(self._refused_keys(conn, ended))
            again = [i for i, (s, _) in found.items() if RETRY.allows(s) and i not in refused]
            for chunk in _chunks(again, IN_CHUNK):
                conn.execute(
                    update(tickers)
                    .where(T.id.in_(chunk))
                    .values(
                        status=IDLE,
                        execution_time=now,
                        awaiting_parent=False,
                        cancel_requested=False,
                        error_type=None,
                        error_message=None,
                        skipped_reason=None,
                        lock_holder=None,
                        locked_at=None,
                        lease_until=None,
                        updated_at=now,
                    )
                )
            if again:
                self._notify(conn, WorkDue(now))
            return found, again

        found, again = await self.write_retrying(tx, integrity=True)
        if held_by is not None:
            held_by.update(refused)
        for ticker_id in again:
            self._announce(kind.value, ticker_id, found[ticker_id][1], IDLE, now)
        return found

    async def attempts(self, kind: TickerKind, ticker_id: UUID) -> list[Attempt]:
        """Attempts of one ticker, oldest first."""
        async with self.sa_engine.connect() as conn:
            row = (
                await conn.execute(
                    select(T.status, T.lock_holder, T.executed_at, T.retry_count).where(
                        T.id == ticker_id, T.kind == kind.value
                    )
                )
            ).first()
            if row is None:
                raise TickerNotFoundError(kind_name(kind), ticker_id)
            rows = await conn.execute(
                select(attempts)
                .where(attempts.c.ticker_id == ticker_id)
                .order_by(attempts.c.started_at, attempts.c.id)
            )
            found = [attempt_from_row(r) for r in rows]
        if row.status == RUNNING and row.executed_at is not None:
            # The run going on now: its attempt row is written when it ends.
            found.append(
                Attempt(
                    ticker_id=ticker_id,
                    kind=kind,
                    number=row.retry_count,
                    node=row.lock_holder or "",
                    started_at=row.executed_at,
                )
            )
        return found

    # -- cron tickers --------------------------------------------------------------------

    async def add_cron_ticker(self, cron: CronTicker) -> CronTicker:
        """Insert a cron ticker (DuplicateTickerError if its id is taken)."""

        def tx(conn: Connection) -> None:
            conn.execute(insert(cron_tickers).values(**cron_values(cron)))
            self._notify(conn, _cron_notice(cron.enabled, cron.next_fire_at))

        try:
            await self.write(tx)
        except IntegrityError:
            if await self.get_cron_ticker(cron.id) is not None:
                raise DuplicateTickerError("cron ticker", cron.id) from None
            raise
        self._announce_cron(cron.id, cron.updated_at)
        return cron

    async def get_cron_ticker(self, cron_id: UUID) -> CronTicker | None:
        """One cron ticker."""
        async with self.sa_engine.connect() as conn:
            row = (
                await conn.execute(select(cron_tickers).where(cron_tickers.c.id == cron_id))
            ).first()
        return cron_from_row(row) if row is not None else None

    async def update_cron_ticker(
        self,
        cron_id: UUID,
        changes: Mapping[str, Any],
        *,
        take_back_after: datetime | None = None,
    ) -> CronTicker:
        """Change a cron ticker (and take back the occurrences made ahead: see Store)."""
        values = dict(changes)
        if values.get("retry_intervals") is not None:
            values["retry_intervals"] = list(values["retry_intervals"])
        if "misfire" in values:
            values["misfire"] = values["misfire"].value

        def tx(conn: Connection) -> tuple[Any, list[UUID]]:
            taken: list[UUID] = []
            if take_back_after is not None:
                ahead = take_back_ahead(conn, cron_id, take_back_after)
                taken = [ticker_id for ticker_id, _ in ahead]
                if ahead and "next_fire_at" not in values:
                    values["next_fire_at"] = min(fire for _, fire in ahead)
            row = conn.execute(
                update(cron_tickers)
                .where(cron_tickers.c.id == cron_id)
                .values(**values)
                .returning(cron_tickers)
            ).first()
            if row is not None:
                self._notify(conn, _cron_notice(row.enabled, row.next_fire_at))
            return row, taken

        row, taken = await self.write(tx)
        if row is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        self._announce_taken_back(taken)
        self._announce_cron(cron_id, row.updated_at)
        return cron_from_row(row)

    async def delete_cron_ticker(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that are not running."""

        def tx(conn: Connection) -> int:
            dropped = self._drop_crons(conn, [cron_id], keep_ended=False)
            if dropped:
                self._notify(conn, CHANGED_OCCURRENCES)
            return dropped

        if await self.write(tx) == 0:
            raise TickerNotFoundError("cron ticker", cron_id)
        self._announce_deleted([cron_id])

    async def query_cron_tickers(self, function: str | None = None) -> list[CronTicker]:
        """Cron tickers, oldest first."""
        stmt = select(cron_tickers).order_by(cron_tickers.c.created_at, cron_tickers.c.id)
        if function is not None:
            stmt = stmt.where(cron_tickers.c.function == function)
        async with self.sa_engine.connect() as conn:
            return [cron_from_row(r) for r in await conn.execute(stmt)]

    async def due_cron_tickers(self, now: datetime) -> list[CronTicker]:
        """Enabled crons with a fire at or before ``now``."""
        stmt = select(cron_tickers).where(
            cron_tickers.c.enabled.is_(True), cron_tickers.c.next_fire_at <= now
        )
        async with self.sa_engine.connect() as conn:
            return [cron_from_row(r) for r in await conn.execute(stmt)]

    async def advance_cron_ticker(
        self,
        cron_id: UUID,
        *,
        expected_next: datetime | None,
        new_next: datetime | None,
        fires: Sequence[datetime],
        priority: Priority,
        now: datetime,
    ) -> int:
        """Move the cursor if nobody did; create each fire's occurrence at most once."""
        c = cron_tickers.c

        def tx(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
            cursor = (
                c.next_fire_at.is_(None)
                if expected_next is None
                else c.next_fire_at == expected_next
            )
            cron = (
                conn.execute(
                    update(cron_tickers)
                    .where(c.id == cron_id, cursor)
                    .values(next_fire_at=new_next)
                    .returning(c.function, c.request, c.retries, c.retry_intervals)
                )
            ).first()
            if cron is None:
                return 0, []
            if not fires:
                self._notify(conn, CHANGED_CRONS)
                return 0, []
            rows = [
                {
                    "id": dialects.new_id(),
                    "kind": OCCURRENCE,
                    "function": cron.function,
                    "status": IDLE,
                    "priority": int(priority),
                    "execution_time": fire,
                    "fire_time": fire,
                    "request": cron.request,
                    "retries": cron.retries,
                    "retry_intervals": cron.retry_intervals,
                    "retry_count": 0,
                    "description": "",
                    "awaiting_parent": False,
                    "cancel_requested": False,
                    "cron_ticker_id": cron_id,
                    "created_at": now,
                    "updated_at": now,
                }
                for fire in fires
            ]
            created = 0
            for row in rows:
                result = conn.execute(self.dialect.insert_ignore(tickers, row))
                created += max(result.rowcount, 0)
            self._notify(conn, WorkDue(min(fires)) if created else CHANGED_CRONS)
            return created, rows

        created, rows = await self.write(tx)
        if created:
            for row in rows:
                self._announce(OCCURRENCE, row["id"], row["function"], IDLE, now)
        return created

    async def occurrences(
        self, cron_id: UUID, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """A cron's occurrences, newest fire first."""
        async with self.sa_engine.connect() as conn:
            exists = (
                await conn.execute(select(cron_tickers.c.id).where(cron_tickers.c.id == cron_id))
            ).first()
            if exists is None:
                raise TickerNotFoundError("cron ticker", cron_id)
            rows = await conn.execute(
                select(tickers)
                .where(T.cron_ticker_id == cron_id, T.kind == OCCURRENCE)
                .order_by(T.fire_time.desc())
                .limit(limit)
                .offset(offset)
            )
            return [occurrence_from_row(r) for r in rows]

    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence | None:
        """One occurrence."""
        async with self.sa_engine.connect() as conn:
            row = (
                await conn.execute(
                    select(tickers).where(T.id == occurrence_id, T.kind == OCCURRENCE)
                )
            ).first()
        return occurrence_from_row(row) if row is not None else None


CHANGED_TIME = Changed(frozenset({TICKERS}))
CHANGED_OCCURRENCES = Changed(frozenset({TICKERS, CRONS}))
CHANGED_CRONS = Changed(frozenset({CRONS}))


def _cron_notice(enabled: bool, next_fire_at: datetime | None) -> Notice:
    """What a cron ticker's change tells other nodes: when it fires next, if it does."""
    if enabled and next_fire_at is not None:
        return WorkDue(dialects.as_utc(next_fire_at))
    return CHANGED_CRONS


def _chunks(items: list[UUID], size: int) -> list[list[UUID]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _new_keys(
    rows: Sequence[Any],
    changes: Mapping[UUID, Mapping[str, Any]],
    allowed: frozenset[Status],
) -> list[tuple[UUID, str, str]]:
    """The (id, function, key) of the locked ``rows`` that ``changes`` would make hold
    a key they do not hold now."""
    out = []
    for r in rows:
        fields = changes[r.id]
        if "unique_key" not in fields and "function" not in fields:
            continue
        status = Status(r.status)
        if status not in allowed or status not in HOLDING:
            continue
        function = fields.get("function", r.function)
        key = fields.get("unique_key", r.unique_key)
        if key is not None and (function, key) != (r.function, r.unique_key):
            out.append((r.id, function, key))
    return out


def _column_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A ticker's changed fields as column values."""
    values = dict(changes)
    if "retry_intervals" in values and values["retry_intervals"] is not None:
        values["retry_intervals"] = list(values["retry_intervals"])
    if "headers" in values:
        values["headers"] = values["headers"] or None  # none: NULL
    return values

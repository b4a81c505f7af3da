"""The SQL store: SQLite (embedded, several processes on one host) and PostgreSQL.

One implementation over SQLAlchemy 2 Core; dialect differences live in
:mod:`tickerq.stores.sql.dialects`. Claims are atomic: on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, on SQLite because every write transaction starts
with ``BEGIN IMMEDIATE`` and so runs alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tickerq.enums import Priority, RunCondition, Status, TickerKind
from tickerq.errors import TickerNotFoundError, TickerStateError
from tickerq.events import CronTickerChanged, TickerChanged, TickerDeleted
from tickerq.models import Attempt, CronOccurrence, CronTicker, Node, TimeTicker
from tickerq.stores.base import Job, Outcome, Store, TickerQuery
from tickerq.stores.sql import dialects
from tickerq.stores.sql.notify import CHANNEL, Listener
from tickerq.stores.sql.rows import (
    attempt_from_row,
    cron_from_row,
    cron_values,
    job_from_row,
    node_from_row,
    node_values,
    occurrence_from_row,
    ticker_from_row,
    ticker_values,
)
from tickerq.stores.sql.schema import attempts, cron_tickers, nodes, tickers

__all__ = ["SqlStore"]

logger = logging.getLogger(__name__)

T = tickers.c
IDLE, QUEUED, RUNNING = Status.IDLE.value, Status.QUEUED.value, Status.IN_PROGRESS.value
TIME, OCCURRENCE = TickerKind.TIME.value, TickerKind.CRON_OCCURRENCE.value
_JOB_COLUMNS = (
    T.id, T.kind, T.function, T.priority, T.request, T.execution_time, T.fire_time,
    T.retries, T.retry_intervals, T.retry_count, T.timeout, T.cron_ticker_id, T.parent_id,
)  # fmt: skip


def _kind_name(kind: TickerKind) -> str:
    return "time ticker" if kind is TickerKind.TIME else "cron occurrence"


def _matching_conditions(parent: Status) -> list[str]:
    return [
        c.value for c in RunCondition if c is not RunCondition.IN_PROGRESS and c.matches(parent)
    ]


class SqlStore(Store):
    """Tickers in SQLite or PostgreSQL, shared by every node that uses the same database."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_payload_bytes: int = 1_000_000,
        auto_upgrade: bool = False,
    ) -> None:
        self.url = url
        self.auto_upgrade = auto_upgrade
        self.dialect = dialects.for_url(url)
        self.poll_interval = self.dialect.poll_interval
        self.pool_size = pool_size
        self.max_payload_bytes = max_payload_bytes
        self._engine: AsyncEngine | None = None
        self._listener: Listener | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (after open)."""
        if self._engine is None:
            raise TickerStateError(f"the store {self.dialect.safe_url} is not open")
        return self._engine

    async def open(self) -> None:
        """Connect, and create the schema if the database is empty.

        A schema from an older tickerq is upgraded if the store was made with
        ``auto_upgrade=True``; otherwise TickerStateError says how to upgrade it.
        """
        if self._engine is None:
            self._engine = self.dialect.create_engine(self.pool_size)
        try:
            await self.dialect.prepare(self._engine, self.auto_upgrade)
        except BaseException:
            engine, self._engine = self._engine, None
            await engine.dispose()
            raise

    async def close(self) -> None:
        """Close every pooled connection (and the LISTEN connection)."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def listen(self, handler: Callable[[str, str], None]) -> None:
        """On PostgreSQL, LISTEN for other nodes' notices."""
        if self.dialect.name != "postgresql" or self._listener is not None:
            return
        self._listener = Listener(self.dialect.plain_url, self.dialect.safe_url, handler)
        await self._listener.start()

    async def _notify(self, conn: AsyncConnection, kind: str, value: object = "") -> None:
        """Tell other nodes, when this transaction commits (PostgreSQL only)."""
        if self.dialect.name == "postgresql":
            payload = f"{kind} {value.isoformat() if isinstance(value, datetime) else value}"
            await conn.execute(select(func.pg_notify(CHANNEL, payload)))

    def _announce(
        self, kind: str, ticker_id: UUID, function: str, status: str, at: datetime
    ) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(TickerChanged(at, TickerKind(kind), ticker_id, function, Status(status)))

    # -- time tickers ------------------------------------------------------------------

    async def add_time_tickers(self, new: Sequence[TimeTicker]) -> None:
        """Insert tickers; children of ended or running parents are resolved at once."""
        if not new:
            return
        batch_ids = {t.id for t in new}
        outside = {t.parent_id for t in new if t.parent_id and t.parent_id not in batch_ids}
        async with self.engine.begin() as conn:
            parent_status: dict[UUID, str] = {}
            if outside:
                rows = await conn.execute(select(T.id, T.status).where(T.id.in_(outside)))
                parent_status = {r.id: r.status for r in rows}
                missing = outside - parent_status.keys()
                if missing:
                    raise TickerNotFoundError("time ticker", next(iter(missing)))
            await conn.execute(
                insert(tickers), [ticker_values(t, t.parent_id is not None) for t in new]
            )
            now = new[0].updated_at
            due = [t.execution_time for t in new if t.execution_time and t.parent_id is None]
            if due:
                await self._notify(conn, "due", min(due))
            for parent_id, status in parent_status.items():
                if Status(status).is_final:
                    await self._resolve_children(conn, parent_id, Status(status), now)
                elif status == RUNNING:
                    await self._start_in_progress_children(conn, [parent_id], now)
        for t in new:
            self._announce(TIME, t.id, t.function, t.status.value, t.created_at)

    async def get_time_ticker(self, ticker_id: UUID) -> TimeTicker | None:
        """One time ticker."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(tickers).where(T.id == ticker_id, T.kind == TIME))
            ).first()
        return ticker_from_row(row) if row is not None else None

    async def update_time_ticker(
        self, ticker_id: UUID, changes: Mapping[str, Any], allowed: frozenset[Status]
    ) -> TimeTicker:
        """Change a ticker whose status is allowed."""
        values = dict(changes)
        if "retry_intervals" in values and values["retry_intervals"] is not None:
            values["retry_intervals"] = list(values["retry_intervals"])
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(tickers)
                    .where(
                        T.id == ticker_id, T.kind == TIME, T.status.in_([s.value for s in allowed])
                    )
                    .values(**values)
                    .returning(tickers)
                )
            ).first()
            if row is None:
                current = await self._status_of(conn, TickerKind.TIME, ticker_id)
                raise TickerStateError(
                    f"time ticker {ticker_id} is {current}; it can be changed only when "
                    + " or ".join(sorted(s.name for s in allowed))
                )
        self._announce(TIME, row.id, row.function, row.status, row.updated_at)
        return ticker_from_row(row)

    async def _status_of(self, conn: AsyncConnection, kind: TickerKind, ticker_id: UUID) -> str:
        status = (
            await conn.execute(select(T.status).where(T.id == ticker_id, T.kind == kind.value))
        ).scalar()
        if status is None:
            raise TickerNotFoundError(_kind_name(kind), ticker_id)
        return str(status)

    async def delete_time_tickers(self, ids: Sequence[UUID]) -> int:
        """Delete tickers with their descendants; refuse if one of them runs."""
        async with self.engine.begin() as conn:
            found = list(
                (await conn.execute(select(T.id).where(T.id.in_(ids), T.kind == TIME))).scalars()
            )
            doomed: list[UUID] = []
            frontier = found
            while frontier:
                doomed.extend(frontier)
                frontier = list(
                    (await conn.execute(select(T.id).where(T.parent_id.in_(frontier)))).scalars()
                )
            if not doomed:
                return 0
            running = (
                await conn.execute(select(T.id).where(T.id.in_(doomed), T.status == RUNNING))
            ).scalar()
            if running is not None:
                raise TickerStateError(
                    f"time ticker {running} is running; cancel it before deleting it"
                )
            await conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(doomed)))
            for chunk in _chunks(list(reversed(doomed)), 500):
                await conn.execute(delete(tickers).where(T.id.in_(chunk)))
        bus = self.events
        if bus is not None and bus.active:
            for ticker_id in doomed:
                bus.publish(TickerDeleted(dialects.utcnow(), TickerKind.TIME, ticker_id))
        return len(doomed)

    def _filtered(self, stmt: Select[Any], query: TickerQuery) -> Select[Any]:
        stmt = stmt.where(T.kind == TIME)
        if query.statuses:
            stmt = stmt.where(T.status.in_([s.value for s in query.statuses]))
        if query.function is not None:
            stmt = stmt.where(T.function == query.function)
        if query.parent_id is not None:
            stmt = stmt.where(T.parent_id == query.parent_id)
        if query.roots_only:
            stmt = stmt.where(T.parent_id.is_(None))
        if query.text:
            pattern = f"%{query.text.lower()}%"
            conditions: list[ColumnElement[bool]] = [
                func.lower(T.function).like(pattern),
                func.lower(T.description).like(pattern),
            ]
            as_id = _maybe_uuid(query.text)
            if as_id is not None:
                conditions.append(T.id == as_id)
            stmt = stmt.where(or_(*conditions))
        return stmt

    async def query_time_tickers(self, query: TickerQuery) -> list[TimeTicker]:
        """Matching tickers, latest execution time first."""
        stmt = (
            self._filtered(select(tickers), query)
            .order_by(T.execution_time.desc(), T.created_at.desc())
            .limit(query.limit)
            .offset(query.offset)
        )
        async with self.engine.connect() as conn:
            return [ticker_from_row(r) for r in await conn.execute(stmt)]

    async def count_time_tickers(self, query: TickerQuery) -> int:
        """How many tickers match."""
        async with self.engine.connect() as conn:
            count = (await conn.execute(self._filtered(select(func.count()), query))).scalar()
        return int(count or 0)

    # -- both kinds ---------------------------------------------------------------------

    async def cancel(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> Status:
        """Cancel a waiting row; flag a running one for its node."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(T.status, T.function)
                    .where(T.id == ticker_id, T.kind == kind.value)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise TickerNotFoundError(_kind_name(kind), ticker_id)
            before = Status(row.status)
            if before.is_final:
                raise TickerStateError(
                    f"{_kind_name(kind)} {ticker_id} has already ended ({before.name})"
                )
            if before in (Status.IN_PROGRESS, Status.QUEUED):
                await conn.execute(
                    update(tickers).where(T.id == ticker_id).values(cancel_requested=True)
                )
                await self._notify(conn, "cancel", ticker_id)
                return before
            await self._finish(
                conn, ticker_id, Status.CANCELLED, now, error_message="cancelled before it started"
            )
        self._announce(kind.value, ticker_id, row.function, Status.CANCELLED.value, now)
        return before

    async def retry_now(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> None:
        """Make a ticker due now again."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tickers)
                .where(T.id == ticker_id, T.kind == kind.value, T.status.not_in([RUNNING, QUEUED]))
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
                .returning(T.function)
            )
            function = result.scalar()
            if function is None:
                status = await self._status_of(conn, kind, ticker_id)
                raise TickerStateError(f"{_kind_name(kind)} {ticker_id} is {status}")
            await self._notify(conn, "due", now)
        self._announce(kind.value, ticker_id, function, IDLE, now)

    async def attempts(self, kind: TickerKind, ticker_id: UUID) -> list[Attempt]:
        """Attempts of one ticker, oldest first."""
        async with self.engine.connect() as conn:
            await self._status_of(conn, kind, ticker_id)
            rows = await conn.execute(
                select(attempts)
                .where(attempts.c.ticker_id == ticker_id)
                .order_by(attempts.c.started_at, attempts.c.id)
            )
            return [attempt_from_row(r) for r in rows]

    # -- cron tickers --------------------------------------------------------------------

    async def add_cron_ticker(self, cron: CronTicker) -> CronTicker:
        """Insert a cron ticker."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(cron_tickers).values(**cron_values(cron)))
        self._announce_cron(cron.id, cron.updated_at)
        return cron

    async def seed_cron_ticker(self, cron: CronTicker) -> CronTicker:
        """Insert unless the same seed key exists (a unique key makes this race-free)."""
        values = cron_values(cron)
        async with self.engine.begin() as conn:
            await conn.execute(self.dialect.insert_ignore(cron_tickers, values))
            row = (
                await conn.execute(
                    select(cron_tickers).where(cron_tickers.c.seed_key == values["seed_key"])
                )
            ).one()
        return cron_from_row(row)

    async def get_cron_ticker(self, cron_id: UUID) -> CronTicker | None:
        """One cron ticker."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(cron_tickers).where(cron_tickers.c.id == cron_id))
            ).first()
        return cron_from_row(row) if row is not None else None

    async def update_cron_ticker(self, cron_id: UUID, changes: Mapping[str, Any]) -> CronTicker:
        """Change a cron ticker."""
        values = dict(changes)
        if values.get("retry_intervals") is not None:
            values["retry_intervals"] = list(values["retry_intervals"])
        if "misfire" in values:
            values["misfire"] = values["misfire"].value
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(cron_tickers)
                    .where(cron_tickers.c.id == cron_id)
                    .values(**values)
                    .returning(cron_tickers)
                )
            ).first()
        if row is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        self._announce_cron(cron_id, row.updated_at)
        return cron_from_row(row)

    async def delete_cron_ticker(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that are not running."""
        async with self.engine.begin() as conn:
            waiting = select(T.id).where(T.cron_ticker_id == cron_id, T.status != RUNNING)
            await conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(waiting)))
            await conn.execute(
                delete(tickers).where(T.cron_ticker_id == cron_id, T.status != RUNNING)
            )
            # running occurrences keep their row until they end, detached from the cron
            await conn.execute(
                update(tickers).where(T.cron_ticker_id == cron_id).values(cron_ticker_id=None)
            )
            result = await conn.execute(delete(cron_tickers).where(cron_tickers.c.id == cron_id))
            if result.rowcount == 0:
                raise TickerNotFoundError("cron ticker", cron_id)
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(dialects.utcnow(), cron_id, deleted=True))

    async def query_cron_tickers(self, function: str | None = None) -> list[CronTicker]:
        """Cron tickers, oldest first."""
        stmt = select(cron_tickers).order_by(cron_tickers.c.created_at, cron_tickers.c.id)
        if function is not None:
            stmt = stmt.where(cron_tickers.c.function == function)
        async with self.engine.connect() as conn:
            return [cron_from_row(r) for r in await conn.execute(stmt)]

    async def due_cron_tickers(self, now: datetime) -> list[CronTicker]:
        """Enabled crons with a fire at or before ``now``."""
        stmt = select(cron_tickers).where(
            cron_tickers.c.enabled.is_(True), cron_tickers.c.next_fire_at <= now
        )
        async with self.engine.connect() as conn:
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
        async with self.engine.begin() as conn:
            cursor = (
                c.next_fire_at.is_(None)
                if expected_next is None
                else c.next_fire_at == expected_next
            )
            cron = (
                await conn.execute(
                    update(cron_tickers)
                    .where(c.id == cron_id, cursor)
                    .values(next_fire_at=new_next)
                    .returning(c.function, c.request, c.retries, c.retry_intervals)
                )
            ).first()
            if cron is None or not fires:
                return 0
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
                result = await conn.execute(self.dialect.insert_ignore(tickers, row))
                created += max(result.rowcount, 0)
        if created:
            for row in rows:
                self._announce(OCCURRENCE, row["id"], row["function"], IDLE, now)
        return created

    async def occurrences(
        self, cron_id: UUID, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """A cron's occurrences, newest fire first."""
        async with self.engine.connect() as conn:
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
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(tickers).where(T.id == occurrence_id, T.kind == OCCURRENCE)
                )
            ).first()
        return occurrence_from_row(row) if row is not None else None

    def _announce_cron(self, cron_id: UUID, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(at, cron_id))

    # -- the engine's work -------------------------------------------------------------

    async def next_due_time(self) -> datetime | None:
        """Earliest waiting row or cron fire."""
        async with self.engine.connect() as conn:
            row_due = (
                await conn.execute(
                    select(func.min(T.execution_time)).where(
                        T.status == IDLE, T.awaiting_parent.is_(False)
                    )
                )
            ).scalar()
            cron_due = (
                await conn.execute(
                    select(func.min(cron_tickers.c.next_fire_at)).where(
                        cron_tickers.c.enabled.is_(True)
                    )
                )
            ).scalar()
        due = [t for t in (row_due, cron_due) if t is not None]
        return dialects.as_utc(min(due)) if due else None

    async def claim(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        capacity: Mapping[str, int],
        functions: Collection[str],
    ) -> list[Job]:
        """Claim due rows, best priority first, with SKIP LOCKED where the database has it."""
        runnable = [f for f in functions if capacity.get(f, 1) > 0]
        if not runnable:
            return []
        claimed: list[Any] = []
        async with self.engine.begin() as conn:
            for long_running in (True, False):
                limit = 1000 if long_running else slots
                if limit <= 0:
                    continue
                pick = (
                    select(T.id)
                    .where(
                        T.status == IDLE,
                        T.awaiting_parent.is_(False),
                        T.execution_time <= now,
                        T.function.in_(runnable),
                        (T.priority == int(Priority.LONG_RUNNING))
                        if long_running
                        else (T.priority < int(Priority.LONG_RUNNING)),
                    )
                    .order_by(T.priority.desc(), T.execution_time)
                    .limit(limit)
                )
                pick = self.dialect.skip_locked(pick)
                rows = await conn.execute(
                    update(tickers)
                    .where(T.id.in_(pick.scalar_subquery()))
                    .values(status=QUEUED, lock_holder=node, locked_at=now, lease_until=lease_until)
                    .returning(*_JOB_COLUMNS)
                )
                claimed.extend(rows)
            claimed.sort(key=lambda r: (-r.priority, r.execution_time))
            extra = _over_capacity(claimed, capacity)
            if extra:
                await conn.execute(
                    update(tickers)
                    .where(T.id.in_([r.id for r in extra]))
                    .values(status=IDLE, lock_holder=None, locked_at=None, lease_until=None)
                )
                claimed = [r for r in claimed if r not in extra]
        jobs = [job_from_row(r) for r in claimed]
        for job in jobs:
            self._announce(job.kind.value, job.id, job.function, QUEUED, now)
        return jobs

    async def mark_started(self, jobs: Sequence[Job], node: str, now: datetime) -> None:
        """QUEUED -> IN_PROGRESS, one attempt row each; IN_PROGRESS children start."""
        if not jobs:
            return
        ids = [j.id for j in jobs]
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tickers)
                .where(T.id.in_(ids), T.lock_holder == node)
                .values(status=RUNNING, executed_at=now, updated_at=now)
            )
            await conn.execute(
                insert(attempts),
                [
                    {
                        "ticker_id": j.id,
                        "kind": j.kind.value,
                        "number": j.retry_count,
                        "node": node,
                        "status": RUNNING,
                        "started_at": now,
                    }
                    for j in jobs
                ],
            )
            parents = [j.id for j in jobs if j.kind is TickerKind.TIME]
            if parents:
                await self._start_in_progress_children(conn, parents, now)
        for job in jobs:
            self._announce(job.kind.value, job.id, job.function, RUNNING, now)

    async def complete(self, outcomes: Sequence[Outcome]) -> None:
        """Write attempts' ends; retries go back to IDLE; finals resolve chains."""
        if not outcomes:
            return
        a = attempts.c
        async with self.engine.begin() as conn:
            for o in outcomes:
                elapsed = (o.finished_at - o.started_at).total_seconds() * 1000.0
                await conn.execute(
                    update(attempts)
                    .where(
                        a.ticker_id == o.job.id, a.number == o.job.retry_count, a.status == RUNNING
                    )
                    .values(
                        status=o.status.value,
                        finished_at=o.finished_at,
                        elapsed_ms=elapsed,
                        error_type=o.error_type,
                        error_message=o.error_message,
                        traceback=o.traceback,
                    )
                )
                mine = and_(T.id == o.job.id, T.lock_holder == o.node)
                common = {
                    "elapsed_ms": elapsed,
                    "error_type": o.error_type,
                    "error_message": o.error_message,
                    "lock_holder": None,
                    "locked_at": None,
                    "lease_until": None,
                    "cancel_requested": False,
                    "updated_at": o.finished_at,
                }
                if o.status is Status.IDLE:
                    await conn.execute(
                        update(tickers)
                        .where(mine)
                        .values(
                            status=IDLE,
                            execution_time=o.retry_at or o.finished_at,
                            retry_count=T.retry_count + (1 if o.counts_as_retry else 0),
                            **common,
                        )
                    )
                    continue
                result = await conn.execute(
                    update(tickers)
                    .where(mine)
                    .values(
                        status=o.status.value,
                        finished_at=o.finished_at,
                        skipped_reason=o.skipped_reason,
                        **common,
                    )
                )
                if result.rowcount and o.job.kind is TickerKind.TIME:
                    await self._resolve_children(conn, o.job.id, o.status, o.finished_at)
        for o in outcomes:
            self._announce(
                o.job.kind.value, o.job.id, o.job.function, o.status.value, o.finished_at
            )

    async def release(self, jobs: Sequence[Job]) -> None:
        """Give back claims that were not started."""
        if not jobs:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tickers)
                .where(T.id.in_([j.id for j in jobs]), T.status == QUEUED)
                .values(status=IDLE, lock_holder=None, locked_at=None, lease_until=None)
            )

    # -- chains -----------------------------------------------------------------------

    async def _finish(
        self,
        conn: AsyncConnection,
        ticker_id: UUID,
        status: Status,
        now: datetime,
        *,
        error_message: str | None = None,
        skipped_reason: str | None = None,
    ) -> None:
        await conn.execute(
            update(tickers)
            .where(T.id == ticker_id)
            .values(
                status=status.value,
                finished_at=now,
                updated_at=now,
                error_message=error_message,
                skipped_reason=skipped_reason,
                lock_holder=None,
                locked_at=None,
                lease_until=None,
            )
        )
        await self._resolve_children(conn, ticker_id, status, now)

    async def _resolve_children(
        self, conn: AsyncConnection, parent_id: UUID, parent: Status, now: datetime
    ) -> None:
        waiting = and_(T.parent_id == parent_id, T.awaiting_parent.is_(True), T.status == IDLE)
        matching = _matching_conditions(parent)
        runs = (
            or_(T.run_condition.in_(matching), T.run_condition.is_(None))
            if (RunCondition.ON_ANY_COMPLETED_STATUS.value in matching)
            else T.run_condition.in_(matching)
        )
        await conn.execute(
            update(tickers)
            .where(waiting, runs)
            .values(
                awaiting_parent=False,
                execution_time=dialects.later_of(T.execution_time, now),
                updated_at=now,
            )
        )
        skipped = await conn.execute(
            update(tickers)
            .where(waiting)
            .values(
                awaiting_parent=False,
                status=Status.SKIPPED.value,
                finished_at=now,
                updated_at=now,
                skipped_reason=literal("run condition ")
                + func.coalesce(T.run_condition, RunCondition.ON_ANY_COMPLETED_STATUS.value)
                + literal(f" did not match the parent's status {parent.name}"),
            )
            .returning(T.id)
        )
        for child_id in list(skipped.scalars()):
            await self._resolve_children(conn, child_id, Status.SKIPPED, now)

    async def _start_in_progress_children(
        self, conn: AsyncConnection, parents: list[UUID], now: datetime
    ) -> None:
        await conn.execute(
            update(tickers)
            .where(
                T.parent_id.in_(parents),
                T.awaiting_parent.is_(True),
                T.status == IDLE,
                T.run_condition == RunCondition.IN_PROGRESS.value,
            )
            .values(
                awaiting_parent=False,
                execution_time=dialects.later_of(T.execution_time, now),
                updated_at=now,
            )
        )

    # -- nodes and leases -------------------------------------------------------------

    async def heartbeat(self, node: Node, running: Sequence[UUID], lease_until: datetime) -> None:
        """Upsert the node row and extend the leases it holds."""
        async with self.engine.begin() as conn:
            await conn.execute(self.dialect.upsert(nodes, node_values(node), key="id"))
            await conn.execute(
                update(tickers)
                .where(T.lock_holder == node.id, T.status.in_([QUEUED, RUNNING]))
                .values(lease_until=lease_until)
            )

    async def reclaim_expired(self, now: datetime) -> int:
        """Rows whose lease ran out go back to IDLE; their open attempt is marked lost."""
        async with self.engine.begin() as conn:
            pick = self.dialect.skip_locked(
                select(T.id).where(T.status.in_([QUEUED, RUNNING]), T.lease_until < now).limit(1000)
            )
            rows = list(
                await conn.execute(
                    update(tickers)
                    .where(T.id.in_(pick.scalar_subquery()))
                    .values(
                        status=IDLE,
                        execution_time=now,
                        lock_holder=None,
                        locked_at=None,
                        lease_until=None,
                        cancel_requested=False,
                        updated_at=now,
                    )
                    .returning(T.id, T.kind, T.function)
                )
            )
            if rows:
                await conn.execute(
                    update(attempts)
                    .where(
                        attempts.c.ticker_id.in_([r.id for r in rows]), attempts.c.status == RUNNING
                    )
                    .values(
                        status=Status.FAILED.value,
                        finished_at=now,
                        error_type="LeaseExpired",
                        error_message="its node stopped heartbeating; it runs again elsewhere",
                    )
                )
        for r in rows:
            logger.warning("reclaimed %s %s: its node's lease ran out", r.function, r.id)
            self._announce(r.kind, r.id, r.function, IDLE, now)
        return len(rows)

    async def nodes(self) -> list[Node]:
        """Every node row."""
        async with self.engine.connect() as conn:
            return [
                node_from_row(r) for r in await conn.execute(select(nodes).order_by(nodes.c.id))
            ]

    async def remove_node(self, node_id: str) -> None:
        """Delete a node row and release the claims it still holds."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tickers)
                .where(T.lock_holder == node_id, T.status == QUEUED)
                .values(status=IDLE, lock_holder=None, locked_at=None, lease_until=None)
            )
            await conn.execute(delete(nodes).where(nodes.c.id == node_id))

    async def purge(self, finished_before: datetime, limit: int) -> int:
        """Delete a batch of old ended rows; rows with a waiting child stay."""
        final = [s.value for s in Status if s.is_final]
        child = tickers.alias("child")
        waiting_child = (
            select(child.c.id)
            .where(child.c.parent_id == T.id, child.c.status.not_in(final))
            .exists()
        )
        async with self.engine.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(T.id)
                        .where(T.status.in_(final), T.finished_at < finished_before, ~waiting_child)
                        .order_by(T.finished_at)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not ids:
                return 0
            await conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(ids)))
            # children that ended are purged with their parent (ON DELETE CASCADE)
            result = await conn.execute(delete(tickers).where(T.id.in_(ids)))
        return max(result.rowcount, len(ids))

    async def cancel_requested(self, ids: Sequence[UUID]) -> list[UUID]:
        """Which running ids were flagged for cancellation."""
        if not ids:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(T.id).where(T.id.in_(ids), T.cancel_requested.is_(True))
            )
            return list(rows.scalars())


def _over_capacity(rows: list[Any], capacity: Mapping[str, int]) -> list[Any]:
    left = dict(capacity)
    extra = []
    for row in rows:
        room = left.get(row.function)
        if room is None:
            continue
        if room <= 0:
            extra.append(row)
        else:
            left[row.function] = room - 1
    return extra


def _chunks(items: list[UUID], size: int) -> list[list[UUID]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _maybe_uuid(text: str) -> UUID | None:
    try:
        return UUID(text.strip())
    except ValueError:
        return None

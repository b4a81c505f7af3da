"""The in-memory store: the default for tests and single-process apps.

Nothing survives the process. Due work sits in a heap by time and, once due,
in one FIFO per priority, so a claim costs O(claimed) rather than a scan.
Entries are invalidated lazily by a version number on each row.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from tickerq.enums import Priority, RunCondition, Status, TickerKind
from tickerq.errors import DuplicateTickerError, TickerNotFoundError, TickerStateError
from tickerq.events import CronTickerChanged, TickerChanged, TickerDeleted
from tickerq.models import Attempt, CronOccurrence, CronTicker, Node, TimeTicker, run_state
from tickerq.stores.base import (
    CRON_BATCH_FIRES,
    CRON_BATCH_SIZE,
    DEFAULT_LOST_RUN,
    LEASE_EXPIRED,
    CronBatch,
    CronPlanner,
    Job,
    LostRunPolicy,
    Outcome,
    SeedResult,
    Store,
    TickerQuery,
    attempt_status,
    lost_run_end,
    resolve_child,
)
from tickerq.stores.seeding import plan_seeding

__all__ = ["MemoryStore"]

_PRIORITIES = (Priority.LONG_RUNNING, Priority.HIGH, Priority.NORMAL, Priority.LOW)
_WAITING = frozenset({Status.IDLE, Status.QUEUED})


class _Row(Job):
    """A time ticker or occurrence as the memory store keeps it (mutable)."""

    __slots__ = (
        "attempts",
        "awaiting_parent",
        "cancel_requested",
        "children",
        "created_at",
        "description",
        "due_ts",
        "elapsed_ms",
        "error_message",
        "error_type",
        "executed_at",
        "finished_at",
        "fire_time",
        "lease_until",
        "lock_holder",
        "locked_at",
        "open_attempt",
        "run_condition",
        "skipped_reason",
        "status",
        "updated_at",
        "version",
    )

    def __init__(self, **kwargs: Any) -> None:
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in Job.__slots__}
        super().__init__(**kwargs)
        self.status: Status = extra.get("status", Status.IDLE)
        self.description: str = extra.get("description", "")
        self.run_condition: RunCondition | None = extra.get("run_condition")
        self.awaiting_parent: bool = extra.get("awaiting_parent", False)
        self.created_at: datetime = extra["created_at"]
        self.updated_at: datetime = extra["updated_at"]
        self.children: list[_Row] = []
        self.attempts: list[Attempt] = []
        self.open_attempt: tuple[str, datetime] | None = None
        self.fire_time: datetime | None = extra.get("fire_time")
        self.version = 0
        self.due_ts = 0.0
        self.cancel_requested = False
        self.lock_holder: str | None = None
        self.locked_at: datetime | None = None
        self.lease_until: datetime | None = None
        self.executed_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.elapsed_ms: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.skipped_reason: str | None = None


class MemoryStore(Store):
    """Keeps everything in this process's memory."""

    def __init__(self) -> None:
        self._rows: dict[UUID, _Row] = {}
        self._crons: dict[UUID, CronTicker] = {}
        self._occurrence_keys: dict[tuple[UUID, datetime], UUID] = {}
        self._cron_occurrences: dict[UUID, list[_Row]] = {}
        self._heap: list[tuple[float, int, _Row, int]] = []
        self._ready: dict[Priority, deque[tuple[_Row, int]]] = {p: deque() for p in _PRIORITIES}
        self._seq = itertools.count()
        self._nodes: dict[str, Node] = {}

    # -- helpers -----------------------------------------------------------------------

    def _schedule(self, row: _Row) -> None:
        """(Re)enter a waiting row in the due heap under a new version."""
        row.version += 1
        if row.status is Status.IDLE and not row.awaiting_parent and row.execution_time:
            row.due_ts = row.execution_time.timestamp()
            heapq.heappush(self._heap, (row.due_ts, next(self._seq), row, row.version))

    def _announce(self, row: _Row, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(TickerChanged(at, row.kind, row.id, row.function, row.status))

    def _row(self, kind: TickerKind, ticker_id: UUID) -> _Row:
        row = self._rows.get(ticker_id)
        if row is None or row.kind is not kind:
            name = "time ticker" if kind is TickerKind.TIME else "cron occurrence"
            raise TickerNotFoundError(name, ticker_id)
        return row

    # -- time tickers ------------------------------------------------------------------

    async def add_time_tickers(self, tickers: Sequence[TimeTicker]) -> None:
        """Store new time tickers; children are linked to parents stored before.

        An id that is stored already (or twice in the batch) raises
        DuplicateTickerError, as the SQL stores' primary key does; nothing is stored.
        """
        batch = set()
        for t in tickers:  # check every id and parent first: all or nothing is stored
            if t.id in batch or t.id in self._rows:
                raise DuplicateTickerError("time ticker", t.id)
            if (
                t.parent_id is not None
                and t.parent_id not in batch
                and t.parent_id not in self._rows
            ):
                raise TickerNotFoundError("time ticker", t.parent_id)
            batch.add(t.id)
        rows = []
        for t in tickers:
            parent = self._rows.get(t.parent_id) if t.parent_id else None
            row = _Row(
                kind=TickerKind.TIME,
                id=t.id,
                function=t.function,
                priority=t.priority,
                request=t.request,
                execution_time=_utc(t.execution_time),
                retries=t.retries,
                retry_intervals=t.retry_intervals,
                retry_count=t.retry_count,
                timeout=t.timeout,
                parent_id=t.parent_id,
                description=t.description,
                run_condition=t.run_condition,
                awaiting_parent=parent is not None,
                status=t.status,
                created_at=_utc(t.created_at),
                updated_at=_utc(t.updated_at),
            )
            self._rows[t.id] = row
            rows.append(row)
            if parent is not None:
                parent.children.append(row)
        for row in rows:
            parent = self._rows.get(row.parent_id) if row.parent_id else None
            if parent is not None and parent.status.is_final:
                self._resolve_child(row, parent.status, row.updated_at)
            elif parent is not None and parent.status is Status.IN_PROGRESS:
                if row.run_condition is RunCondition.IN_PROGRESS:
                    self._release_child(row, row.updated_at)
            else:
                self._schedule(row)
            self._announce(row, row.created_at)

    async def get_time_ticker(self, ticker_id: UUID) -> TimeTicker | None:
        """A snapshot of one time ticker."""
        row = self._rows.get(ticker_id)
        return _time_ticker(row) if row is not None and row.kind is TickerKind.TIME else None

    async def update_time_ticker(
        self, ticker_id: UUID, changes: Mapping[str, Any], allowed: frozenset[Status]
    ) -> TimeTicker:
        """Change a waiting ticker's fields (see Store)."""
        row = self._row(TickerKind.TIME, ticker_id)
        if row.status not in allowed:
            raise TickerStateError(
                f"time ticker {ticker_id} is {row.status.name}; it can be changed only when "
                + " or ".join(sorted(s.name for s in allowed))
            )
        for key, value in changes.items():
            setattr(row, key, _utc(value) if isinstance(value, datetime) else value)
        self._schedule(row)
        self._announce(row, row.updated_at)
        return _time_ticker(row)

    async def delete_time_tickers(self, ids: Sequence[UUID]) -> int:
        """Delete tickers and their descendants; running ones raise TickerStateError."""
        doomed: list[_Row] = []
        for ticker_id in ids:
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not TickerKind.TIME:
                continue
            doomed.extend(_descendants(row))
        for row in doomed:
            if row.status is Status.IN_PROGRESS:
                raise TickerStateError(
                    f"time ticker {row.id} is running; cancel it before deleting it"
                )
        deleted = 0
        for row in doomed:
            if self._rows.pop(row.id, None) is not None:
                deleted += 1
                row.version += 1
                parent = self._rows.get(row.parent_id) if row.parent_id else None
                if parent is not None and row in parent.children:
                    parent.children.remove(row)
                bus = self.events
                if bus is not None and bus.active:
                    bus.publish(TickerDeleted(row.updated_at, row.kind, row.id))
        return deleted

    def _matching(self, query: TickerQuery) -> list[_Row]:
        statuses = set(query.statuses) if query.statuses else None
        text = query.text.lower() if query.text else None
        out = []
        for row in self._rows.values():
            if row.kind is not TickerKind.TIME:
                continue
            if statuses is not None and row.status not in statuses:
                continue
            if query.function is not None and row.function != query.function:
                continue
            if query.parent_id is not None and row.parent_id != query.parent_id:
                continue
            if query.roots_only and row.parent_id is not None:
                continue
            if text is not None and not (
                text in row.function.lower()
                or text in row.description.lower()
                or text in str(row.id)
            ):
                continue
            out.append(row)
        return out

    async def query_time_tickers(self, query: TickerQuery) -> list[TimeTicker]:
        """Matching tickers, newest execution time first, paged."""
        rows = self._matching(query)
        rows.sort(key=_sort_key, reverse=True)
        return [_time_ticker(r) for r in rows[query.offset : query.offset + query.limit]]

    async def count_time_tickers(self, query: TickerQuery) -> int:
        """How many tickers match."""
        return len(self._matching(query))

    # -- both kinds -----------------------------------------------------------------------

    async def cancel(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> Status:
        """Cancel waiting rows now; flag running rows for the engine."""
        row = self._row(kind, ticker_id)
        before = row.status
        if before.is_final:
            raise TickerStateError(
                f"{_kind_name(kind)} {ticker_id} has already ended ({before.name})"
            )
        if before in (Status.IN_PROGRESS, Status.QUEUED):
            row.cancel_requested = True  # its node cancels it
            return before
        self._finish(row, Status.CANCELLED, now, skipped_reason=None)
        row.error_message = "cancelled before it started"
        return before

    async def retry_now(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> None:
        """Make a ticker due now again."""
        row = self._row(kind, ticker_id)
        if row.status in (Status.IN_PROGRESS, Status.QUEUED):
            raise TickerStateError(f"{_kind_name(kind)} {ticker_id} is {row.status.name}")
        row.status = Status.IDLE
        row.execution_time = now
        row.awaiting_parent = False
        row.cancel_requested = False
        row.error_type = row.error_message = row.skipped_reason = None
        row.lock_holder = row.locked_at = row.lease_until = None
        row.updated_at = now
        self._schedule(row)
        self._announce(row, now)

    async def attempts(self, kind: TickerKind, ticker_id: UUID) -> list[Attempt]:
        """Attempts of one ticker, oldest first."""
        row = self._row(kind, ticker_id)
        done = list(row.attempts)
        if row.open_attempt is not None:
            node, started = row.open_attempt
            done.append(
                Attempt(
                    ticker_id=row.id,
                    kind=row.kind,
                    number=row.retry_count,
                    node=node,
                    started_at=started,
                )
            )
        return done

    # -- cron tickers ---------------------------------------------------------------------

    async def add_cron_ticker(self, cron: CronTicker) -> CronTicker:
        """Store a cron ticker (DuplicateTickerError if its id is taken)."""
        if cron.id in self._crons:
            raise DuplicateTickerError("cron ticker", cron.id)
        cron = cron.evolve(
            next_fire_at=_utc(cron.next_fire_at),
            created_at=_utc(cron.created_at),
            updated_at=_utc(cron.updated_at),
        )
        self._crons[cron.id] = cron
        self._cron_occurrences.setdefault(cron.id, [])
        self._announce_cron(cron.id, cron.updated_at)
        return cron

    async def reconcile_seeded_crons(self, declared: Sequence[CronTicker]) -> SeedResult:
        """Make the seeded crons match ``declared`` (see Store); atomic: no await inside."""
        stored = sorted((c for c in self._crons.values() if c.seeded), key=lambda c: c.created_at)
        plan = plan_seeding(stored, declared)
        for cron in plan.delete:
            self._drop_cron(cron.id, keep_ended=True)
        updated, crons = [], []
        for kept, changes in plan.keep:
            if changes:
                kept = await self.update_cron_ticker(kept.id, changes)  # noqa: PLW2901
                updated.append(kept.function)
            crons.append(kept)
        for cron in plan.create:
            crons.append(await self.add_cron_ticker(cron))
        return SeedResult(
            created=tuple(c.function for c in plan.create),
            updated=tuple(updated),
            removed=tuple(c.function for c in plan.delete),
            crons=tuple(crons),
        )

    async def get_cron_ticker(self, cron_id: UUID) -> CronTicker | None:
        """One cron ticker."""
        return self._crons.get(cron_id)

    async def update_cron_ticker(self, cron_id: UUID, changes: Mapping[str, Any]) -> CronTicker:
        """Change a cron ticker."""
        cron = self._crons.get(cron_id)
        if cron is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        cron = cron.evolve(
            **{k: _utc(v) if isinstance(v, datetime) else v for k, v in changes.items()}
        )
        self._crons[cron_id] = cron
        self._announce_cron(cron_id, cron.updated_at)
        return cron

    async def delete_cron_ticker(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that have not started."""
        if cron_id not in self._crons:
            raise TickerNotFoundError("cron ticker", cron_id)
        self._drop_cron(cron_id, keep_ended=False)

    def _drop_cron(self, cron_id: UUID, *, keep_ended: bool) -> None:
        """Delete a cron and its waiting occurrences (and, unless ``keep_ended``, its
        ended ones); a running occurrence stays until it ends."""
        cron = self._crons.pop(cron_id)
        for row in self._cron_occurrences.pop(cron_id, []):
            if row.status is not Status.IN_PROGRESS and not (keep_ended and row.status.is_final):
                self._rows.pop(row.id, None)
                row.version += 1
            self._occurrence_keys.pop((cron_id, row.fire_time), None)  # type: ignore[arg-type]
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(cron.updated_at, cron_id, deleted=True))

    async def query_cron_tickers(self, function: str | None = None) -> list[CronTicker]:
        """Cron tickers, oldest first."""
        crons = [c for c in self._crons.values() if function is None or c.function == function]
        return sorted(crons, key=lambda c: c.created_at)

    async def due_cron_tickers(self, now: datetime) -> list[CronTicker]:
        """Enabled crons with a fire at or before ``now``."""
        return [
            c
            for c in self._crons.values()
            if c.enabled and c.next_fire_at is not None and c.next_fire_at <= now
        ]

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
        """Create occurrences once per fire and move the cursor (compare-and-set)."""
        cron = self._crons.get(cron_id)
        if cron is None or cron.next_fire_at != expected_next:
            return 0
        created = 0
        occurrences = self._cron_occurrences.setdefault(cron_id, [])
        for fire in fires:
            key = (cron_id, fire)
            if key in self._occurrence_keys:
                continue
            row = _Row(
                kind=TickerKind.CRON_OCCURRENCE,
                id=uuid4(),
                function=cron.function,
                priority=priority,
                request=cron.request,
                execution_time=fire,
                retries=cron.retries,
                retry_intervals=cron.retry_intervals,
                retry_count=0,
                timeout=None,
                cron_ticker_id=cron_id,
                fire_time=fire,
                created_at=now,
                updated_at=now,
            )
            self._rows[row.id] = row
            self._occurrence_keys[key] = row.id
            occurrences.append(row)
            self._schedule(row)
            self._announce(row, now)
            created += 1
        self._crons[cron_id] = cron.evolve(next_fire_at=new_next)
        return created

    async def materialize_crons(
        self,
        now: datetime,
        planner: CronPlanner,
        *,
        after: UUID | None = None,
        limit: int = CRON_BATCH_SIZE,
        max_fires: int = CRON_BATCH_FIRES,
    ) -> CronBatch:
        """Plan and advance a batch of due crons in id order (see Store); atomic: nothing
        inside suspends."""
        due = heapq.nsmallest(
            limit + 1,
            (c for c in await self.due_cron_tickers(now) if after is None or c.id > after),
            key=lambda c: c.id,
        )
        created: dict[UUID, int] = {}
        planned = 0
        last: UUID | None = None
        for cron in due[:limit]:
            last = cron.id
            plan = planner(cron)
            if plan is None:
                continue
            created[cron.id] = await self.advance_cron_ticker(
                cron.id,
                expected_next=cron.next_fire_at,
                new_next=plan.new_next,
                fires=plan.fires,
                priority=plan.priority,
                now=now,
            )
            planned += len(plan.fires)
            if planned >= max_fires:
                break
        return CronBatch(created, last, exhausted=not due or last == due[-1].id)

    async def occurrences(
        self, cron_id: UUID, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """Occurrences of a cron, newest first."""
        if cron_id not in self._crons:
            raise TickerNotFoundError("cron ticker", cron_id)
        rows = list(reversed(self._cron_occurrences.get(cron_id, [])))
        return [_occurrence(r) for r in rows[offset : offset + limit]]

    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence | None:
        """One occurrence."""
        row = self._rows.get(occurrence_id)
        if row is None or row.kind is not TickerKind.CRON_OCCURRENCE:
            return None
        return _occurrence(row)

    def _announce_cron(self, cron_id: UUID, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(at, cron_id))

    # -- engine work ---------------------------------------------------------------------

    def _valid(self, row: _Row, version: int) -> bool:
        return (
            row.version == version
            and row.status is Status.IDLE
            and not row.awaiting_parent
            and row.id in self._rows
        )

    async def next_due_time(self, after: datetime | None = None) -> datetime | None:
        """Earliest due time among waiting rows and enabled crons (later than ``after``)."""
        if after is not None:
            return self._next_due_after(after)
        best: datetime | None = None
        for queue in self._ready.values():
            while queue and not self._valid(*queue[0]):
                queue.popleft()
            if queue:
                t = queue[0][0].execution_time
                if t is not None and (best is None or t < best):
                    best = t
        heap = self._heap
        while heap and not self._valid(heap[0][2], heap[0][3]):
            heapq.heappop(heap)
        if heap:
            t = heap[0][2].execution_time
            if t is not None and (best is None or t < best):
                best = t
        for cron in self._crons.values():
            t = cron.next_fire_at
            if cron.enabled and t is not None and (best is None or t < best):
                best = t
        return best

    def _next_due_after(self, after: datetime) -> datetime | None:
        """What is due first after ``after``; rows due by then could not be claimed, so
        the ready FIFOs are looked through (they hold only such rows then)."""
        times = [
            row.execution_time
            for queue in self._ready.values()
            for row, version in queue
            if self._valid(row, version)
        ]
        heap = self._heap
        if heap and heap[0][0] > after.timestamp():
            times.append(heap[0][2].execution_time)
        else:
            times.extend(r.execution_time for _, _, r, v in heap if self._valid(r, v))
        times.extend(c.next_fire_at for c in self._crons.values() if c.enabled)
        later = [t for t in times if t is not None and t > after]
        return min(later, default=None)

    def _move_due(self, now: datetime) -> None:
        """Move rows due by ``now`` from the time heap to their priority's FIFO."""
        now_ts = now.timestamp()
        heap = self._heap
        ready = self._ready
        while heap and heap[0][0] <= now_ts:
            _, _, row, version = heapq.heappop(heap)
            if self._valid(row, version):
                ready[row.priority].append((row, version))

    async def claim(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        capacity: Mapping[str, int],
        functions: Collection[str],
        limits: Mapping[str, int] | None = None,
        finished: Sequence[Outcome] = (),
    ) -> list[Job]:
        """Record ``finished``; move due rows to the ready FIFOs; take and start the
        best up to the limits."""
        if finished:
            await self.complete(finished)
        ready = self._ready
        self._move_due(now)
        claimed: list[Job] = []
        left = dict(capacity)
        for priority in _PRIORITIES:
            queue = ready[priority]
            if not queue:
                continue
            unlimited = priority is Priority.LONG_RUNNING
            held: list[tuple[_Row, int]] = []
            while queue and (unlimited or slots > 0):
                row, version = queue.popleft()
                if not self._valid(row, version):
                    continue
                if row.function not in functions:
                    held.append((row, version))
                    continue
                room = left.get(row.function)
                if room is not None:
                    if room <= 0:
                        held.append((row, version))
                        continue
                    left[row.function] = room - 1
                self._start(row, node, now, lease_until)
                claimed.append(row)
                if not unlimited:
                    slots -= 1
            if held:
                queue.extendleft(reversed(held))
        return claimed

    def _start(self, row: _Row, node: str, now: datetime, lease_until: datetime) -> None:
        """IDLE -> IN_PROGRESS for ``node`` with an open attempt; IN_PROGRESS children start."""
        row.status = Status.IN_PROGRESS
        row.claim += 1
        row.lock_holder = node
        row.locked_at = now
        row.lease_until = lease_until
        row.executed_at = now
        row.updated_at = now
        row.open_attempt = (node, now)
        row.version += 1
        self._announce(row, now)
        for child in row.children:
            if (
                child.awaiting_parent
                and child.status is Status.IDLE
                and child.run_condition is RunCondition.IN_PROGRESS
            ):
                self._release_child(child, now)

    async def complete(self, outcomes: Sequence[Outcome]) -> None:
        """Write each attempt's end and the row's new state."""
        for outcome in outcomes:
            row = self._rows.get(outcome.job.id)
            if row is None or row.lock_holder != outcome.node or row.claim != outcome.claim:
                continue  # gone, or its claim was lost (lease ran out) and maybe renewed
            elapsed = (outcome.finished_at - outcome.started_at).total_seconds() * 1000.0
            if row.open_attempt is not None:
                row.attempts.append(
                    Attempt(
                        ticker_id=row.id,
                        kind=row.kind,
                        number=row.retry_count,
                        node=outcome.node,
                        started_at=row.open_attempt[1],
                        finished_at=outcome.finished_at,
                        status=attempt_status(outcome),
                        elapsed_ms=elapsed,
                        error_type=outcome.error_type,
                        error_message=outcome.error_message,
                        traceback=outcome.traceback,
                    )
                )
                row.open_attempt = None
            row.elapsed_ms = elapsed
            row.error_type = outcome.error_type
            row.error_message = outcome.error_message
            row.lock_holder = row.locked_at = row.lease_until = None
            row.cancel_requested = False
            if outcome.status is Status.IDLE:
                if outcome.counts_as_retry:
                    row.retry_count += 1
                row.status = Status.IDLE
                row.finished_at = None
                row.execution_time = outcome.retry_at or outcome.finished_at
                row.updated_at = outcome.finished_at
                self._schedule(row)
                self._announce(row, outcome.finished_at)
            else:
                self._finish(row, outcome.status, outcome.finished_at, outcome.skipped_reason)

    def _finish(self, row: _Row, status: Status, now: datetime, skipped_reason: str | None) -> None:
        """Put a row in a final status and resolve its waiting children."""
        row.status = status
        row.finished_at = now
        row.updated_at = now
        row.skipped_reason = skipped_reason
        row.lock_holder = row.locked_at = row.lease_until = None
        row.version += 1
        self._announce(row, now)
        for child in row.children:
            if child.awaiting_parent and child.status is Status.IDLE:
                self._resolve_child(child, status, now)

    def _resolve_child(self, child: _Row, parent_status: Status, now: datetime) -> None:
        if child.run_condition is not RunCondition.IN_PROGRESS and resolve_child(
            child.run_condition, parent_status
        ):
            self._release_child(child, now)
            return
        condition = (child.run_condition or RunCondition.ON_ANY_COMPLETED_STATUS).name
        child.awaiting_parent = False
        self._finish(
            child,
            Status.SKIPPED,
            now,
            f"run condition {condition} did not match the parent's status {parent_status.name}",
        )

    def _release_child(self, child: _Row, now: datetime) -> None:
        child.awaiting_parent = False
        if child.execution_time is None or child.execution_time < now:
            child.execution_time = now
        child.updated_at = now
        self._schedule(child)
        self._announce(child, now)

    async def release(self, jobs: Sequence[Job]) -> None:
        """Give back claims that did not run (their open attempt is dropped)."""
        for job in jobs:
            row = self._rows.get(job.id)
            if row is not None and row.status in (Status.QUEUED, Status.IN_PROGRESS):
                row.status = Status.IDLE
                row.lock_holder = row.locked_at = row.lease_until = None
                row.open_attempt = None
                self._schedule(row)
                self._announce(row, row.updated_at)

    # -- nodes ---------------------------------------------------------------------------

    async def heartbeat(
        self, node: Node, running: Sequence[UUID], lease_until: datetime
    ) -> list[UUID]:
        """Record the node; extend its rows' leases; return the ids it no longer holds."""
        self._nodes[node.id] = node
        lost = []
        for ticker_id in running:
            row = self._rows.get(ticker_id)
            if row is not None and row.lock_holder == node.id:
                row.lease_until = lease_until
            else:
                lost.append(ticker_id)
        return lost

    async def reclaim_expired(
        self,
        now: datetime,
        node: str | None = None,
        *,
        policies: Mapping[str, LostRunPolicy] | None = None,
        default: LostRunPolicy = DEFAULT_LOST_RUN,
    ) -> int:
        """Rows with a lapsed lease (or held by ``node``) go back to IDLE, or end."""
        lapsed = [
            row
            for row in self._rows.values()
            if row.status in (Status.QUEUED, Status.IN_PROGRESS)
            and (
                (node is not None and row.lock_holder == node)
                or (node is None and row.lease_until is not None and row.lease_until < now)
            )
        ]
        for row in lapsed:
            self._close_lost_attempt(row, now)
            row.stale_restarts += 1
            row.cancel_requested = False
            end = lost_run_end((policies or {}).get(row.function, default), row.stale_restarts)
            if end is not None:
                row.error_type, row.error_message = "LeaseExpired", end[1]
                self._finish(row, end[0], now, None)
                continue
            row.status = Status.IDLE
            row.lock_holder = row.locked_at = row.lease_until = None
            row.execution_time = now
            row.updated_at = now
            self._schedule(row)
            self._announce(row, now)
        return len(lapsed)

    def _close_lost_attempt(self, row: _Row, now: datetime) -> None:
        if row.open_attempt is None or row.lock_holder is None:
            return
        node, started = row.open_attempt
        row.attempts.append(
            Attempt(
                ticker_id=row.id,
                kind=row.kind,
                number=row.retry_count,
                node=node,
                started_at=started,
                finished_at=now,
                status=Status.FAILED,
                error_type="LeaseExpired",
                error_message=LEASE_EXPIRED,
            )
        )
        row.open_attempt = None

    async def nodes(self) -> list[Node]:
        """Known nodes."""
        return list(self._nodes.values())

    async def remove_node(self, node_id: str) -> None:
        """Forget a node."""
        self._nodes.pop(node_id, None)

    async def purge(self, finished_before: datetime, limit: int) -> int:
        """Delete old ended rows whose chain has ended too."""
        doomed: list[_Row] = []
        for row in self._rows.values():
            if len(doomed) >= limit:
                break
            if (
                row.status.is_final
                and row.finished_at is not None
                and row.finished_at < finished_before
                and all(c.status.is_final for c in _descendants(row))
            ):
                doomed.append(row)
        for row in doomed:
            self._rows.pop(row.id, None)
            row.version += 1
            parent = self._rows.get(row.parent_id) if row.parent_id else None
            if parent is not None and row in parent.children:
                parent.children.remove(row)
            if row.cron_ticker_id is not None and row.execution_time is not None:
                occurrences = self._cron_occurrences.get(row.cron_ticker_id)
                if occurrences is not None and row in occurrences:
                    occurrences.remove(row)
        return len(doomed)

    async def cancel_requested(self, ids: Sequence[UUID]) -> list[UUID]:
        """Running ids flagged for cancellation."""
        return [i for i in ids if (r := self._rows.get(i)) is not None and r.cancel_requested]


def _utc(value: Any) -> Any:
    """An aware datetime in UTC (as the SQL stores return them); anything else unchanged."""
    if isinstance(value, datetime) and value.tzinfo is not UTC and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _descendants(row: _Row) -> list[_Row]:
    out = [row]
    for child in row.children:
        out.extend(_descendants(child))
    return out


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _sort_key(row: _Row) -> tuple[datetime, datetime]:
    return (row.execution_time or _EPOCH, row.created_at)


def _kind_name(kind: TickerKind) -> str:
    return "time ticker" if kind is TickerKind.TIME else "cron occurrence"


def _time_ticker(row: _Row) -> TimeTicker:
    return TimeTicker(
        id=row.id,
        function=row.function,
        execution_time=row.execution_time,
        request=row.request,
        status=row.status,
        priority=row.priority,
        retries=row.retries,
        retry_intervals=row.retry_intervals,
        retry_count=row.retry_count,
        timeout=row.timeout,
        description=row.description,
        parent_id=row.parent_id,
        run_condition=row.run_condition,
        **run_state(row),
    )


def _occurrence(row: _Row) -> CronOccurrence:
    assert row.cron_ticker_id is not None and row.fire_time is not None
    return CronOccurrence(
        id=row.id,
        cron_ticker_id=row.cron_ticker_id,
        function=row.function,
        execution_time=row.fire_time,
        status=row.status,
        retry_count=row.retry_count,
        **run_state(row),
    )

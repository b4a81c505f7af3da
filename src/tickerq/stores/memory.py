"""The in-memory store: the default for tests and single-process apps.

Nothing survives the process. Due work sits in a heap by time and, once due,
in one FIFO per priority, so a claim costs O(claimed) rather than a scan.
Enabled crons sit in a heap by next fire, so neither the engine's wake-ups nor
an enqueue look at every cron. Ended rows sit in a heap by end time: history
is bounded (``history_limit``) and retention purges oldest first, each at
O(log n) a row. Entries are invalidated lazily by a version number on each row.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status, TickerKind
from tickerq.errors import (
    DuplicateTickerError,
    InvalidArgumentError,
    TickerNotFoundError,
    TickerStateError,
)
from tickerq.events import CronTickerChanged, TickerChanged, TickerDeleted
from tickerq.ids import new_id
from tickerq.limits import Gate, Gates
from tickerq.models import CLUSTER, Attempt, CronOccurrence, CronTicker, Node, TimeTicker
from tickerq.operations import CANCEL, RETRY, UPDATE
from tickerq.pausing import unpaused
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
    lost_run_end,
    resolve_child,
)
from tickerq.stores.memory_pauses import MemoryPauses
from tickerq.stores.memory_reads import MemoryReads
from tickerq.stores.memory_rows import (
    CronSchedule,
    EndedRows,
    Row,
    descendants,
    occurrence,
    time_ticker,
    utc,
)
from tickerq.stores.memory_unique import HeldKeys, MemoryUnique
from tickerq.stores.seeding import plan_seeding
from tickerq.unique import KeyHeld

__all__ = ["DEFAULT_HISTORY_LIMIT", "MemoryStore"]

_PRIORITIES = (Priority.LONG_RUNNING, Priority.HIGH, Priority.NORMAL, Priority.LOW)

DEFAULT_HISTORY_LIMIT = 100_000
"""Ended rows a memory store keeps by default (about 1 KB each: ~100 MB at most)."""


class MemoryStore(MemoryUnique, MemoryPauses, MemoryReads, Store):
    """Keeps everything in this process's memory.

    ``history_limit`` bounds the ended rows kept (time tickers and cron
    occurrences that finished, failed, were cancelled or skipped, with their
    attempts): past it, the rows that ended first are dropped as others end.
    A chain goes as a whole, once every row in it has ended, so a chain still
    running can hold the count above the limit for a while. ``None`` keeps
    every ended row (until the engine's ``retention`` purges them).
    """

    immediate = True
    """Every call completes without suspending (the sync facade relies on it)."""

    purge_step = 100
    """Rows the engine's retention purges per call (about 1 ms of the event loop)."""

    def __init__(self, *, history_limit: int | None = DEFAULT_HISTORY_LIMIT) -> None:
        if history_limit is not None and (
            isinstance(history_limit, bool)
            or not isinstance(history_limit, int)
            or history_limit < 0
        ):
            raise InvalidArgumentError(
                f"history_limit must be an integer >= 0 or None, got {history_limit!r}"
            )
        self.history_limit = history_limit
        """Most ended rows kept (None: no limit)."""
        self._rows: dict[UUID, Row] = {}
        self._keyed_running: dict[UUID, Row] = {}
        """Rows started with a concurrency key (those no longer running are dropped
        when a claim counts them)."""
        self._rate_starts: dict[str, list[tuple[datetime, int]]] = {}
        """Starts counted by each rate limit: (when, how many), within its period."""
        self._crons: dict[UUID, CronTicker] = {}
        self._cron_schedule = CronSchedule()
        self._occurrence_keys: dict[tuple[UUID, datetime], UUID] = {}
        self._cron_occurrences: dict[UUID, dict[UUID, Row]] = {}
        self._heap: list[tuple[float, int, Row, int]] = []
        self._ready: dict[Priority, deque[tuple[Row, int]]] = {p: deque() for p in _PRIORITIES}
        self._moved_until = float("-inf")
        """Rows in the ready FIFOs were all due by this time (the last claim's now)."""
        self._seq = itertools.count()
        self._nodes: dict[str, Node] = {}
        self._ended = EndedRows(self._rows)
        self._ended_count = 0
        """Ended rows stored (what ``history_limit`` bounds)."""
        self._pauses = {}
        self._opened = False
        self._held: dict[UUID, Row] = {}
        """Ended chain roots taken out of the end order because a row of their chain
        still waits or runs; they go back in when a row of the chain ends."""
        self._held_keys = HeldKeys(self._rows)

    async def open(self) -> None:
        """Nothing to connect: from now on the store may be used."""
        self._opened = True

    @property
    def is_open(self) -> bool:
        """Whether the store was opened (once opened, it may be read after a stop)."""
        return self._opened

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """The store for ``memory://`` or ``memory://?history_limit=N`` (``none``: no limit)."""
        query = url.split("?", 1)[1] if "?" in url else ""
        options: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name != "history_limit":
                raise InvalidArgumentError(
                    f"unknown option {name!r} in store URL {url!r}; memory:// takes history_limit"
                )
            if value.strip().lower() == "none":
                options[name] = None
                continue
            try:
                options[name] = int(value)
            except ValueError:
                raise InvalidArgumentError(
                    f"history_limit must be an integer >= 0 or 'none', got {value!r} in {url!r}"
                ) from None
        return cls(**options)

    # -- helpers -----------------------------------------------------------------------

    def _schedule(self, row: Row) -> None:
        """(Re)enter a waiting row in the due heap under a new version."""
        row.version += 1
        if row.status is Status.IDLE and not row.awaiting_parent and row.execution_time:
            row.due_ts = row.execution_time.timestamp()
            heapq.heappush(self._heap, (row.due_ts, next(self._seq), row, row.version))

    def _announce(self, row: Row, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(TickerChanged(at, row.kind, row.id, row.function, row.status))

    def _row(self, kind: TickerKind, ticker_id: UUID) -> Row:
        row = self._rows.get(ticker_id)
        if row is None or row.kind is not kind:
            name = "time ticker" if kind is TickerKind.TIME else "cron occurrence"
            raise TickerNotFoundError(name, ticker_id)
        return row

    # -- time tickers ------------------------------------------------------------------

    async def add_time_tickers(self, tickers: Sequence[TimeTicker]) -> None:
        """Store new time tickers; children are linked to parents stored before.

        An id that is stored already (or twice in the batch) raises
        DuplicateTickerError, as the SQL stores' primary key does; a held unique key
        DuplicateJobError; nothing is stored.
        """
        batch = set()
        keyed = False
        for t in tickers:  # check every id and parent first: all or nothing is stored
            keyed = keyed or t.unique_key is not None
            if t.id in batch or t.id in self._rows:
                raise DuplicateTickerError("time ticker", t.id)
            if (
                t.parent_id is not None
                and t.parent_id not in batch
                and t.parent_id not in self._rows
            ):
                raise TickerNotFoundError("time ticker", t.parent_id)
            batch.add(t.id)
        if keyed:
            self._check_new_keys(tickers)
        rows = []
        for t in tickers:
            parent = self._rows.get(t.parent_id) if t.parent_id else None
            row = Row(
                kind=TickerKind.TIME,
                id=t.id,
                function=t.function,
                priority=t.priority,
                request=t.request,
                execution_time=utc(t.execution_time),
                retries=t.retries,
                retry_intervals=t.retry_intervals,
                retry_count=t.retry_count,
                timeout=t.timeout,
                parent_id=t.parent_id,
                description=t.description,
                run_condition=t.run_condition,
                awaiting_parent=parent is not None,
                headers=dict(t.headers) if t.headers else None,
                concurrency_key=t.concurrency_key,
                unique_key=t.unique_key,
                status=t.status,
                created_at=utc(t.created_at),
                updated_at=utc(t.updated_at),
            )
            self._rows[t.id] = row
            if keyed:
                self._held_keys.hold(row)
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
        self._trim()

    async def get_time_ticker(self, ticker_id: UUID) -> TimeTicker | None:
        """A snapshot of one time ticker."""
        row = self._rows.get(ticker_id)
        return time_ticker(row) if row is not None and row.kind is TickerKind.TIME else None

    async def get_time_tickers(self, ids: Sequence[UUID]) -> dict[UUID, TimeTicker]:
        """Snapshots of the time tickers of ``ids`` that exist."""
        return {
            i: time_ticker(row)
            for i in ids
            if (row := self._rows.get(i)) is not None and row.kind is TickerKind.TIME
        }

    async def update_time_tickers(
        self,
        changes: Mapping[UUID, Mapping[str, Any]],
        allowed: frozenset[Status] = UPDATE.allowed,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Change the waiting tickers among ``changes`` (see Store)."""
        out: dict[UUID, tuple[Status, str]] = {}
        refused = self._refused_updates(changes, allowed)
        if held_by is not None:
            held_by.update(refused)
        for ticker_id, fields in changes.items():
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not TickerKind.TIME:
                continue
            out[ticker_id] = (row.status, row.function)
            if row.status not in allowed or ticker_id in refused:
                continue
            for key, value in fields.items():
                if key == "headers":
                    row.headers = dict(value) if value else {}
                    continue
                setattr(row, key, utc(value) if isinstance(value, datetime) else value)
            self._held_keys.hold(row)
            self._schedule(row)
            self._announce(row, row.updated_at)
        return out

    async def delete_time_tickers(self, ids: Sequence[UUID]) -> int:
        """Delete tickers and their descendants; running ones raise TickerStateError."""
        doomed: list[Row] = []
        for ticker_id in ids:
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not TickerKind.TIME:
                continue
            doomed.extend(descendants(row))
        for row in doomed:
            if row.status is Status.IN_PROGRESS:
                raise TickerStateError(
                    f"time ticker {row.id} is running; cancel it before deleting it"
                )
        deleted = 0
        for row in doomed:
            if self._rows.get(row.id) is row:
                deleted += 1
                parent = self._rows.get(row.parent_id) if row.parent_id else None
                self._forget(row)
                if parent is not None and row in parent.children:
                    parent.children.remove(row)
                    self._recheck_chain(parent)  # its chain may have no waiting row left
                bus = self.events
                if bus is not None and bus.active:
                    bus.publish(TickerDeleted(row.updated_at, row.kind, row.id))
        if deleted:
            self._trim()  # an ended chain whose last waiting row went may go now
        return deleted

    # -- both kinds -----------------------------------------------------------------------

    async def cancel_many(
        self, kind: TickerKind, ids: Sequence[UUID], now: datetime
    ) -> dict[UUID, tuple[Status, str]]:
        """Cancel waiting rows now; flag running rows for the engine (see Store)."""
        found: dict[UUID, tuple[Status, str]] = {}
        for ticker_id in ids:
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not kind or ticker_id in found:
                continue
            before = row.status
            found[ticker_id] = (before, row.function)
            if not CANCEL.allows(before):
                continue
            if before is Status.IN_PROGRESS:
                row.cancel_requested = True  # its node cancels it
                continue
            self._finish(row, Status.CANCELLED, now, skipped_reason=None)
            row.error_message = "cancelled before it started"
        self._trim()
        return found

    async def retry_many(
        self,
        kind: TickerKind,
        ids: Sequence[UUID],
        now: datetime,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Make rows due now again (see Store)."""
        found: dict[UUID, tuple[Status, str]] = {}
        again: list[Row] = []
        for ticker_id in ids:
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not kind or ticker_id in found:
                continue
            found[ticker_id] = (row.status, row.function)
            if RETRY.allows(row.status):
                again.append(row)
        refused = self._refused_retries(row for row in again if row.unique_key is not None)
        if held_by is not None:
            held_by.update(refused)
        for row in again:
            if row.id in refused:
                continue
            if row.status.is_final:
                self._ended_count -= 1
                self._held.pop(row.id, None)
            row.status = Status.IDLE
            row.execution_time = now
            row.awaiting_parent = False
            row.cancel_requested = False
            row.error_type = row.error_message = row.skipped_reason = None
            row.lock_holder = row.locked_at = row.lease_until = None
            row.updated_at = now
            self._held_keys.hold(row)
            self._schedule(row)
            self._announce(row, now)
        return found

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
            next_fire_at=utc(cron.next_fire_at),
            created_at=utc(cron.created_at),
            updated_at=utc(cron.updated_at),
        )
        self._store_cron(cron)
        self._cron_occurrences.setdefault(cron.id, {})
        self._announce_cron(cron.id, cron.updated_at)
        return cron

    def _store_cron(self, cron: CronTicker) -> None:
        """Keep ``cron`` (a new object on every change) and enter it in the schedule."""
        self._crons[cron.id] = cron
        schedule = self._cron_schedule
        schedule.push(cron)
        if len(schedule) > 2 * len(self._crons) + 64:  # mostly stale entries: start over
            schedule.rebuild(iter(self._crons.values()))

    async def reconcile_seeded_crons(self, declared: Sequence[CronTicker]) -> SeedResult:
        """Make the seeded crons match ``declared`` (see Store); atomic: no await inside."""
        stored = sorted((c for c in self._crons.values() if c.seeded), key=lambda c: c.created_at)
        plan = plan_seeding(stored, declared)
        for cron in plan.delete:
            self._drop_cron(cron.id, keep_ended=True)
        updated, crons = [], []
        for kept, changes in plan.keep:
            if changes:
                kept = await self.update_cron_ticker(  # noqa: PLW2901
                    kept.id, changes, take_back_after=changes.get("updated_at")
                )
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

    async def update_cron_ticker(
        self,
        cron_id: UUID,
        changes: Mapping[str, Any],
        *,
        take_back_after: datetime | None = None,
    ) -> CronTicker:
        """Change a cron ticker (and take back the occurrences made ahead: see Store)."""
        cron = self._crons.get(cron_id)
        if cron is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        values = {k: utc(v) if isinstance(v, datetime) else v for k, v in changes.items()}
        if take_back_after is not None:
            fires = self._take_back(cron_id, utc(take_back_after))
            if fires and "next_fire_at" not in values:
                values["next_fire_at"] = min(fires)
        cron = cron.evolve(**values)
        self._store_cron(cron)
        self._announce_cron(cron_id, cron.updated_at)
        return cron

    def _take_back(self, cron_id: UUID, after: datetime) -> list[datetime]:
        """Delete the cron's occurrences made ahead of their fire (due after ``after``,
        never claimed); their fire times."""
        ahead = [
            row
            for row in self._cron_occurrences.get(cron_id, {}).values()
            if row.status is Status.IDLE
            and row.claim == 0
            and row.fire_time is not None
            and row.execution_time is not None
            and row.execution_time > after
        ]
        bus = self.events
        for row in ahead:
            self._forget(row)
            if bus is not None and bus.active:
                bus.publish(TickerDeleted(after, row.kind, row.id))
        return [row.fire_time for row in ahead if row.fire_time is not None]

    async def delete_cron_ticker(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that have not started."""
        if cron_id not in self._crons:
            raise TickerNotFoundError("cron ticker", cron_id)
        self._drop_cron(cron_id, keep_ended=False)

    def _drop_cron(self, cron_id: UUID, *, keep_ended: bool) -> None:
        """Delete a cron and its waiting occurrences (and, unless ``keep_ended``, its
        ended ones); a running occurrence stays until it ends."""
        cron = self._crons.pop(cron_id)
        for row in self._cron_occurrences.pop(cron_id, {}).values():
            if row.status is not Status.IN_PROGRESS and not (keep_ended and row.status.is_final):
                self._forget(row)
            self._occurrence_keys.pop((cron_id, row.fire_time), None)  # type: ignore[arg-type]
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(cron.updated_at, cron_id, deleted=True))

    async def query_cron_tickers(self, function: str | None = None) -> list[CronTicker]:
        """Cron tickers, oldest first."""
        crons = [c for c in self._crons.values() if function is None or c.function == function]
        return sorted(crons, key=lambda c: c.created_at)

    async def due_cron_tickers(self, now: datetime) -> list[CronTicker]:
        """Enabled crons with a fire at or before ``now`` (O(log n) a due cron)."""
        return self._cron_schedule.due(self._crons, now)

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
        occurrences = self._cron_occurrences.setdefault(cron_id, {})
        for fire in fires:
            key = (cron_id, fire)
            if key in self._occurrence_keys:
                continue
            row = Row(
                kind=TickerKind.CRON_OCCURRENCE,
                id=new_id(),
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
            occurrences[row.id] = row
            self._schedule(row)
            self._announce(row, now)
            created += 1
        self._store_cron(cron.evolve(next_fire_at=new_next))
        return created

    async def materialize_crons(
        self,
        now: datetime,
        planner: CronPlanner,
        *,
        after: UUID | None = None,
        limit: int = CRON_BATCH_SIZE,
        max_fires: int = CRON_BATCH_FIRES,
        until: datetime | None = None,
    ) -> CronBatch:
        """Plan and advance a batch of due crons in id order (see Store); atomic: nothing
        inside suspends."""
        horizon = now if until is None else max(now, until)
        due = heapq.nsmallest(
            limit + 1,
            (c for c in await self.due_cron_tickers(horizon) if after is None or c.id > after),
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
        rows = reversed(self._cron_occurrences.get(cron_id, {}).values())
        return [occurrence(r) for r in itertools.islice(rows, offset, offset + limit)]

    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence | None:
        """One occurrence."""
        row = self._rows.get(occurrence_id)
        if row is None or row.kind is not TickerKind.CRON_OCCURRENCE:
            return None
        return occurrence(row)

    def _announce_cron(self, cron_id: UUID, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(at, cron_id))

    # -- engine work ---------------------------------------------------------------------

    @staticmethod
    def _valid(row: Row, version: int) -> bool:
        """Whether a queue entry still stands for a waiting row (every change of a row,
        its removal included, bumps its version)."""
        return row.version == version and row.status is Status.IDLE and not row.awaiting_parent

    async def next_due_time(
        self,
        after: datetime | None = None,
        *,
        cron_lead: timedelta = timedelta(0),
        paused: Collection[str] = (),
    ) -> datetime | None:
        """Earliest due time among waiting rows and enabled crons (later than ``after``;
        a cron is due ``cron_lead`` before its next fire; rows of ``paused`` functions
        left out, every row for :data:`~tickerq.models.CLUSTER`)."""
        if paused:
            return self._next_due_unpaused(after, cron_lead, paused)
        if after is not None:
            return self._next_due_after(after, cron_lead)
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
        t = self._cron_schedule.first_after(self._crons, None)
        if t is not None and (best is None or t - cron_lead < best):
            best = t - cron_lead
        return best

    def _next_due_unpaused(
        self, after: datetime | None, cron_lead: timedelta, paused: Collection[str]
    ) -> datetime | None:
        """:meth:`next_due_time` with the rows of ``paused`` functions left out: the
        heap is walked past them (and past rows due by ``after``), then restored."""
        times: list[datetime | None] = []
        if CLUSTER not in paused:
            after_ts = float("-inf") if after is None else after.timestamp()
            if after_ts < self._moved_until:
                times.extend(
                    row.execution_time
                    for queue in self._ready.values()
                    for row, version in queue
                    if self._valid(row, version) and row.function not in paused
                )
            heap = self._heap
            passed = []
            while heap and (
                heap[0][0] <= after_ts
                or not self._valid(heap[0][2], heap[0][3])
                or heap[0][2].function in paused
            ):
                entry = heapq.heappop(heap)
                if self._valid(entry[2], entry[3]):
                    passed.append(entry)
            if heap:
                times.append(heap[0][2].execution_time)
            for entry in passed:
                heapq.heappush(heap, entry)
        fire = self._cron_schedule.first_after(
            self._crons, None if after is None else after + cron_lead
        )
        times.append(None if fire is None else fire - cron_lead)
        later = [t for t in times if t is not None and (after is None or t > after)]
        return min(later, default=None)

    def _next_due_after(self, after: datetime, cron_lead: timedelta) -> datetime | None:
        """What is due first after ``after``. Rows due by then could not be claimed; the
        ready FIFOs hold only rows due by the last claim, so they count only when
        ``after`` is earlier than that claim (never, from the engine)."""
        after_ts = after.timestamp()
        times: list[datetime | None] = []
        if after_ts < self._moved_until:
            times.extend(
                row.execution_time
                for queue in self._ready.values()
                for row, version in queue
                if self._valid(row, version)
            )
        heap = self._heap
        passed = []  # current entries due by ``after``: not the answer, put back after
        while heap and (heap[0][0] <= after_ts or not self._valid(heap[0][2], heap[0][3])):
            entry = heapq.heappop(heap)
            if self._valid(entry[2], entry[3]):
                passed.append(entry)
        if heap:
            times.append(heap[0][2].execution_time)
        for entry in passed:
            heapq.heappush(heap, entry)
        fire = self._cron_schedule.first_after(self._crons, after + cron_lead)
        times.append(None if fire is None else fire - cron_lead)
        later = [t for t in times if t is not None and t > after]
        return min(later, default=None)

    def _move_due(self, now: datetime) -> None:
        """Move rows due by ``now`` from the time heap to their priority's FIFO."""
        now_ts = now.timestamp()
        self._moved_until = max(self._moved_until, now_ts)
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
        gates: Gates | None = None,
    ) -> list[Job]:
        """Record ``finished``; move due rows to the ready FIFOs; take and start the
        best up to the limits."""
        if finished:
            await self.complete(finished)
        functions = unpaused(functions, self._pauses)  # as stored now
        ready = self._ready
        self._move_due(now)
        claimed: list[Job] = []
        left = dict(capacity)
        gate = self._open_gate(gates, functions, now)
        for priority in _PRIORITIES:
            queue = ready[priority]
            if not queue:
                continue
            unlimited = priority is Priority.LONG_RUNNING
            held: list[tuple[Row, int]] = []
            while queue and (unlimited or slots > 0):
                row, version = queue.popleft()
                if not self._valid(row, version):
                    continue
                room = left.get(row.function)
                if (
                    row.function not in functions
                    or (room is not None and room <= 0)
                    or (gate is not None and not gate.admit(row.function, row.concurrency_key))
                ):
                    held.append((row, version))
                    continue
                if room is not None:
                    left[row.function] = room - 1
                self._start(row, node, now, lease_until)
                claimed.append(row)
                if not unlimited:
                    slots -= 1
            if held:
                queue.extendleft(reversed(held))
        if gate is not None:
            self._close_gate(gate)
        return claimed

    def _close_gate(self, gate: Gate) -> None:
        """Keep the starts the claim counted, one entry per slot of each limit."""
        for bucket, count in gate.taken().items():
            stored = self._rate_starts.setdefault(bucket, [])
            at = gate.gates.stored_at(bucket, gate.now)
            if stored and stored[-1][0] == at:
                stored[-1] = (at, stored[-1][1] + count)
            else:
                stored.append((at, count))
        gate.close()

    async def rate_usage(self, periods: Mapping[str, timedelta], now: datetime) -> dict[str, int]:
        """Starts counted by each rate limit within its period."""
        return {
            bucket: sum(n for at, n in self._rate_starts.get(bucket, ()) if at > now - per)
            for bucket, per in periods.items()
        }

    def _open_gate(
        self, gates: Gates | None, functions: Collection[str], now: datetime
    ) -> Gate | None:
        """The claim's gate when ``functions`` have limits: the recent starts of each
        rate limit (older ones dropped) and the running rows of each concurrency key."""
        if gates is None:
            return None
        gates.blocked_until, gates.blocked = None, False
        if not gates.applies_to(functions):
            return None
        starts: list[tuple[str, datetime, int]] = []
        for bucket, rate in gates.buckets.items():
            kept = [(at, n) for at, n in self._rate_starts.get(bucket, ()) if at > now - rate.per]
            self._rate_starts[bucket] = kept
            starts.extend((bucket, at, n) for at, n in kept)
        running: dict[tuple[str, str], int] = {}
        for ident, row in list(self._keyed_running.items()):
            if row.status is not Status.IN_PROGRESS or self._rows.get(ident) is not row:
                del self._keyed_running[ident]
            elif row.concurrency_key is not None:
                key = (row.function, row.concurrency_key)
                running[key] = running.get(key, 0) + 1
        return Gate(gates, now, starts, running)

    def _start(self, row: Row, node: str, now: datetime, lease_until: datetime) -> None:
        """IDLE -> IN_PROGRESS for ``node`` with an open attempt; IN_PROGRESS children start."""
        if row.concurrency_key is not None:
            self._keyed_running[row.id] = row
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
            elapsed = outcome.elapsed_ms
            if row.open_attempt is not None:
                row.attempts.append(
                    Attempt(
                        ticker_id=row.id,
                        kind=row.kind,
                        number=row.retry_count,
                        node=outcome.node,
                        started_at=row.open_attempt[1],
                        finished_at=outcome.finished_at,
                        status=outcome.attempt_status,
                        elapsed_ms=elapsed,
                        error_type=outcome.error_type,
                        error_message=outcome.error_message,
                        traceback=outcome.traceback,
                        result=outcome.result,
                    )
                )
                row.open_attempt = None
            row.elapsed_ms = elapsed
            row.result = outcome.result
            row.error_type = outcome.error_type
            row.error_message = outcome.error_message
            row.lock_holder = row.locked_at = row.lease_until = None
            row.cancel_requested = False
            if outcome.next_run_at is not None:
                row.retry_count += outcome.retry_increment
                row.status = Status.IDLE
                row.finished_at = None
                row.execution_time = outcome.next_run_at
                row.updated_at = outcome.finished_at
                self._schedule(row)
                self._announce(row, outcome.finished_at)
            else:
                self._finish(row, outcome.status, outcome.finished_at, outcome.skipped_reason)
        self._trim()

    def _finish(self, row: Row, status: Status, now: datetime, skipped_reason: str | None) -> None:
        """Put a row in a final status and resolve its waiting children."""
        if not row.status.is_final:
            self._ended_count += 1
        row.status = status
        row.finished_at = now
        row.updated_at = now
        row.skipped_reason = skipped_reason
        row.lock_holder = row.locked_at = row.lease_until = None
        row.version += 1
        self._ended.push(row)
        self._announce(row, now)
        for child in row.children:
            if child.awaiting_parent and child.status is Status.IDLE:
                self._resolve_child(child, status, now)
        if row.parent_id is not None:
            self._recheck_chain(row)

    def _resolve_child(self, child: Row, parent_status: Status, now: datetime) -> None:
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

    def _release_child(self, child: Row, now: datetime) -> None:
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
            if row is not None and row.status is Status.IN_PROGRESS:
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
            if row.status is Status.IN_PROGRESS
            and (
                (node is not None and row.lock_holder == node)
                or (node is None and row.lease_until is not None and row.lease_until < now)
            )
        ]
        for row in lapsed:
            self._close_lost_attempt(row, now)
            row.result = None  # the lost run returned nothing
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
        self._trim()
        return len(lapsed)

    def _close_lost_attempt(self, row: Row, now: datetime) -> None:
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
        """Delete old ended chains (or single rows) oldest first, at O(log n) a row.

        A chain goes as a whole, when its root's turn comes and every row in it
        has ended (waiting chain children keep their parent); the count includes
        the chain's rows.
        """
        before = finished_before.timestamp()
        dropped = 0
        while dropped < limit:
            root = self._oldest_droppable(before)
            if root is None:
                break
            dropped += self._drop_chain(root)
        return dropped

    # -- bounded history -------------------------------------------------------------------

    def _trim(self) -> None:
        """Drop the chains that ended first until at most ``history_limit`` ended rows
        are kept (amortized O(log n) a row: each ended row is dropped once)."""
        limit = self.history_limit
        while limit is not None and self._ended_count > limit:
            root = self._oldest_droppable(None)
            if root is None:
                break  # the rest are in chains that still run
            self._drop_chain(root)

    def _oldest_droppable(self, before: float | None) -> Row | None:
        """The ended chain root that ended first (before ``before``) whose chain has
        ended too. Roots of chains still running are held aside until a row of
        theirs ends; ended rows inside a chain go with their root, not alone."""
        while (row := self._ended.pop_oldest(before)) is not None:
            if self._rows.get(row.id) is not row:
                continue
            parent = self._rows.get(row.parent_id) if row.parent_id is not None else None
            if parent is not None:
                continue  # dropped with its chain's root
            if row.children and not all(r.status.is_final for r in descendants(row)):
                self._held[row.id] = row
                continue
            return row
        return None

    def _recheck_chain(self, row: Row) -> None:
        """A row of a chain ended or went: its root, if held aside, may go now."""
        root = row
        while root.parent_id is not None and (parent := self._rows.get(root.parent_id)):
            root = parent
        held = self._held.pop(root.id, None)
        if held is not None and held.status.is_final:
            self._ended.push(held)

    def _drop_chain(self, root: Row) -> int:
        """Delete ``root`` (ended, with no stored parent) and its chain; how many rows went."""
        chain = descendants(root)
        for row in chain:
            self._forget(row)
        return len(chain)

    def _forget(self, row: Row) -> None:
        """Take ``row`` out of every structure of the store (not out of its parent's
        children: the caller does that when the parent stays)."""
        if self._rows.pop(row.id, None) is None:
            return
        if row.unique_key is not None:
            self._held_keys.forget(row)
        row.version += 1  # retires its entries in the due heap, FIFOs and end order
        if row.status.is_final:
            self._ended_count -= 1
        self._held.pop(row.id, None)
        if row.cron_ticker_id is not None:
            occurrences = self._cron_occurrences.get(row.cron_ticker_id)
            if occurrences is not None:
                occurrences.pop(row.id, None)
            if row.fire_time is not None:
                key = (row.cron_ticker_id, row.fire_time)
                if self._occurrence_keys.get(key) == row.id:
                    del self._occurrence_keys[key]

    async def cancel_requested(self, ids: Sequence[UUID]) -> list[UUID]:
        """Running ids flagged for cancellation."""
        return [i for i in ids if (r := self._rows.get(i)) is not None and r.cancel_requested]

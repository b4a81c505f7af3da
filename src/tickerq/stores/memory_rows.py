"""The memory store's rows and the ordered indexes it keeps over them.

Rows are mutable objects; an index entry carries the row's ``version`` when it
was made, so an entry whose row changed since is stale and skipped when it
comes up (lazy invalidation: no index is ever searched to remove an entry).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status, TickerKind
from tickerq.models import Attempt, CronOccurrence, CronTicker, TimeTicker, run_state
from tickerq.stores.base import Job

__all__ = [
    "CronSchedule",
    "EndedRows",
    "Row",
    "descendants",
    "occurrence",
    "sort_key",
    "time_ticker",
    "utc",
]


class Row(Job):
    """A time ticker or occurrence as the memory store keeps it (mutable)."""

    __slots__ = (
        "attempts",
        "awaiting_parent",
        "cancel_requested",
        "children",
        "concurrency_key",
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
        "result",
        "run_condition",
        "skipped_reason",
        "status",
        "unique_key",
        "updated_at",
        "version",
    )

    def __init__(
        self,
        *,
        kind: TickerKind,
        id: UUID,
        function: str,
        priority: Priority,
        request: Any,
        execution_time: datetime | None,
        retries: int,
        retry_intervals: tuple[float, ...] | None,
        retry_count: int,
        timeout: float | None,
        created_at: datetime,
        updated_at: datetime,
        cron_ticker_id: UUID | None = None,
        parent_id: UUID | None = None,
        fire_time: datetime | None = None,
        status: Status = Status.IDLE,
        description: str = "",
        run_condition: RunCondition | None = None,
        awaiting_parent: bool = False,
        headers: dict[str, str] | None = None,
        concurrency_key: str | None = None,
        unique_key: str | None = None,
    ) -> None:
        # Explicit arguments (no **kwargs sorting): a row is made for every enqueue.
        super().__init__(
            kind=kind,
            id=id,
            function=function,
            priority=priority,
            request=request,
            execution_time=execution_time,
            retries=retries,
            retry_intervals=retry_intervals,
            retry_count=retry_count,
            timeout=timeout,
            cron_ticker_id=cron_ticker_id,
            parent_id=parent_id,
            headers=headers,
        )
        self.status = status
        self.description = description
        self.run_condition = run_condition
        self.awaiting_parent = awaiting_parent
        self.created_at = created_at
        self.updated_at = updated_at
        self.children: list[Row] = []
        self.attempts: list[Attempt] = []
        self.open_attempt: tuple[str, datetime] | None = None
        self.fire_time = fire_time
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
        self.result: Any = None
        """What the last attempt returned (JSON), None while none succeeded."""
        self.concurrency_key = concurrency_key
        self.unique_key = unique_key


def utc(value: Any) -> Any:
    """An aware datetime in UTC (as the SQL stores return them); anything else unchanged."""
    if isinstance(value, datetime) and value.tzinfo is not UTC and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def descendants(row: Row) -> list[Row]:
    out = [row]
    for child in row.children:
        out.extend(descendants(child))
    return out


_EPOCH = datetime.min.replace(tzinfo=UTC)


def sort_key(row: Row) -> tuple[datetime, datetime, UUID]:
    """The list order, reversed: sorted with ``reverse=True`` it puts the latest
    execution time first (none last), then the latest created, then the highest id."""
    return (row.execution_time or _EPOCH, row.created_at, row.id)


def time_ticker(row: Row) -> TimeTicker:
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
        headers=dict(row.headers) if row.headers else {},  # a copy: the row keeps its own
        result=row.result,
        concurrency_key=row.concurrency_key,
        unique_key=row.unique_key,
        **run_state(row),
    )


def occurrence(row: Row) -> CronOccurrence:
    assert row.cron_ticker_id is not None and row.fire_time is not None
    return CronOccurrence(
        id=row.id,
        cron_ticker_id=row.cron_ticker_id,
        function=row.function,
        execution_time=row.fire_time,
        status=row.status,
        retry_count=row.retry_count,
        result=row.result,
        **run_state(row),
    )


class EndedRows:
    """Ended rows in the order they ended (``finished_at``): what bounded history and
    retention drop, oldest first, at O(log n) a row and never by walking every row.

    An entry is current while its row is still stored and keeps the version it had
    when it ended (a retry or a drop bumps the version and so retires the entry).

    Entries are plain ints, not tuples: the heap holds ``finished (us) << 40 | seq``
    and a dict maps ``seq`` to ``row id << 32 | version``. A tuple per ended row
    would be one more object for the garbage collector per job, enough to make it
    run often during a drain (it cost about a fifth of the in-memory drain rate).
    """

    __slots__ = ("_entries", "_heap", "_rows", "_seq")

    def __init__(self, rows: dict[UUID, Row]) -> None:
        self._heap: list[int] = []
        self._entries: dict[int, int] = {}
        self._rows = rows
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, row: Row) -> None:
        """Note that ``row`` has just ended (its ``finished_at`` is set)."""
        assert row.finished_at is not None
        seq = next(self._seq) & _SEQ_MASK
        finished = round(row.finished_at.timestamp() * 1_000_000) - _MIN_US
        heapq.heappush(self._heap, finished << 40 | seq)
        self._entries[seq] = row.id.int << 32 | (row.version & _VERSION_MASK)

    def pop_oldest(self, before: float | None = None) -> Row | None:
        """The row that ended first (and before ``before``, a timestamp), taken out of
        the order; None when there is none. Stale entries met on the way are dropped."""
        heap = self._heap
        limit = None if before is None else round(before * 1_000_000) - _MIN_US
        while heap:
            top = heap[0]
            if limit is not None and top >> 40 >= limit:
                return None
            heapq.heappop(heap)
            entry = self._entries.pop(top & _SEQ_MASK)
            row = self._rows.get(UUID(int=entry >> 32))
            if (
                row is not None
                and row.status.is_final
                and (row.version ^ entry) & _VERSION_MASK == 0
            ):
                return row
        return None


_SEQ_MASK = (1 << 40) - 1
_VERSION_MASK = (1 << 32) - 1
_MIN_US = round(datetime.min.replace(tzinfo=UTC).timestamp() * 1_000_000)
"""Timestamps are stored as microseconds after year 1 (never negative)."""


class CronSchedule:
    """Enabled cron tickers by next fire time, so the engine's "what is due next" and
    "which crons are due" cost O(log n) whatever the number of crons.

    Cron tickers are immutable: every change stores a new object. An entry is
    current while the store still holds that very object for its id (and it is
    enabled, with a next fire); any other entry is stale and dropped when met.
    """

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, CronTicker]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, cron: CronTicker) -> None:
        """Enter the cron (as just stored) under its next fire time, if it has one."""
        if cron.enabled and cron.next_fire_at is not None:
            heapq.heappush(self._heap, (cron.next_fire_at.timestamp(), next(self._seq), cron))

    def rebuild(self, crons: Iterator[CronTicker]) -> None:
        """Start over from the stored crons (drops every stale entry at once)."""
        self._heap = []
        for cron in crons:
            self.push(cron)

    def _drop_stale(self, crons: dict[Any, CronTicker]) -> None:
        heap = self._heap
        while heap and crons.get(heap[0][2].id) is not heap[0][2]:
            heapq.heappop(heap)

    def due(self, crons: dict[Any, CronTicker], now: datetime) -> list[CronTicker]:
        """Enabled crons whose next fire is at or before ``now``, earliest first (they
        stay in the schedule: only advancing a cron moves it)."""
        return self._take(crons, now, keep=True)

    def first_after(self, crons: dict[Any, CronTicker], after: datetime | None) -> datetime | None:
        """The earliest next fire (later than ``after``, if given)."""
        taken = self._take(crons, after, keep=False) if after is not None else []
        self._drop_stale(crons)
        first = self._heap[0][2].next_fire_at if self._heap else None
        for cron in taken:
            self.push(cron)
        return first

    def _take(
        self, crons: dict[Any, CronTicker], until: datetime, *, keep: bool
    ) -> list[CronTicker]:
        """Current entries due at or before ``until``, popped (pushed back when ``keep``)."""
        heap = self._heap
        until_ts = until.timestamp()
        out: list[CronTicker] = []
        seen: set[Any] = set()
        while heap and heap[0][0] <= until_ts:
            _, _, cron = heapq.heappop(heap)
            if crons.get(cron.id) is cron and cron.id not in seen:
                seen.add(cron.id)
                out.append(cron)
        if keep:
            for cron in out:
                self.push(cron)
        return out

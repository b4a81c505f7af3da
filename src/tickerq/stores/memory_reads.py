"""The memory store's read side: listing and searching time tickers, and what a
dashboard reads (census, throughput, locks, due work), computed from the rows.

Every read walks the rows it needs at the time of the call, so it is exact and
keeps nothing between calls. The search follows the one semantics of
:mod:`tickerq.stores.reads`, text window included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from tickerq.enums import Priority, Status, TickerKind
from tickerq.models import TimeTicker
from tickerq.stores import reads
from tickerq.stores.base import Store, TickerQuery
from tickerq.stores.memory_rows import Row, sort_key, time_ticker
from tickerq.stores.reads import (
    BucketSpan,
    Census,
    CensusGroup,
    DepthGroup,
    DueItem,
    NodeLocks,
    TextSearch,
    ThroughputBucket,
    TickerPage,
    outcome_slot,
)

__all__ = ["MemoryReads"]

_HELD = (Status.IN_PROGRESS,)


class MemoryReads(Store):
    """The reads of :class:`~tickerq.stores.memory.MemoryStore` (mixed into it)."""

    _rows: dict[UUID, Row]

    # -- time tickers ----------------------------------------------------------------

    def _passes(self, row: Row, query: TickerQuery, statuses: set[Status] | None) -> bool:
        return (
            row.kind is TickerKind.TIME
            and (statuses is None or row.status in statuses)
            and (query.function is None or row.function == query.function)
            and (query.parent_id is None or row.parent_id == query.parent_id)
            and not (query.roots_only and row.parent_id is not None)
        )

    def _search(self, query: TickerQuery) -> tuple[list[Row], int | None]:
        """Every row matching ``query`` in the list order, and the window searched
        (None when the text was searched among every row that passes the filters)."""
        statuses = set(query.statuses) if query.statuses else None
        search = TextSearch.parse(query.text) if query.text else None
        if search is not None and search.exact is not None:
            row = self._rows.get(search.exact)
            return ([row] if row is not None and self._passes(row, query, statuses) else []), None
        rows = [r for r in self._rows.values() if self._passes(r, query, statuses)]
        rows.sort(key=sort_key, reverse=True)
        if search is None:
            return rows, None
        window = reads.TEXT_WINDOW
        found = [
            r
            for i, r in enumerate(rows)
            if (i < window and search.in_window(r.id, r.function, r.description))
            or search.by_prefix(r.id)
        ]
        return found, window if len(rows) > window else None

    async def query_time_tickers(self, query: TickerQuery) -> list[TimeTicker]:
        """Matching tickers in the list order, paged (see :mod:`tickerq.stores.reads`)."""
        rows, _ = self._search(query)
        return [time_ticker(r) for r in rows[query.offset : query.offset + query.limit]]

    async def count_time_tickers(self, query: TickerQuery) -> int:
        """How many tickers match (the page ignored)."""
        if not query.text:  # no window to apply: the order does not matter
            statuses = set(query.statuses) if query.statuses else None
            return sum(1 for r in self._rows.values() if self._passes(r, query, statuses))
        return len(self._search(query)[0])

    async def search_time_tickers(self, query: TickerQuery) -> TickerPage:
        """A page of matching tickers, the exact total, and the window searched."""
        rows, searched = self._search(query)
        items = [time_ticker(r) for r in rows[query.offset : query.offset + query.limit]]
        return TickerPage(items, len(rows), searched)

    async def children_of(
        self, parents: Sequence[UUID], limit: int = 200
    ) -> dict[UUID, list[TimeTicker]]:
        """Each parent's chain children, oldest first, at most ``limit`` each."""
        out: dict[UUID, list[TimeTicker]] = {}
        for parent in parents:
            row = self._rows.get(parent)
            kids = [] if row is None or row.kind is not TickerKind.TIME else list(row.children)
            kids.sort(key=lambda k: (k.created_at, k.id))
            out[parent] = [time_ticker(k) for k in kids[:limit]]
        return out

    # -- dashboards ------------------------------------------------------------------

    async def census(self) -> Census:
        """Rows by kind, function, status and root-ness, counted now."""
        counts = Counter(
            CensusGroup(r.kind, r.function, r.status, r.parent_id is None)
            for r in self._rows.values()
        )
        return Census(dict(counts))

    async def throughput(
        self, now: datetime, span: timedelta, bucket: timedelta
    ) -> list[ThroughputBucket]:
        """Rows whose ``finished_at`` falls in each bucket, counted now."""
        spans = BucketSpan.of(now, span, bucket)
        counts: dict[int, list[int]] = {}
        for row in self._rows.values():
            if row.finished_at is None:
                continue
            ts = int(row.finished_at.timestamp())
            if spans.start <= ts < spans.end:
                slot = counts.setdefault(ts // spans.size * spans.size, [0, 0, 0])
                slot[outcome_slot(row.status)] += 1
        return spans.buckets(counts, now)

    async def locks_by_node(self) -> list[NodeLocks]:
        """Rows claimed or running, by the node holding them."""
        held = Counter(
            r.lock_holder for r in self._rows.values() if r.lock_holder and r.status in _HELD
        )
        return [NodeLocks(node, n) for node, n in sorted(held.items())]

    async def next_due(self, limit: int = 5) -> list[DueItem]:
        """The waiting rows due soonest."""
        waiting = [
            (r.execution_time, r)
            for r in self._rows.values()
            if r.status is Status.IDLE and r.execution_time is not None and not r.awaiting_parent
        ]
        waiting.sort(key=lambda p: p[0])
        return [DueItem(r.kind, r.id, r.function, when) for when, r in waiting[:limit]]

    async def depth(self, now: datetime) -> list[DepthGroup]:
        """Waiting rows by function and priority, and those due by ``now``, counted now."""
        counts: dict[tuple[str, Priority], list[int]] = {}
        for r in self._rows.values():
            if r.status is not Status.IDLE or r.awaiting_parent:
                continue
            slot = counts.setdefault((r.function, r.priority), [0, 0])
            slot[0] += 1
            if r.execution_time is None or r.execution_time <= now:
                slot[1] += 1
        return [DepthGroup(f, p, w, d) for (f, p), (w, d) in sorted(counts.items())]

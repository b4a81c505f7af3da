"""Read-only queries of the dashboard, composed from the store contract's read side.

Counts by status, throughput over time, locks held per node, what is due next,
pages of time tickers and a cheap change marker: each is one read of the store
(the section "read side for dashboards" of :class:`tickerq.stores.base.Store`,
whose values are in :mod:`tickerq.stores.reads`), shaped as the pages use it.

Big tables (measured in ``bench/dashboard.py`` with 1,000,000 time tickers;
``TEXT_WINDOW`` is in :mod:`tickerq.stores.reads`, the other constants named
below in the SQL store's ``reads`` module, which answers these reads):

* a page of time tickers walks ``ix_tickerq_tickers_list`` in its order, ids
  first (index only on PostgreSQL, however deep the page), then reads the rows
  of that page;
* counts (the status mix, a list's total) come from one ``GROUP BY kind,
  function, status, root`` statement, the *census*. When it takes under
  ``CENSUS_LIVE_SECONDS`` it runs for every page; above that (a big table) its
  result is reused and refreshed in the background when older than
  ``CENSUS_MAX_AGE`` seconds (in the foreground when older than
  ``CENSUS_STALE_AFTER``), so totals may lag by that much;
* text search matches an id exactly when the text is a UUID, ids starting with
  the text when it is hex, and otherwise function, description and pieces of
  ids only among the latest ``TEXT_WINDOW`` tickers matching the other filters
  (the page says so) instead of scanning the table;
* the throughput chart counts ended rows per time bucket from
  ``ix_tickerq_tickers_finished``; buckets that ended more than ``SETTLE``
  seconds ago are kept (re-counted a few at a time after ``BUCKET_MAX_AGE``),
  so a refresh reads only the last hour or so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.stores.base import Store, TickerQuery
from tickerq.stores.reads import DueItem, ThroughputBucket, TickerPage

if TYPE_CHECKING:
    from tickerq.models import TimeTicker

__all__ = ["DueItem", "Queries", "ThroughputBucket", "TickerPage"]


class Queries:
    """The dashboard's read queries over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def forget(self) -> None:
        """Drop kept counts (after an operation that deleted or re-ran rows)."""
        self.store.forget_kept_reads()

    async def status_counts(self) -> dict[TickerKind, dict[Status, int]]:
        """How many time tickers and cron occurrences are in each status."""
        return (await self.store.census()).by_status()

    async def time_tickers(
        self,
        *,
        statuses: Sequence[Status] | None = None,
        function: str | None = None,
        text: str | None = None,
        roots_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> TickerPage:
        """A page of time tickers (latest execution time first) and how many match."""
        query = TickerQuery(
            statuses=statuses,
            function=function,
            text=(text.strip() or None) if text else None,
            roots_only=roots_only,
            limit=limit,
            offset=offset,
        )
        return await self.store.search_time_tickers(query)

    async def children_of(
        self, parents: Sequence[UUID], limit: int = 200
    ) -> dict[UUID, list[TimeTicker]]:
        """The children of each of ``parents`` (at most ``limit`` each), oldest first."""
        return await self.store.children_of(parents, limit)

    async def throughput(
        self, now: datetime, span: timedelta, bucket: timedelta
    ) -> list[ThroughputBucket]:
        """Rows (both kinds) that ended in each bucket of the last ``span``."""
        return await self.store.throughput(now, span, bucket)

    async def locks_by_node(self) -> dict[str, int]:
        """How many rows each node holds (claimed or running)."""
        return {locks.node: locks.held for locks in await self.store.locks_by_node()}

    async def next_due(self, limit: int = 5) -> list[DueItem]:
        """The waiting rows due soonest (both kinds)."""
        return await self.store.next_due(limit)

    async def change_marker(self) -> tuple[Any, ...] | None:
        """A value that changes whenever the store's data changes (None: not needed).

        Used to see changes made by other processes; in-process changes come
        through the app's event bus. The memory store is never shared.
        """
        marker = await self.store.change_marker()
        return None if marker is None else marker.parts()

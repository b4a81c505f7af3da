"""The SQL store's read side: listing and searching time tickers, and what a
dashboard reads, each in a few statements backed by an index.

Big tables (measured in ``bench/dashboard.py`` with 1,000,000 time tickers):

* a page of time tickers walks ``ix_tickerq_tickers_list`` in its order, ids
  first (index only on PostgreSQL, however deep the page), then reads the rows
  of that page;
* counts (the status mix, a page's total) come from one ``GROUP BY kind,
  function, status, root`` statement, the *census*. When it takes under
  :data:`CENSUS_LIVE_SECONDS` it runs for every read; above that (a big table)
  its result is kept and refreshed in the background when older than
  :data:`CENSUS_MAX_AGE` seconds (in the foreground when older than
  :data:`CENSUS_STALE_AFTER`), so totals may lag by that much;
* text search (the semantics of :mod:`tickerq.stores.reads`) reads one row of
  the primary key for a UUID, a range of it for a hex prefix, and otherwise only
  the latest :data:`~tickerq.stores.reads.TEXT_WINDOW` entries of the list index
  that pass the filters, instead of scanning the table;
* the throughput chart counts ended rows per time bucket from
  ``ix_tickerq_tickers_finished``; buckets that ended more than :data:`SETTLE`
  seconds ago are kept (counted again a few at a time after
  :data:`BUCKET_MAX_AGE`), so a refresh reads only the last hour or so;
* locks per node and what is due next read the few claimed rows (claim index)
  and one range of the waiting index per priority.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    String,
    case,
    func,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy import cast as sql_cast

from tickerq.enums import Priority, Status, TickerKind
from tickerq.models import TimeTicker
from tickerq.stores import reads
from tickerq.stores.base import TickerQuery
from tickerq.stores.reads import (
    BucketSpan,
    Census,
    CensusGroup,
    ChangeMarker,
    DepthGroup,
    DueItem,
    NodeLocks,
    TextSearch,
    ThroughputBucket,
    TickerPage,
    outcome_slot,
)
from tickerq.stores.sql.connection import OCCURRENCE, RUNNING, TIME, SqlBase, T
from tickerq.stores.sql.rows import ticker_from_row
from tickerq.stores.sql.schema import (
    WAITING_PRIORITIES,
    cron_tickers,
    nodes,
    pauses,
    tickers,
    waiting,
)

__all__ = [
    "BUCKET_MAX_AGE",
    "CENSUS_LIVE_SECONDS",
    "CENSUS_MAX_AGE",
    "CENSUS_STALE_AFTER",
    "REFRESH_PER_CALL",
    "SETTLE",
    "SqlReads",
]

logger = logging.getLogger(__name__)

CENSUS_LIVE_SECONDS = 0.05
"""A census faster than this is taken for every read (small tables: exact, live)."""
CENSUS_MAX_AGE = 10.0
"""Seconds a slow census is reused before a background refresh starts."""
CENSUS_STALE_AFTER = 120.0
"""Seconds after which a slow census is refreshed before answering."""
SETTLE = 300
"""Seconds after a bucket's end before its count is kept (late result writes)."""
BUCKET_MAX_AGE = 600.0
"""Seconds a kept bucket count is trusted before it is counted again."""
REFRESH_PER_CALL = 12
"""At most this many kept buckets are counted again per call."""


@dataclass(frozen=True, slots=True)
class _KeptCensus:
    census: Census
    taken: float
    """When it was taken (monotonic clock)."""
    seconds: float
    """How long it took."""


@dataclass(slots=True)
class _Bucket:
    counts: list[int]
    fetched: float


@dataclass(slots=True)
class _Kept:
    """What the read side keeps between reads."""

    census: _KeptCensus | None = None
    census_task: asyncio.Task[None] | None = None
    buckets: dict[int, dict[int, _Bucket]] = field(default_factory=dict)
    """Bucket size -> bucket start -> its counts (closed buckets only)."""


class SqlReads(SqlBase):
    """Reads for the managers' lists and for dashboards (see the module's notes)."""

    _kept: _Kept | None = None

    def _kept_reads(self) -> _Kept:
        if self._kept is None:
            self._kept = _Kept()
        return self._kept

    async def close(self) -> None:
        """Stop a census refresh in flight, drop what was kept, then close."""
        kept, self._kept = self._kept, None
        if kept is not None and kept.census_task is not None:
            kept.census_task.cancel()
            await asyncio.gather(kept.census_task, return_exceptions=True)
        await super().close()

    def forget_kept_reads(self, *, census: bool = False) -> None:
        """Drop kept bucket counts (and a live census; every kept one with ``census``)."""
        kept = self._kept
        if kept is None:
            return
        kept.buckets.clear()
        if kept.census is not None and (census or kept.census.seconds < CENSUS_LIVE_SECONDS):
            kept.census = None

    # -- time tickers ----------------------------------------------------------------

    def _order(self) -> list[Any]:
        """The list order, as ``ix_tickerq_tickers_list`` is sorted (SQLite's DESC puts
        NULLs last by itself; PostgreSQL's needs NULLS LAST)."""
        first = self.dialect.nulls_last(T.execution_time.desc())
        return [first, T.created_at.desc(), T.id.desc()]

    def _matches(self, query: TickerQuery, window: int) -> tuple[Any, Any]:
        """The ids matching ``query`` with a text window of ``window`` rows (a select),
        and a select of how many rows pass its filters, up to ``window + 1`` (None: no
        window applies)."""
        where = _filters(query)
        search = TextSearch.parse(query.text) if query.text else None
        if search is None:
            return select(T.id).where(*where), None
        if search.exact is not None:
            return select(T.id).where(*where, T.id == search.exact), None
        order = self._order()
        latest = (
            select(T.id, T.function, T.description)
            .where(*where)
            .order_by(*order)
            .limit(window)
            .subquery("latest")
        )
        w = latest.c
        escaped = search.words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        conditions: list[Any] = [
            func.lower(w.function).like(pattern, escape="\\"),
            func.lower(w.description).like(pattern, escape="\\"),
        ]
        if search.hex_digits is not None:
            as_text = func.replace(func.lower(sql_cast(w.id, String)), "-", "")
            conditions.append(as_text.like(f"%{search.hex_digits}%"))
        parts: list[Any] = [select(w.id).where(or_(*conditions))]
        if search.prefix is not None:
            low, high = search.prefix
            parts.append(select(T.id).where(*where, T.id.between(low, high)))
        matches: Any = union(*parts) if len(parts) > 1 else parts[0]
        passing = select(func.count()).select_from(
            select(T.id).where(*where).order_by(*order).limit(window + 1).subquery()
        )
        return matches, passing

    def _page(self, query: TickerQuery, matches: Any) -> Any:
        """The rows of one page of ``matches``, in the list order: ids first (from the
        list index), then those rows."""
        order = self._order()
        if query.text:
            found = matches.subquery("found")
            return (
                select(tickers)
                .where(T.id.in_(select(found.c.id)))
                .order_by(*order)
                .limit(query.limit)
                .offset(query.offset)
            )
        page = matches.order_by(*order).limit(query.limit).offset(query.offset)
        return select(tickers).where(T.id.in_(page.scalar_subquery())).order_by(*order)

    async def query_time_tickers(self, query: TickerQuery) -> list[TimeTicker]:
        """Matching tickers in the list order, paged (see :mod:`tickerq.stores.reads`)."""
        matches, _ = self._matches(query, reads.TEXT_WINDOW)
        async with self.sa_engine.connect() as conn:
            return [ticker_from_row(r) for r in await conn.execute(self._page(query, matches))]

    async def count_time_tickers(self, query: TickerQuery) -> int:
        """How many tickers match (counted now; the page ignored)."""
        matches, _ = self._matches(query, reads.TEXT_WINDOW)
        async with self.sa_engine.connect() as conn:
            count = await conn.execute(select(func.count()).select_from(matches.subquery()))
            return int(count.scalar_one())

    async def search_time_tickers(self, query: TickerQuery) -> TickerPage:
        """A page of matching tickers, the total and the window searched.

        Without text (and without ``parent_id``) the total comes from the census.
        """
        window = reads.TEXT_WINDOW
        matches, passing = self._matches(query, window)
        async with self.sa_engine.connect() as conn:
            items = [ticker_from_row(r) for r in await conn.execute(self._page(query, matches))]
            if query.text or query.parent_id is not None:
                found = select(func.count()).select_from(matches.subquery())
                total = int((await conn.execute(found)).scalar_one())
                if passing is None or (await conn.execute(passing)).scalar_one() <= window:
                    return TickerPage(items, total)
                return TickerPage(items, total, searched=window)
        census = await self.census()
        total = census.total(
            TickerKind.TIME,
            statuses=query.statuses,
            function=query.function,
            roots_only=query.roots_only,
        )
        if items:
            total = max(total, query.offset + len(items))  # a census older than the rows
        return TickerPage(items, total)

    async def children_of(
        self, parents: Sequence[UUID], limit: int = 200
    ) -> dict[UUID, list[TimeTicker]]:
        """Each parent's chain children, oldest first (parent index, 500 parents a statement)."""
        out: dict[UUID, list[TimeTicker]] = {p: [] for p in parents}
        if not parents:
            return out
        async with self.sa_engine.connect() as conn:
            for i in range(0, len(parents), 500):
                chunk = list(parents[i : i + 500])
                stmt = (
                    select(tickers)
                    .where(T.kind == TIME, T.parent_id.in_(chunk))
                    .order_by(T.created_at, T.id)
                )
                for row in await conn.execute(stmt):
                    kids = out[row.parent_id]
                    if len(kids) < limit:
                        kids.append(ticker_from_row(row))
        return out

    # -- census ----------------------------------------------------------------------

    async def census(self) -> Census:
        """Rows by kind, function, status and root-ness (see the module's notes)."""
        kept = self._kept_reads()
        held = kept.census
        if held is None or held.seconds < CENSUS_LIVE_SECONDS:
            return (await self._take_census()).census
        age = time.monotonic() - held.taken
        if age > CENSUS_STALE_AFTER:
            return (await self._take_census()).census
        if age > CENSUS_MAX_AGE and (kept.census_task is None or kept.census_task.done()):
            kept.census_task = asyncio.get_running_loop().create_task(
                self._refresh_census(), name="tickerq-dashboard-census"
            )
        return held.census

    async def _refresh_census(self) -> None:
        try:
            await self._take_census()
        except Exception:  # the next read tries again
            logger.warning("counting the tickers failed", exc_info=True)

    async def _take_census(self) -> _KeptCensus:
        root = T.parent_id.is_(None).label("root")
        stmt = select(T.kind, T.function, T.status, root, func.count()).group_by(
            T.kind, T.function, T.status, root
        )
        started = time.monotonic()
        async with self.sa_engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        done = time.monotonic()
        counts = {
            CensusGroup(TickerKind(k), str(f), Status(s), bool(r)): int(n) for k, f, s, r, n in rows
        }
        kept = _KeptCensus(Census(counts), taken=done, seconds=done - started)
        self._kept_reads().census = kept
        return kept

    # -- throughput ------------------------------------------------------------------

    async def throughput(
        self, now: datetime, span: timedelta, bucket: timedelta
    ) -> list[ThroughputBucket]:
        """Rows that ended in each bucket; closed buckets' counts are kept."""
        spans = BucketSpan.of(now, span, bucket)
        counts: dict[int, list[int]] = {b: [0, 0, 0] for b in spans.starts()}
        kept = await self._kept_buckets(now, spans.start, spans.end, spans.size)
        for ts, triple in kept.items():
            slot = counts.get(ts // spans.size * spans.size)
            if slot is not None:
                for i in range(3):
                    slot[i] += triple[i]
        return spans.buckets(counts, now)

    async def _kept_buckets(
        self, now: datetime, start: int, end: int, size: int
    ) -> dict[int, list[int]]:
        """Counts per base bucket in [start, end); closed base buckets are kept."""
        base = math.gcd(size, 3600)
        if (end - start) // base > 5000:
            base = size
        cache = self._kept_reads().buckets.setdefault(base, {})
        clock = time.monotonic()
        settled = int(now.timestamp()) - SETTLE
        needed = range(start, end, base)
        fetch: set[int] = set()
        stale: list[tuple[float, int]] = []
        for b in needed:
            kept = cache.get(b)
            if b + base > settled or kept is None:
                fetch.add(b)
            elif clock - kept.fetched > BUCKET_MAX_AGE:
                stale.append((kept.fetched, b))
        fetch.update(b for _, b in sorted(stale)[:REFRESH_PER_CALL])
        fetched: dict[int, list[int]] = {b: [0, 0, 0] for b in fetch}
        for lo, hi in _runs(sorted(fetch), base):
            for ts, status, n in await self._bucket_counts(now, lo, hi, base):
                slot = fetched.get(ts // base * base)
                if slot is not None:
                    slot[outcome_slot(status)] += n
        for b, triple in fetched.items():
            if b + base <= settled:
                cache[b] = _Bucket(triple, clock)
        horizon = start - 31 * 86400
        for b in [b for b in cache if b < horizon]:
            del cache[b]
        return {b: fetched[b] if b in fetched else cache[b].counts for b in needed}

    async def _bucket_counts(
        self, now: datetime, lo: int, hi: int, size: int
    ) -> list[tuple[int, Status, int]]:
        """(bucket start, status, rows) of rows that ended in [lo, hi), grouped in the
        database (one row per bucket and status)."""
        epoch = self.dialect.epoch_seconds(T.finished_at)
        slot = (epoch // size).label("slot")  # integer division: one group per bucket
        stmt = (
            select(slot, T.status, func.count())
            .where(
                T.finished_at >= datetime.fromtimestamp(lo, now.tzinfo),  # the finished index
                T.finished_at < datetime.fromtimestamp(hi, now.tzinfo),
            )
            .group_by(slot, T.status)
        )
        async with self.sa_engine.connect() as conn:
            rows = await conn.execute(stmt)
            return [(int(s) * size, Status(st), int(n)) for s, st, n in rows if s is not None]

    # -- nodes, due work, changes ----------------------------------------------------

    async def locks_by_node(self) -> list[NodeLocks]:
        """Rows claimed or running, by the node holding them."""
        # Only claimed rows hold a lock: the status condition lets the claim
        # index (status first) find the few of them without reading the table.
        stmt = (
            select(T.lock_holder, func.count())
            .where(T.status == RUNNING, T.lock_holder.is_not(None))
            .group_by(T.lock_holder)
            .order_by(T.lock_holder)
        )
        async with self.sa_engine.connect() as conn:
            return [NodeLocks(str(h), int(n)) for h, n in await conn.execute(stmt)]

    async def next_due(self, limit: int = 5) -> list[DueItem]:
        """The waiting rows due soonest: the soonest of each priority (a bounded range
        of the waiting index each), then the soonest of those."""
        soonest = union_all(
            *(
                select(
                    select(T.kind, T.id, T.function, T.execution_time)
                    .where(
                        waiting(self.dialect.name),
                        T.priority == int(priority),
                        T.execution_time.is_not(None),
                    )
                    .order_by(T.execution_time)
                    .limit(limit)
                    .subquery(f"p{int(priority)}")
                )
                for priority in WAITING_PRIORITIES
            )
        ).subquery("soonest")
        stmt = select(soonest).order_by(soonest.c.execution_time).limit(limit)
        async with self.sa_engine.connect() as conn:
            return [DueItem(TickerKind(k), i, f, e) for k, i, f, e in await conn.execute(stmt)]

    async def depth(self, now: datetime) -> list[DepthGroup]:
        """Waiting rows by function and priority, and those due by ``now``: one
        statement over the rows of the waiting index (the ones that wait, however
        many ended)."""
        due = or_(T.execution_time.is_(None), T.execution_time <= now)
        stmt = (
            select(T.function, T.priority, func.count(), func.sum(case((due, 1), else_=0)))
            .where(waiting(self.dialect.name))
            .group_by(T.function, T.priority)
            .order_by(T.function, T.priority)
        )
        async with self.sa_engine.connect() as conn:
            return [
                DepthGroup(str(f), Priority(int(p)), int(w), int(d or 0))
                for f, p, w, d in await conn.execute(stmt)
            ]

    async def change_marker(self) -> ChangeMarker:
        """Latest changes of each table, and a deletion counter: rows deleted as the
        statistics collector counts them on PostgreSQL (flushed within ~1 s), the
        number of rows on SQLite."""
        latest = select(func.max(T.updated_at))
        async with self.sa_engine.connect() as conn:
            time_tickers = (await conn.execute(latest.where(T.kind == TIME))).scalar()
            occurrences = (await conn.execute(latest.where(T.kind == OCCURRENCE))).scalar()
            crons = (
                await conn.execute(select(func.max(cron_tickers.c.updated_at), func.count()))
            ).one()
            heartbeats = (
                await conn.execute(select(func.max(nodes.c.last_heartbeat), func.count()))
            ).one()
            deletions = (await conn.execute(self.dialect.deletions_marker(tickers))).scalar()
            paused = (await conn.execute(select(func.max(pauses.c.paused_at), func.count()))).one()
        return ChangeMarker(
            time_tickers=time_tickers,
            occurrences=occurrences,
            crons=(crons[0], int(crons[1])),
            nodes=(heartbeats[0], int(heartbeats[1])),
            deletions=None if deletions is None else int(deletions),
            pauses=(paused[0], int(paused[1])),
        )


def _filters(query: TickerQuery) -> list[Any]:
    """The WHERE conditions of ``query``'s filters (its text aside)."""
    where: list[Any] = [T.kind == TIME]
    if query.statuses:
        where.append(T.status.in_([s.value for s in query.statuses]))
    if query.function is not None:
        where.append(T.function == query.function)
    if query.parent_id is not None:
        where.append(T.parent_id == query.parent_id)
    if query.roots_only:
        where.append(T.parent_id.is_(None))
    return where


def _runs(starts: list[int], size: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges covering the sorted bucket starts."""
    runs: list[tuple[int, int]] = []
    for b in starts:
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + size)
        else:
            runs.append((b, b + size))
    return runs

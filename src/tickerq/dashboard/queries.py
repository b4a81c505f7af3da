"""Read-only queries the dashboard needs beyond the store contract.

Counts by status, throughput over time, locks held per node, what is due next,
pages of time tickers and a cheap change marker. SQL stores answer with a few
statements on their own tables, each backed by an index; the memory store from
its rows; any other store through the contract (``count_time_tickers``), with
less detail.

Big tables (measured in ``bench/dashboard.py`` with 1,000,000 time tickers):

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
  the text when it is hex, and otherwise function and description only among
  the latest ``TEXT_WINDOW`` tickers matching the other filters (the page says
  so) instead of scanning the table;
* the throughput chart counts ended rows per time bucket from
  ``ix_tickerq_tickers_finished``; buckets that ended more than ``SETTLE``
  seconds ago are kept (re-counted a few at a time after ``BUCKET_MAX_AGE``),
  so a refresh reads only the last hour or so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.stores.base import Store, TickerQuery
from tickerq.stores.memory import MemoryStore

if TYPE_CHECKING:
    from tickerq.models import TimeTicker
    from tickerq.stores.sql.connection import SqlBase

__all__ = ["DueItem", "Queries", "ThroughputBucket", "TickerPage"]

logger = logging.getLogger(__name__)

CENSUS_LIVE_SECONDS = 0.05
"""A census faster than this is taken for every request (small tables: exact, live)."""
CENSUS_MAX_AGE = 10.0
"""Seconds a slow census is reused before a background refresh starts."""
CENSUS_STALE_AFTER = 120.0
"""Seconds after which a slow census is refreshed before answering."""
TEXT_WINDOW = 10_000
"""Text search (other than ids) looks at this many latest tickers."""
SETTLE = 300
"""Seconds after a bucket's end before its count is kept (late result writes)."""
BUCKET_MAX_AGE = 600.0
"""Seconds a kept bucket count is trusted before it is counted again."""
REFRESH_PER_CALL = 12
"""At most this many kept buckets are counted again per call."""
_HEX = re.compile(r"[0-9a-f]{4,32}")

_SUCCESS = (Status.DONE, Status.DUE_DONE)


@dataclass(frozen=True, slots=True)
class DueItem:
    """A waiting row and when it is due."""

    kind: TickerKind
    id: UUID
    function: str
    execution_time: datetime


@dataclass(frozen=True, slots=True)
class ThroughputBucket:
    """Rows that ended in one time bucket, by outcome."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    other: int = 0
    """Cancelled or skipped."""


@dataclass(frozen=True, slots=True)
class TickerPage:
    """A page of time tickers and how many match."""

    items: list[TimeTicker]
    total: int
    searched: int | None = None
    """Set when the text was searched only among this many latest tickers."""


@dataclass(frozen=True, slots=True)
class _Census:
    counts: dict[tuple[str, str, str, bool], int]
    """(kind, function, status, is_root) -> rows."""
    taken: float
    seconds: float


@dataclass(slots=True)
class _Bucket:
    counts: list[int]
    fetched: float


@dataclass(slots=True)
class _BucketCache:
    buckets: dict[int, _Bucket] = field(default_factory=dict)


def _sql_store(store: Store) -> SqlBase | None:
    try:
        from tickerq.stores.sql.connection import SqlBase
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    return store if isinstance(store, SqlBase) else None


class Queries:
    """The dashboard's read queries over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._census: _Census | None = None
        self._census_task: asyncio.Task[None] | None = None
        self._throughput: dict[int, _BucketCache] = {}

    def forget(self) -> None:
        """Drop kept counts (after an operation that deleted or re-ran rows)."""
        self._throughput.clear()
        if self._census is not None and self._census.seconds < CENSUS_LIVE_SECONDS:
            self._census = None

    # -- counts ------------------------------------------------------------------------

    async def status_counts(self) -> dict[TickerKind, dict[Status, int]]:
        """How many time tickers and cron occurrences are in each status."""
        out: dict[TickerKind, dict[Status, int]] = {k: dict.fromkeys(Status, 0) for k in TickerKind}
        sql = _sql_store(self.store)
        if sql is not None:
            census = await self.census(sql)
            for (kind, _function, status, _root), count in census.counts.items():
                out[TickerKind(kind)][Status(status)] += count
            return out
        if isinstance(self.store, MemoryStore):
            counter = Counter((r.kind, r.status) for r in _memory_rows(self.store))
            for (kind, status), count in counter.items():
                out[kind][status] = count
            return out
        for status in Status:
            out[TickerKind.TIME][status] = await self.store.count_time_tickers(
                TickerQuery(statuses=[status], limit=1)
            )
        return out

    async def census(self, sql: SqlBase) -> _Census:
        """Rows by kind, function, status and root-ness (see the module's notes)."""
        census = self._census
        if census is None or census.seconds < CENSUS_LIVE_SECONDS:
            return await self._take_census(sql)
        age = time.monotonic() - census.taken
        if age > CENSUS_STALE_AFTER:
            return await self._take_census(sql)
        if age > CENSUS_MAX_AGE and (self._census_task is None or self._census_task.done()):
            self._census_task = asyncio.get_running_loop().create_task(
                self._refresh_census(sql), name="tickerq-dashboard-census"
            )
        return census

    async def _refresh_census(self, sql: SqlBase) -> None:
        try:
            await self._take_census(sql)
        except Exception:  # the next request tries again
            logger.warning("dashboard: counting the tickers failed", exc_info=True)

    async def _take_census(self, sql: SqlBase) -> _Census:
        from sqlalchemy import func, select

        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        root = t.parent_id.is_(None).label("root")
        stmt = select(t.kind, t.function, t.status, root, func.count()).group_by(
            t.kind, t.function, t.status, root
        )
        started = time.monotonic()
        async with sql.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        done = time.monotonic()
        census = _Census(
            counts={(str(k), str(f), str(s), bool(r)): int(n) for k, f, s, r, n in rows},
            taken=done,
            seconds=done - started,
        )
        self._census = census
        return census

    # -- time tickers --------------------------------------------------------------------

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
        text = text.strip() if text else None
        sql = _sql_store(self.store)
        if sql is None:
            query = TickerQuery(
                statuses=statuses,
                function=function,
                text=text or None,
                roots_only=roots_only,
                limit=limit,
                offset=offset,
            )
            items = await self.store.query_time_tickers(query)
            return TickerPage(items, await self.store.count_time_tickers(query))
        if text:
            where = _filters(statuses, function, roots_only)
            return await self._sql_search(sql, where, text, limit=limit, offset=offset)
        from sqlalchemy import select

        from tickerq.stores.sql.rows import ticker_from_row
        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        where = _filters(statuses, function, roots_only)
        order = _order(sql)
        page = select(t.id).where(*where).order_by(*order).limit(limit).offset(offset)
        stmt = select(tickers).where(t.id.in_(page.scalar_subquery())).order_by(*order)
        async with sql.engine.connect() as conn:
            items = [ticker_from_row(r) for r in await conn.execute(stmt)]
        census = await self.census(sql)
        wanted = {s.value for s in statuses} if statuses else None
        total = sum(
            n
            for (kind, fn, status, root), n in census.counts.items()
            if kind == TickerKind.TIME.value
            and (wanted is None or status in wanted)
            and (function is None or fn == function)
            and (root or not roots_only)
        )
        if items:
            total = max(total, offset + len(items))  # a census older than the rows
        return TickerPage(items, total)

    async def _sql_search(
        self, sql: SqlBase, where: list[Any], text: str, *, limit: int, offset: int
    ) -> TickerPage:
        from sqlalchemy import func, or_, select, union

        from tickerq.stores.sql.rows import ticker_from_row
        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        order = _order(sql)
        try:
            exact = UUID(text)
        except ValueError:
            exact = None
        searched: int | None = None
        if exact is not None:
            matches: Any = select(t.id).where(*where, t.id == exact)
        else:
            lowered = text.lower()
            escaped = lowered.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            window = (
                select(t.id, t.function, t.description)
                .where(*where)
                .order_by(*order)
                .limit(TEXT_WINDOW)
                .subquery("latest")
            )
            w = window.c
            parts: list[Any] = [
                select(w.id).where(
                    or_(
                        func.lower(w.function).like(pattern, escape="\\"),
                        func.lower(w.description).like(pattern, escape="\\"),
                    )
                )
            ]
            hex_part = lowered.replace("-", "")
            if _HEX.fullmatch(hex_part):
                low = UUID(hex_part.ljust(32, "0"))
                high = UUID(hex_part.ljust(32, "f"))
                parts.append(select(t.id).where(*where, t.id.between(low, high)))
            matches = union(*parts) if len(parts) > 1 else parts[0]
            window_size = select(func.count()).select_from(
                select(t.id).where(*where).order_by(*order).limit(TEXT_WINDOW + 1).subquery()
            )
        found = matches.subquery("found")
        stmt = (
            select(tickers)
            .where(t.id.in_(select(found.c.id)))
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        async with sql.engine.connect() as conn:
            items = [ticker_from_row(r) for r in await conn.execute(stmt)]
            total = int((await conn.execute(select(func.count()).select_from(found))).scalar_one())
            if exact is None and (await conn.execute(window_size)).scalar_one() > TEXT_WINDOW:
                searched = TEXT_WINDOW
        return TickerPage(items, total, searched)

    async def children_of(self, parents: Sequence[UUID], limit: int = 200) -> dict[UUID, list[Any]]:
        """The children of each of ``parents`` (at most ``limit`` each), oldest first."""
        out: dict[UUID, list[Any]] = {p: [] for p in parents}
        if not parents:
            return out
        sql = _sql_store(self.store)
        if sql is None:
            for parent in parents:
                kids = await self.store.query_time_tickers(
                    TickerQuery(parent_id=parent, limit=limit)
                )
                out[parent] = sorted(kids, key=lambda k: k.created_at)
            return out
        from sqlalchemy import select

        from tickerq.stores.sql.rows import ticker_from_row
        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        async with sql.engine.connect() as conn:
            for i in range(0, len(parents), 500):
                chunk = list(parents[i : i + 500])
                stmt = (
                    select(tickers)
                    .where(t.kind == TickerKind.TIME.value, t.parent_id.in_(chunk))
                    .order_by(t.created_at, t.id)
                )
                for row in await conn.execute(stmt):
                    kids = out[row.parent_id]
                    if len(kids) < limit:
                        kids.append(ticker_from_row(row))
        return out

    # -- throughput ----------------------------------------------------------------------

    async def throughput(
        self, now: datetime, span: timedelta, bucket: timedelta
    ) -> list[ThroughputBucket]:
        """Rows (both kinds) that ended in each bucket of the last ``span``."""
        size = max(int(bucket.total_seconds()), 1)
        end = int(now.timestamp()) // size * size + size
        start = end - max(int(span.total_seconds()) // size, 1) * size
        since = datetime.fromtimestamp(start, now.tzinfo)
        counts: dict[int, list[int]] = {b: [0, 0, 0] for b in range(start, end, size)}

        def add(ts: int, status: Status, n: int) -> None:
            key = ts // size * size
            slot = counts.get(key)
            if slot is None:
                return
            slot[0 if status in _SUCCESS else 1 if status is Status.FAILED else 2] += n

        sql = _sql_store(self.store)
        if sql is not None:
            for ts, triple in (await self._sql_throughput(sql, now, start, end, size)).items():
                slot = counts.get(ts // size * size)
                if slot is not None:
                    for i in range(3):
                        slot[i] += triple[i]
        elif isinstance(self.store, MemoryStore):
            for row in _memory_rows(self.store):
                if row.finished_at is not None and row.finished_at >= since:
                    add(int(row.finished_at.timestamp()), row.status, 1)
        return [
            ThroughputBucket(datetime.fromtimestamp(b, now.tzinfo), *counts[b])
            for b in sorted(counts)
        ]

    async def _sql_throughput(
        self, sql: SqlBase, now: datetime, start: int, end: int, size: int
    ) -> dict[int, list[int]]:
        """Counts per base bucket in [start, end); closed base buckets are kept."""
        base = math.gcd(size, 3600)
        if (end - start) // base > 5000:
            base = size
        cache = self._throughput.setdefault(base, _BucketCache())
        clock = time.monotonic()
        settled = int(now.timestamp()) - SETTLE
        needed = range(start, end, base)
        fetch: set[int] = set()
        stale: list[tuple[float, int]] = []
        for b in needed:
            kept = cache.buckets.get(b)
            if b + base > settled or kept is None:
                fetch.add(b)
            elif clock - kept.fetched > BUCKET_MAX_AGE:
                stale.append((kept.fetched, b))
        fetch.update(b for _, b in sorted(stale)[:REFRESH_PER_CALL])
        fetched: dict[int, list[int]] = {b: [0, 0, 0] for b in fetch}
        for lo, hi in _runs(sorted(fetch), base):
            for ts, status, n in await self._sql_counts(sql, now, lo, hi, base):
                slot = fetched.get(ts // base * base)
                if slot is not None:
                    slot[0 if status in _SUCCESS else 1 if status is Status.FAILED else 2] += n
        for b, triple in fetched.items():
            if b + base <= settled:
                cache.buckets[b] = _Bucket(triple, clock)
        horizon = start - 31 * 86400
        for b in [b for b in cache.buckets if b < horizon]:
            del cache.buckets[b]
        return {b: fetched[b] if b in fetched else cache.buckets[b].counts for b in needed}

    async def _sql_counts(
        self, sql: SqlBase, now: datetime, lo: int, hi: int, size: int
    ) -> list[tuple[int, Status, int]]:
        from sqlalchemy import Integer, extract, func, select
        from sqlalchemy import cast as sql_cast

        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        if sql.dialect.name == "sqlite":
            epoch: Any = sql_cast(func.strftime("%s", t.finished_at), Integer)
        else:
            epoch = sql_cast(func.floor(extract("epoch", t.finished_at)), Integer)
        slot = (epoch // size).label("slot")  # integer division: one group per bucket
        stmt = (
            select(slot, t.status, func.count())
            .where(
                t.finished_at >= datetime.fromtimestamp(lo, now.tzinfo),  # the finished index
                t.finished_at < datetime.fromtimestamp(hi, now.tzinfo),
            )
            .group_by(slot, t.status)
        )
        async with sql.engine.connect() as conn:
            rows = await conn.execute(stmt)
            return [(int(s) * size, Status(st), int(n)) for s, st, n in rows if s is not None]

    async def locks_by_node(self) -> dict[str, int]:
        """How many rows each node holds (claimed or running)."""
        sql = _sql_store(self.store)
        if sql is not None:
            from sqlalchemy import func, select

            from tickerq.stores.sql.schema import tickers

            t = tickers.c
            # Only claimed rows hold a lock: the status condition lets the claim
            # index (status first) find the few of them without reading the table.
            held = [Status.QUEUED.value, Status.IN_PROGRESS.value]
            stmt = (
                select(t.lock_holder, func.count())
                .where(t.status.in_(held), t.lock_holder.is_not(None))
                .group_by(t.lock_holder)
            )
            async with sql.engine.connect() as conn:
                return {str(h): int(n) for h, n in await conn.execute(stmt)}
        if isinstance(self.store, MemoryStore):
            return dict(Counter(r.lock_holder for r in _memory_rows(self.store) if r.lock_holder))
        return {}

    async def next_due(self, limit: int = 5) -> list[DueItem]:
        """The waiting rows due soonest (both kinds)."""
        sql = _sql_store(self.store)
        if sql is not None:
            from sqlalchemy import select, union_all

            from tickerq.stores.sql.schema import WAITING_PRIORITIES, tickers
            from tickerq.stores.sql.schema import waiting as waiting_rows

            # The soonest of each priority (a bounded range of the waiting index
            # each), then the soonest of those.
            t = tickers.c
            soonest = union_all(
                *(
                    select(
                        select(t.kind, t.id, t.function, t.execution_time)
                        .where(
                            waiting_rows(sql.dialect.name),
                            t.priority == int(priority),
                            t.execution_time.is_not(None),
                        )
                        .order_by(t.execution_time)
                        .limit(limit)
                        .subquery(f"p{int(priority)}")
                    )
                    for priority in WAITING_PRIORITIES
                )
            ).subquery("soonest")
            stmt = select(soonest).order_by(soonest.c.execution_time).limit(limit)
            async with sql.engine.connect() as conn:
                return [DueItem(TickerKind(k), i, f, e) for k, i, f, e in await conn.execute(stmt)]
        if isinstance(self.store, MemoryStore):
            waiting = [
                r
                for r in _memory_rows(self.store)
                if r.status is Status.IDLE and r.execution_time and not r.awaiting_parent
            ]
            waiting.sort(key=lambda r: r.execution_time)
            return [
                DueItem(r.kind, r.id, r.function, r.execution_time)
                for r in waiting[:limit]
                if r.execution_time is not None
            ]
        rows = await self.store.query_time_tickers(TickerQuery(statuses=[Status.IDLE], limit=1000))
        rows = sorted((r for r in rows if r.execution_time), key=lambda r: r.execution_time)  # type: ignore[arg-type,return-value]
        return [
            DueItem(TickerKind.TIME, r.id, r.function, r.execution_time)
            for r in rows[:limit]
            if r.execution_time is not None
        ]

    async def change_marker(self) -> tuple[Any, ...] | None:
        """A value that changes whenever the store's data changes (None: not needed).

        Used to see changes made by other processes; in-process changes come
        through the app's event bus. The memory store is never shared.
        """
        sql = _sql_store(self.store)
        if sql is None:
            return None
        from sqlalchemy import func, select, text

        from tickerq.stores.sql.schema import cron_tickers, nodes, tickers

        t = tickers.c
        parts: list[Any] = []
        async with sql.engine.connect() as conn:
            for kind in (TickerKind.TIME.value, TickerKind.CRON_OCCURRENCE.value):
                parts.append(
                    (
                        await conn.execute(select(func.max(t.updated_at)).where(t.kind == kind))
                    ).scalar()
                )
            parts.extend(
                (
                    await conn.execute(select(func.max(cron_tickers.c.updated_at), func.count()))
                ).one()
            )
            parts.extend(
                (await conn.execute(select(func.max(nodes.c.last_heartbeat), func.count()))).one()
            )
            if sql.dialect.name == "postgresql":
                # deletions: counted by the statistics collector (flushed within ~1 s)
                parts.append(
                    (
                        await conn.execute(
                            text(
                                "SELECT n_tup_del FROM pg_stat_user_tables "
                                "WHERE relname = 'tickerq_tickers'"
                            )
                        )
                    ).scalar()
                )
            else:
                parts.append(
                    (await conn.execute(select(func.count()).select_from(tickers))).scalar()
                )
        return tuple(parts)


def _runs(starts: list[int], size: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges covering the sorted bucket starts."""
    runs: list[tuple[int, int]] = []
    for b in starts:
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + size)
        else:
            runs.append((b, b + size))
    return runs


def _filters(
    statuses: Sequence[Status] | None, function: str | None, roots_only: bool
) -> list[Any]:
    from tickerq.stores.sql.schema import tickers

    t = tickers.c
    where: list[Any] = [t.kind == TickerKind.TIME.value]
    if statuses:
        where.append(t.status.in_([s.value for s in statuses]))
    if function is not None:
        where.append(t.function == function)
    if roots_only:
        where.append(t.parent_id.is_(None))
    return where


def _order(sql: SqlBase) -> list[Any]:
    """Latest execution time first, as ``ix_tickerq_tickers_list`` is sorted
    (SQLite's DESC puts NULLs last by itself; PostgreSQL's needs NULLS LAST)."""
    from tickerq.stores.sql.schema import tickers

    t = tickers.c
    first = t.execution_time.desc()
    if sql.dialect.name == "postgresql":
        first = first.nulls_last()
    return [first, t.created_at.desc(), t.id.desc()]


def _memory_rows(store: MemoryStore) -> list[Any]:
    """The memory store's rows (a snapshot list; the store is not thread-shared)."""
    return list(cast(dict[UUID, Any], store._rows).values())

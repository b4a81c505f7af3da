"""Read-only queries the dashboard needs beyond the store contract.

Counts by status, throughput over time, locks held per node, what is due next
and a cheap change marker. SQL stores answer with a few aggregate statements
on their own tables (each backed by an index); the memory store from its rows;
any other store through the contract (``count_time_tickers``), with less detail.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.stores.base import Store, TickerQuery
from tickerq.stores.memory import MemoryStore

if TYPE_CHECKING:
    from tickerq.stores.sql.connection import SqlBase

__all__ = ["DueItem", "Queries", "ThroughputBucket"]

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

    # -- counts ------------------------------------------------------------------------

    async def status_counts(self) -> dict[TickerKind, dict[Status, int]]:
        """How many time tickers and cron occurrences are in each status."""
        out: dict[TickerKind, dict[Status, int]] = {k: dict.fromkeys(Status, 0) for k in TickerKind}
        sql = _sql_store(self.store)
        if sql is not None:
            from sqlalchemy import func, select

            from tickerq.stores.sql.schema import tickers

            t = tickers.c
            stmt = select(t.kind, t.status, func.count()).group_by(t.kind, t.status)
            async with sql.engine.connect() as conn:
                for kind, status, count in await conn.execute(stmt):
                    out[TickerKind(kind)][Status(status)] = int(count)
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
            for ts, status, n in await self._sql_throughput(sql, since, size):
                add(ts, status, n)
        elif isinstance(self.store, MemoryStore):
            for row in _memory_rows(self.store):
                if row.finished_at is not None and row.finished_at >= since:
                    add(int(row.finished_at.timestamp()), row.status, 1)
        return [
            ThroughputBucket(datetime.fromtimestamp(b, now.tzinfo), *counts[b])
            for b in sorted(counts)
        ]

    async def _sql_throughput(
        self, sql: SqlBase, since: datetime, size: int
    ) -> list[tuple[int, Status, int]]:
        from sqlalchemy import Integer, extract, func, select
        from sqlalchemy import cast as sql_cast

        from tickerq.stores.sql.schema import tickers

        t = tickers.c
        if sql.dialect.name == "sqlite":
            epoch: Any = sql_cast(func.strftime("%s", t.finished_at), Integer)
        else:
            epoch = sql_cast(func.floor(extract("epoch", t.finished_at)), Integer)
        slot = (epoch / size).label("slot")
        stmt = (
            select(slot, t.status, func.count())
            .where(
                t.kind.in_([TickerKind.TIME.value, TickerKind.CRON_OCCURRENCE.value]),
                t.updated_at >= since,  # walks ix_tickerq_tickers_updated
                t.finished_at >= since,
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
            stmt = (
                select(t.lock_holder, func.count())
                .where(t.lock_holder.is_not(None))
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
            from sqlalchemy import select

            from tickerq.stores.sql.schema import tickers

            t = tickers.c
            stmt = (
                select(t.kind, t.id, t.function, t.execution_time)
                .where(
                    t.status == Status.IDLE.value,
                    t.execution_time.is_not(None),
                    t.awaiting_parent.is_(False),
                )
                .order_by(t.execution_time)
                .limit(limit)
            )
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


def _memory_rows(store: MemoryStore) -> list[Any]:
    """The memory store's rows (a snapshot list; the store is not thread-shared)."""
    return list(cast(dict[UUID, Any], store._rows).values())

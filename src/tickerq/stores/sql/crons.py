"""The SQL store's cron materialization: a batch of due crons per transaction.

One call takes up to a batch of due cron tickers (locking them, skipping those
another node holds, on PostgreSQL), plans each in Python, then writes the whole
batch with a fixed number of statements: one UPDATE of the crons' cursors and
one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of the occurrences (on
PostgreSQL from arrays, ``unnest``-ed, in :mod:`~tickerq.stores.sql.crons_pg`; on
SQLite, in process, an executemany and multi-row INSERTs of :data:`INSERT_PAGE`
rows). The unique (cron_ticker_id,
fire_time) key makes a fire exist once even if two nodes planned it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects import sqlite

from tickerq.models import CronTicker
from tickerq.stores.base import (
    CRON_BATCH_FIRES,
    CRON_BATCH_SIZE,
    CronBatch,
    CronPlan,
    CronPlanner,
)
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import IDLE, OCCURRENCE, SqlBase, T
from tickerq.stores.sql.rows import cron_from_row
from tickerq.stores.sql.schema import cron_tickers, tickers

__all__ = ["INSERT_PAGE", "CronMaterializing"]

C = cron_tickers.c

INSERT_PAGE = 1000
"""SQLite: occurrence rows per INSERT statement (17 parameters each: well under
its limit of 32,766 parameters per statement)."""


class CronMaterializing(SqlBase):
    """:meth:`Store.materialize_crons` on SQLite and PostgreSQL."""

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
        """Plan and advance up to ``limit`` due crons (id order, after ``after``) in one
        transaction; see :meth:`Store.materialize_crons`."""
        horizon = now if until is None else max(now, until)
        due = select(cron_tickers).where(C.enabled.is_(True), C.next_fire_at <= horizon)
        if after is not None:
            due = due.where(C.id > after)
        # PostgreSQL: lock the batch, passing over crons another node is materializing
        # (SKIP LOCKED never waits, so two nodes never deadlock and split the work).
        # SQLite: the write transaction (BEGIN IMMEDIATE) runs alone.
        due = self.dialect.skip_locked(due.order_by(C.id).limit(limit))

        def tx(conn: Connection) -> tuple[CronBatch, list[tuple[UUID, str]], tuple[bool, int]]:
            rows = conn.execute(due).all()
            planned: list[tuple[CronTicker, CronPlan]] = []
            fires = 0
            last: UUID | None = None
            for row in rows:
                cron = cron_from_row(row)
                last = cron.id
                plan = planner(cron)
                if plan is None:
                    continue
                planned.append((cron, plan))
                fires += len(plan.fires)
                if fires >= max_fires:
                    break
            exhausted = len(rows) < limit and (not rows or last == rows[-1].id)
            made = self._write_batch(conn, planned, now)
            paced = self._notify_work(conn) if planned else (False, 0)
            created = Counter(cron_id for _, cron_id, _ in made)
            result = CronBatch({cron.id: created[cron.id] for cron, _ in planned}, last, exhausted)
            return result, [(oid, function) for oid, _, function in made], paced

        batch, made, (sent, mark) = await self.write(tx)
        self._paced(mark, sent=sent, changed=bool(batch.created))
        bus = self.events
        if made and bus is not None and bus.active:
            for occurrence_id, function in made:
                self._announce(OCCURRENCE, occurrence_id, function, IDLE, now)
        return batch

    def _write_batch(
        self, conn: Connection, planned: list[tuple[CronTicker, CronPlan]], now: datetime
    ) -> list[tuple[UUID, UUID, str]]:
        """Move the planned crons' cursors and insert their occurrences; returns
        (occurrence id, cron id, function) of each occurrence created."""
        if not planned:
            return []
        if self.dialect.row_locks:
            from tickerq.stores.sql.crons_pg import write_batch_postgresql

            return write_batch_postgresql(conn, planned, now)
        return _write_batch_sqlite(conn, planned, now)


# The crons were read in the same transaction (BEGIN IMMEDIATE: it runs alone), so
# the cursor guard (next_fire_at still as read) holds; it stays as the
# compare-and-set the contract promises.


def _write_batch_sqlite(
    conn: Connection, planned: list[tuple[CronTicker, CronPlan]], now: datetime
) -> list[tuple[UUID, UUID, str]]:
    """An executemany UPDATE (one C loop in sqlite3, no round trips: the database is
    in process) and a multi-row INSERT ... RETURNING in pages of INSERT_PAGE rows."""
    conn.execute(
        update(cron_tickers)
        .where(C.id == bindparam("b_id"), C.next_fire_at == bindparam("b_expected"))
        .values(next_fire_at=bindparam("b_new")),
        [
            {"b_id": cron.id, "b_expected": cron.next_fire_at, "b_new": plan.new_next}
            for cron, plan in planned
        ],
    )
    rows = [
        _occurrence_values(cron, plan, fire, now) for cron, plan in planned for fire in plan.fires
    ]
    if not rows:
        return []
    # An executemany with RETURNING: SQLAlchemy sends it as multi-row INSERTs
    # ("insertmanyvalues"), compiled once and cached.
    stmt = (
        sqlite.insert(tickers)
        .on_conflict_do_nothing()
        .returning(T.id, T.cron_ticker_id, T.function)
    )
    result = conn.execution_options(insertmanyvalues_page_size=INSERT_PAGE).execute(stmt, rows)
    return [(r.id, r.cron_ticker_id, r.function) for r in result]


def take_back_ahead(
    conn: Connection, cron_id: UUID, after: datetime
) -> list[tuple[UUID, datetime]]:
    """Delete the occurrences of ``cron_id`` made ahead of their fire (IDLE, never
    claimed, due later than ``after``: see ``EngineOptions.cron_lead``); their
    (id, fire time)."""
    rows = conn.execute(
        delete(tickers)
        .where(
            T.cron_ticker_id == cron_id,
            T.kind == OCCURRENCE,
            T.status == IDLE,
            T.claims == 0,
            T.fire_time.is_not(None),
            T.execution_time > after,
        )
        .returning(T.id, T.fire_time)
    ).all()
    return [(r.id, dialects.as_utc(r.fire_time)) for r in rows]


def _occurrence_values(
    cron: CronTicker, plan: CronPlan, fire: datetime, now: datetime
) -> dict[str, Any]:
    """Column values of a new occurrence of ``cron`` at ``fire``."""
    return {
        "id": dialects.new_id(),
        "kind": OCCURRENCE,
        "function": cron.function,
        "status": IDLE,
        "priority": int(plan.priority),
        "execution_time": fire,
        "fire_time": fire,
        "request": cron.request,
        "retries": cron.retries,
        "retry_intervals": list(cron.retry_intervals) if cron.retry_intervals is not None else None,
        "retry_count": 0,
        "description": "",
        "awaiting_parent": False,
        "cancel_requested": False,
        "cron_ticker_id": cron.id,
        "created_at": now,
        "updated_at": now,
    }

"""The SQL store's side of seeded crons: reconciling them with the code, deleting crons.

A seeded cron ticker's ``seed_key`` is its function's name, so the database
holds at most one per function. Keys of older tickerq versions
(``function|expression``) are folded into that form when a node reconciles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import Connection, delete, insert, select, update

from tickerq.enums import TickerKind
from tickerq.events import CronTickerChanged, TickerDeleted
from tickerq.models import CronTicker
from tickerq.notices import CRONS, TICKERS, Changed, WorkDue
from tickerq.stores.base import SeedResult
from tickerq.stores.seeding import SeedPlan, plan_seeding
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import IDLE, RUNNING, SqlBase, T
from tickerq.stores.sql.crons import take_back_ahead
from tickerq.stores.sql.rows import cron_from_row, cron_values
from tickerq.stores.sql.schema import attempts, cron_tickers, tickers

__all__ = ["CronSeeding"]

SEED_LOCK_KEY = int.from_bytes(hashlib.sha256(b"tickerq-seed-crons").digest()[:7], "big")
"""The PostgreSQL advisory lock that serializes nodes reconciling seeded crons."""

C = cron_tickers.c


class CronSeeding(SqlBase):
    """Reconciling seeded cron tickers; deleting cron tickers with their waiting work."""

    async def reconcile_seeded_crons(self, declared: Sequence[CronTicker]) -> SeedResult:
        """Make the seeded crons match ``declared`` in one transaction (see Store).

        Nodes reconciling at once run one after another: under an advisory lock on
        PostgreSQL, and because SQLite write transactions begin IMMEDIATE.
        """
        unchanged: list[CronTicker] = []
        updated: list[CronTicker] = []
        taken: list[UUID] = []

        def tx(conn: Connection) -> SeedPlan:
            self.dialect.lock(conn, SEED_LOCK_KEY)
            rows = list(
                conn.execute(
                    select(cron_tickers).where(C.seed_key.is_not(None)).order_by(C.created_at, C.id)
                )
            )
            keys = {r.id: r.seed_key for r in rows}
            plan = plan_seeding([cron_from_row(r) for r in rows], declared)
            # Deleted first: a kept row may take the seed key of one deleted.
            self._drop_crons(conn, [c.id for c in plan.delete], keep_ended=True)
            for kept, changes in plan.keep:
                values = cron_values(kept.evolve(**changes))
                values = {k: values[k] for k in changes}
                if keys[kept.id] != kept.function:  # a "function|expression" key: fold it in
                    values["seed_key"] = kept.function
                if not values:
                    unchanged.append(kept)
                    continue
                if "updated_at" in changes:  # made again from the new settings
                    ahead = take_back_ahead(conn, kept.id, changes["updated_at"])
                    taken.extend(ticker_id for ticker_id, _ in ahead)
                    if ahead and "next_fire_at" not in values:
                        values["next_fire_at"] = min(fire for _, fire in ahead)
                row = (
                    conn.execute(
                        update(cron_tickers)
                        .where(C.id == kept.id)
                        .values(**values)
                        .returning(cron_tickers)
                    )
                ).one()
                updated.append(cron_from_row(row))
            if plan.create:
                conn.execute(insert(cron_tickers), [cron_values(c) for c in plan.create])
            due = [c.next_fire_at for c in [*updated, *plan.create] if c.next_fire_at is not None]
            if due:
                self._notify(conn, WorkDue(min(due)))
            elif plan.delete or updated:
                self._notify(conn, Changed(frozenset({CRONS, TICKERS})))
            return plan

        plan = await self.write(tx)
        changed = [*updated, *plan.create]
        for cron in changed:
            self._announce_cron(cron.id, cron.updated_at)
        self._announce_deleted([c.id for c in plan.delete])
        self._announce_taken_back(taken)
        return SeedResult(
            created=tuple(c.function for c in plan.create),
            updated=tuple(c.function for c in updated),
            removed=tuple(c.function for c in plan.delete),
            crons=(*unchanged, *changed),
        )

    def _drop_crons(self, conn: Connection, cron_ids: Sequence[UUID], *, keep_ended: bool) -> int:
        """Delete cron tickers with their waiting occurrences (and, unless ``keep_ended``,
        their ended ones); the occurrences that stay are detached. Returns how many
        cron tickers went."""
        if not cron_ids:
            return 0
        of_crons = T.cron_ticker_id.in_(cron_ids)
        doomed = T.status == IDLE if keep_ended else T.status != RUNNING
        waiting = select(T.id).where(of_crons, doomed)
        conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(waiting)))
        conn.execute(delete(tickers).where(of_crons, doomed))
        # running (and kept) occurrences stay until they end, detached from the cron
        conn.execute(update(tickers).where(of_crons).values(cron_ticker_id=None))
        result = conn.execute(delete(cron_tickers).where(C.id.in_(cron_ids)))
        return int(result.rowcount)

    def _announce_taken_back(self, occurrence_ids: Sequence[UUID]) -> None:
        """Occurrences made ahead were deleted (their cron changed)."""
        bus = self.events
        if occurrence_ids and bus is not None and bus.active:
            at: datetime = dialects.utcnow()
            for occurrence_id in occurrence_ids:
                bus.publish(TickerDeleted(at, TickerKind.CRON_OCCURRENCE, occurrence_id))

    def _announce_deleted(self, cron_ids: Sequence[UUID]) -> None:
        bus = self.events
        if bus is not None and bus.active:
            at: datetime = dialects.utcnow()
            for cron_id in cron_ids:
                bus.publish(CronTickerChanged(at, cron_id, deleted=True))

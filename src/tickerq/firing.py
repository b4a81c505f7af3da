"""Turning due cron tickers into occurrences, with the misfire policy applied."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from uuid import UUID

from tickerq.cron import CronExpression
from tickerq.enums import MisfirePolicy
from tickerq.stores.base import CRON_BATCH_SIZE, CronPlan

if TYPE_CHECKING:
    from tickerq.enums import Priority
    from tickerq.models import CronTicker
    from tickerq.stores.base import Store

__all__ = ["MAX_FIRES_PER_ROUND", "CronRound", "fire_due_crons", "first_fire_after", "parse_cached"]

logger = logging.getLogger(__name__)

MAX_FIRES_PER_ROUND = 1000
"""RUN_ALL after a long outage materializes at most this many fires per round."""


@lru_cache(maxsize=1024)
def parse_cached(expression: str, timezone: str) -> CronExpression:
    """Parse once per (expression, timezone)."""
    return CronExpression.parse(expression, timezone)


def first_fire_after(cron: CronTicker, after: datetime) -> datetime | None:
    """The first fire of ``cron`` strictly after ``after``."""
    try:
        return parse_cached(cron.expression, cron.timezone).next_after(after)
    except (ValueError, StopIteration):
        return None


def _latest_at_or_before(expr: CronExpression, now: datetime, floor: datetime) -> datetime:
    """The latest fire in [floor, now], found by widening a window back from now."""
    span = 1.0
    while True:
        start = max(floor - timedelta(microseconds=1), now - timedelta(seconds=span))
        fire = expr.next_after(start)
        if fire <= now:
            latest = fire
            while (following := expr.next_after(latest)) <= now:
                latest = following
            return latest
        if start < floor:
            return floor
        span *= 4


def plan_fires(
    expr: CronExpression,
    cursor: datetime,
    now: datetime,
    policy: MisfirePolicy,
    grace: float,
    *,
    until: datetime | None = None,
) -> tuple[list[datetime], datetime]:
    """Which fires in [cursor, until] to materialize (``until`` defaults to ``now``;
    later, the fires are made ahead of their time), and the new cursor (> until,
    or the next unprocessed fire when RUN_ALL hit its per-round cap).

    Fires within ``grace`` seconds of now (or after it) are on time and all run.
    Older ones were missed (the cron's nodes were down): RUN_ALL runs each,
    RUN_ONCE runs the latest of them once, SKIP runs none.
    """
    if until is None or until < now:
        until = now
    if policy is MisfirePolicy.RUN_ALL:
        fires: list[datetime] = []
        fire = cursor
        while fire <= until and len(fires) < MAX_FIRES_PER_ROUND:
            fires.append(fire)
            fire = expr.next_after(fire)
        return fires, fire
    missed_until = now - timedelta(seconds=grace)
    planned: list[datetime] = []
    if cursor <= missed_until and policy is MisfirePolicy.RUN_ONCE:
        planned.append(_latest_at_or_before(expr, missed_until, cursor))
    fire = cursor if cursor > missed_until else expr.next_after(missed_until)
    while fire <= until:
        planned.append(fire)
        fire = expr.next_after(fire)
    return planned, fire


@dataclass(frozen=True, slots=True)
class CronRound:
    """What one round of :func:`fire_due_crons` did."""

    created: int
    """Occurrences created."""
    behind: bool
    """A cron still has fires at or before ``now`` (+ the lead) left to materialize (a RUN_ALL
    backlog over :data:`MAX_FIRES_PER_ROUND`): run another round soon, without
    waiting for a deadline (``next_due_time`` is already past)."""


async def fire_due_crons(
    store: Store,
    now: datetime,
    priority_of: Callable[[str], Priority],
    misfire_grace: float,
    *,
    on_batch: Callable[[int], bool] | None = None,
    batch_size: int = CRON_BATCH_SIZE,
    lead: float = 0.0,
) -> CronRound:
    """Materialize the occurrences of every due cron ticker, at most
    :data:`MAX_FIRES_PER_ROUND` per cron: a long RUN_ALL backlog takes several
    rounds, so the caller can claim and run other work between them.

    With a ``lead`` (seconds), fires up to ``now + lead`` are made too: their
    occurrences wait, IDLE, for their time, so they start on time even when
    making them takes a while (many crons firing at once).

    The crons go in batches of ``batch_size`` (one store call, one transaction
    each), in id order, each cron at most once per round. After each batch
    ``on_batch(created)`` is called with the occurrences it made; when it returns
    False the round ends there (and says it is behind if crons were left).
    """
    until = now + timedelta(seconds=lead)
    created = 0
    behind = False
    cursors: dict[UUID, datetime] = {}
    invalid: list[UUID] = []
    # Crons that share a schedule share their plan: 10,000 every-minute crons due at
    # one cursor are planned once.
    plans: dict[tuple[str, str, datetime, MisfirePolicy], tuple[tuple[datetime, ...], datetime]]
    plans = {}

    def plan(cron: CronTicker) -> CronPlan | None:
        cursor = cron.next_fire_at
        if cursor is None:
            return None
        try:
            expr = parse_cached(cron.expression, cron.timezone)
        except ValueError:
            logger.exception("cron ticker %s has an invalid expression; disabling it", cron.id)
            invalid.append(cron.id)
            return None
        key = (cron.expression, cron.timezone, cursor, cron.misfire)
        planned = plans.get(key)
        if planned is None:
            made, following = plan_fires(
                expr, cursor, now, cron.misfire, misfire_grace, until=until
            )
            planned = plans[key] = (tuple(made), following)
        fires, new_cursor = planned
        due = sum(1 for fire in fires if fire <= now)  # not those made ahead
        if due > 1 or (due and now - fires[0] > timedelta(seconds=misfire_grace)):
            logger.info(
                "cron ticker %s (%s): %d fire(s) due since %s, policy %s",
                cron.id,
                cron.function,
                due,
                cursor.isoformat(),
                cron.misfire.name,
                extra={"action": "cron_misfire", "cron_ticker_id": str(cron.id)},
            )
        cursors[cron.id] = new_cursor
        return CronPlan(fires, new_cursor, priority_of(cron.function))

    after: UUID | None = None
    while True:
        batch = await store.materialize_crons(now, plan, after=after, limit=batch_size, until=until)
        made = sum(batch.created.values())
        created += made
        # A cron whose cursor is still at or before now had more fires than a round
        # takes (RUN_ALL). (Made nothing: another node moved it first and goes on.)
        behind = behind or any(
            n and cursors[cron_id] <= until for cron_id, n in batch.created.items()
        )
        cursors.clear()
        for cron_id in invalid:
            await store.update_cron_ticker(cron_id, {"enabled": False})
        invalid.clear()
        if batch.exhausted or batch.last_id is None:
            break
        if on_batch is not None and not on_batch(made):
            return CronRound(created, True)
        after = batch.last_id
        # A store that never suspends (memory) would hold the event loop for the
        # whole round: let running jobs and claims go on between batches.
        await asyncio.sleep(0)
    if on_batch is not None:
        on_batch(made)
    return CronRound(created, behind)

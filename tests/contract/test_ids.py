"""Store contract: every row id is time-ordered (a version 7 UUID, issue 9).

Random ids put each insert at a random page of the id indexes, which makes a
drain on a big table slow (bench/scale.py); ids that start with the wall-clock
millisecond they were made in keep new rows together. Each way a row is made
(an enqueue, many at once, a cron, its occurrences made one cron at a time, in a
batch and by "run now") must give such an id, on every store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from support import START
from tickerq import CronTicker, Priority, TickerQ, TimeTickerSpec
from tickerq.stores.base import CronPlan

if TYPE_CHECKING:
    from contract.conftest import Ops

MINUTE = timedelta(minutes=1)


def _check(ids: Iterable[UUID], before_ms: int, after_ms: int) -> None:
    for value in ids:
        assert value.version == 7, value
        made_ms = value.int >> 80
        assert before_ms <= made_ms <= after_ms, (value, before_ms, after_ms)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_every_way_a_row_is_made_gives_a_time_ordered_id(app: TickerQ, ops: Ops) -> None:
    before = _now_ms()
    one = await ops.add("alpha")
    many = await app.time_tickers.add_many(
        [TimeTickerSpec(function="beta"), TimeTickerSpec(function="gamma")]
    )
    child = await ops.add("gamma", parent_id=one.id)
    crons = [await app.cron_tickers.add("alpha", "*/5 * * * *") for _ in range(3)]
    first = START + 5 * MINUTE
    ops.clock.set(first)
    advanced = await ops.store.advance_cron_ticker(
        crons[0].id,
        expected_next=first,
        new_next=first + 5 * MINUTE,
        fires=[first],
        priority=Priority.NORMAL,
        now=ops.now,
    )
    assert advanced == 1

    def plan(cron: CronTicker) -> CronPlan:
        assert cron.next_fire_at is not None
        return CronPlan([cron.next_fire_at], cron.next_fire_at + 5 * MINUTE, Priority.NORMAL)

    batch = await ops.store.materialize_crons(ops.now, plan)
    assert sum(batch.created.values()) == 2
    ops.clock.tick(1)  # "run now" at the fire's instant would be that fire
    ran = await app.cron_tickers.run_now(crons[0].id)
    after = _now_ms()

    occurrences = [o for c in crons for o in await app.cron_tickers.occurrences(c.id)]
    assert len(occurrences) == 4 and ran.id in {o.id for o in occurrences}
    made = [one.id, child.id, *(t.id for t in many), *(c.id for c in crons)]
    _check([*made, *(o.id for o in occurrences)], before, after)

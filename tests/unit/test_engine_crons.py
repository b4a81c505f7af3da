"""The engine materializes cron fires beside its claim loop (issue 9, many crons)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from support import START
from tickerq import TickerContext, TickerQ
from tickerq.stores.base import CRON_BATCH_SIZE
from tickerq.testing import ManualClock, advance

MINUTE = timedelta(minutes=1)


async def test_due_jobs_are_claimed_while_many_crons_materialize(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, node_id="test-node", max_concurrency=4)
    unmaterialized_when_urgent_ran: list[int] = []

    @app.function()
    async def tick(ctx: TickerContext) -> None:
        return None

    @app.function()
    async def urgent(ctx: TickerContext) -> None:
        crons = await app.cron_tickers.query(function="tick")
        waiting = [
            c for c in crons if c.next_fire_at is not None and c.next_fire_at <= START + MINUTE
        ]
        unmaterialized_when_urgent_ran.append(len(waiting))

    await app.open()
    count = 3 * CRON_BATCH_SIZE
    crons = [await app.cron_tickers.add("tick", "* * * * *") for _ in range(count)]
    ticker = await urgent.schedule(at=START + MINUTE)

    async with app:
        await advance(app, MINUTE)
        done = await app.time_tickers.get(ticker.id)
        fires: Counter[tuple[object, object]] = Counter()
        for cron in crons:
            for o in await app.cron_tickers.occurrences(cron.id):
                fires[(cron.id, o.execution_time)] += 1

    # The urgent job was claimed and ran after the first batch of cron fires, not
    # after all of them: the loop claimed while the crons went on materializing.
    assert len(unmaterialized_when_urgent_ran) == 1
    assert 0 < unmaterialized_when_urgent_ran[0] < count
    assert done.executed_at == START + MINUTE
    # and every cron fired exactly once
    assert fires == Counter({(c.id, START + MINUTE): 1 for c in crons})

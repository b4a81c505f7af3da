"""Store contract, end to end: a RUN_ALL cron with a long backlog catches up in batches,
while time tickers and other crons keep their times (issue 8, item 7)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from support import START
from tickerq import MisfirePolicy, Priority, Status, TickerContext, TickerQ
from tickerq.firing import MAX_FIRES_PER_ROUND, fire_due_crons
from tickerq.testing import ManualClock, advance

MakeApp = Callable[..., TickerQ]
SECOND = timedelta(seconds=1)


async def test_run_all_backlog_catches_up_without_freezing_the_timer(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app()
    fired: list[datetime] = []
    minutely: list[datetime] = []
    later: list[datetime] = []

    @app.function()
    async def every_second(ctx: TickerContext) -> None:
        assert ctx.scheduled_for is not None
        fired.append(ctx.scheduled_for)

    @app.function()
    async def every_minute() -> None:
        minutely.append(app.clock.now())

    @app.function()
    async def once() -> None:
        later.append(app.clock.now())

    await app.open()
    backlog = await app.cron_tickers.add(
        "every_second", "* * * * * *", misfire=MisfirePolicy.RUN_ALL
    )
    await app.cron_tickers.add("every_minute", "* * * * *")  # RUN_ONCE
    outage = 2 * MAX_FIRES_PER_ROUND + 500  # seconds: a backlog of 2.5 rounds
    clock.tick(outage)  # the nodes were down: no engine ran
    restart = START + outage * SECOND
    ticker = await once.schedule(at=restart + 30 * SECOND)

    async with app:
        await advance(app, timedelta(seconds=90))
        done = await app.time_tickers.get(ticker.id)
        occurrences = await app.cron_tickers.occurrences(backlog.id, limit=10 * outage)
        cursor = (await app.cron_tickers.get(backlog.id)).next_fire_at

    # the time ticker due during the catch-up ran on time
    assert later == [restart + 30 * SECOND]
    assert done.status is Status.DONE and done.executed_at == restart + 30 * SECOND
    # the other cron: its missed fires once at the restart, then on time
    first_after = START + timedelta(minutes=42)  # 09:42:00, the first fire after 09:41:40
    assert minutely == [restart, first_after, first_after + timedelta(minutes=1)]
    # every missed fire of the RUN_ALL cron was created once and ran once
    expected = [START + n * SECOND for n in range(1, outage + 91)]
    assert sorted(o.execution_time for o in occurrences) == expected
    assert sorted(fired) == expected
    late = restart - 2 * SECOND  # fires before the restart ran late (DUE_DONE), the rest on time
    assert all(o.status is Status.DUE_DONE for o in occurrences if o.execution_time < late)
    assert all(o.status is Status.DONE for o in occurrences if o.execution_time >= restart)
    assert cursor == restart + 91 * SECOND


async def test_a_round_makes_one_batch_per_cron_and_says_it_is_behind(
    app: TickerQ, clock: ManualClock
) -> None:
    backlog = await app.cron_tickers.add("alpha", "* * * * * *", misfire=MisfirePolicy.RUN_ALL)
    other = await app.cron_tickers.add("beta", "* * * * *", misfire=MisfirePolicy.RUN_ALL)
    outage = 2 * MAX_FIRES_PER_ROUND + 500
    clock.tick(outage)
    now = clock.now()

    def normal(function: str) -> Priority:
        return Priority.NORMAL

    rounds = [await fire_due_crons(app.store, now, normal, 5.0) for _ in range(4)]

    assert [(r.created, r.behind) for r in rounds] == [
        (MAX_FIRES_PER_ROUND + outage // 60, True),  # the other cron fires in the first round
        (MAX_FIRES_PER_ROUND, True),
        (500, False),
        (0, False),
    ]
    made = await app.cron_tickers.occurrences(backlog.id, limit=10 * outage)
    assert sorted(o.execution_time for o in made) == [
        START + n * SECOND for n in range(1, outage + 1)
    ]
    assert len(await app.cron_tickers.occurrences(other.id)) == outage // 60
    assert (await app.cron_tickers.get(backlog.id)).next_fire_at == now + SECOND

"""A test of your own jobs: a week of cron and retries in milliseconds."""

from datetime import UTC, datetime, timedelta

from tickerq import Status, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance, run_until_idle


def make_app(clock: ManualClock) -> tuple[TickerQ, list[datetime]]:
    app = TickerQ(clock=clock)  # the memory store; every store works the same way
    sent: list[datetime] = []

    @app.function(cron="0 6 * * mon-fri", cron_timezone="Europe/Berlin")
    async def daily_report(ctx: TickerContext) -> None:
        sent.append(ctx.scheduled_for)

    @app.function(retries=2, retry_intervals=[60])
    async def charge(ctx: TickerContext[dict]) -> None:
        if ctx.attempt < 3:
            raise TimeoutError("payment provider did not answer")

    return app, sent


async def test_a_week_of_reports() -> None:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))  # a Monday, 00:00 UTC
    app, sent = make_app(clock)
    async with app:
        await advance(app, timedelta(days=7))  # runs each fire at its exact time
    assert len(sent) == 5  # Monday to Friday
    assert sent[0] == datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 06:00 in Berlin (UTC+1)
    assert clock.now() == datetime(2026, 3, 9, tzinfo=UTC)


async def test_retries_until_it_works() -> None:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    app, _ = make_app(clock)
    async with app:
        ticker = await app.get_function("charge").enqueue({"order": 7})
        await run_until_idle(app)  # the first attempt ran and failed
        assert (await app.time_tickers.get(ticker.id)).status is Status.IDLE  # waits to retry
        await advance(app, 120)  # the two retries, 60 s apart
        done = await app.time_tickers.get(ticker.id)
    assert done.status is Status.DONE
    assert done.retry_count == 2

import asyncio
from datetime import UTC, datetime

from tickerq import TickerContext, TickerQ
from tickerq.testing import ManualClock, advance

clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
app = TickerQ(clock=clock)  # a manual clock: the retries below take no real time


@app.function(retries=3, retry_intervals=[10, 60])  # then 60 s again: the last one repeats
async def flaky(ctx: TickerContext) -> str:
    if ctx.retries_left > 0:  # fail every attempt but the last
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return "ok"


async def main() -> None:
    async with app:
        ticker = await flaky.enqueue()
        await advance(app, 300)  # five minutes, in a few milliseconds
        done = await app.time_tickers.get(ticker.id)
        print(done.status, done.retry_count, done.result)  # DONE 3 ok
        for attempt in await app.time_tickers.attempts(ticker.id):
            print(attempt.started_at.time(), attempt.status, attempt.error_type)
        # 09:00:00 FAILED ConnectionError
        # 09:00:10 FAILED ConnectionError
        # 09:01:10 FAILED ConnectionError
        # 09:02:10 DONE None


if __name__ == "__main__":
    asyncio.run(main())

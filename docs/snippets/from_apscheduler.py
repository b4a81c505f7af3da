"""What an APScheduler app becomes: a nightly cron, an every-30-seconds job, a one-off run."""

import asyncio
from datetime import UTC, datetime, timedelta

from tickerq import MisfirePolicy, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance

app = TickerQ(clock=ManualClock(datetime(2026, 3, 2, 1, 30, tzinfo=UTC)), timezone="Europe/Berlin")
runs: list[str] = []


# scheduler.add_job(backup, "cron", hour=3, misfire_grace_time=300, coalesce=True)
@app.function(cron="0 3 * * *", misfire=MisfirePolicy.RUN_ONCE)
async def backup() -> None:
    runs.append("backup")


# scheduler.add_job(poll, "interval", seconds=30, max_instances=1)
@app.function(cron="*/30 * * * * *", max_concurrency=1)  # 6 fields: seconds first
async def poll() -> None:
    runs.append("poll")


# scheduler.add_job(remind, "date", run_date=when, args=["ada"])
@app.function
async def remind(ctx: TickerContext[str]) -> None:  # one request instead of args/kwargs
    runs.append(f"remind {ctx.request}")


async def main() -> None:
    async with app:
        await remind.schedule("ada", after=timedelta(minutes=1))
        await advance(app, timedelta(hours=1))  # 02:30 to 03:30 in Berlin
    print(runs.count("poll"), runs.count("backup"), runs.count("remind ada"))  # 120 1 1


if __name__ == "__main__":
    asyncio.run(main())

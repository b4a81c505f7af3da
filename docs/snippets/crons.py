import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tickerq import MisfirePolicy, TickerContext, TickerQ
from tickerq.cron import next_occurrences
from tickerq.testing import ManualClock, advance

BERLIN = ZoneInfo("Europe/Berlin")
clock = ManualClock(
    datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
)  # Europe's clocks go forward on the 29th
app = TickerQ(clock=clock, timezone="Europe/Berlin")  # the default timezone of cron tickers
fired: list[str] = []


@app.function(cron="30 2 * * *", misfire=MisfirePolicy.SKIP)  # 02:30 Berlin time, seeded on start
async def nightly(ctx: TickerContext) -> None:
    fired.append(f"{ctx.function} {ctx.scheduled_for.astimezone(BERLIN):%a %H:%M}")


@app.function
async def report(ctx: TickerContext[dict]) -> None:
    fired.append(f"{ctx.function} {ctx.scheduled_for.astimezone(BERLIN):%a %H:%M} {ctx.request}")


async def main() -> None:
    # What an expression does, before anything is stored:
    for when in next_occurrences("30 2 * * *", "Europe/Berlin", after=clock.now(), n=3):
        print("next:", when.astimezone(BERLIN).isoformat())
    # next: 2026-03-28T02:30:00+01:00
    # next: 2026-03-29T03:00:00+02:00   (02:30 does not exist that day: it fires at the change)
    # next: 2026-03-30T02:30:00+02:00

    async with app:
        # Crons can be added at run time too, each in its own timezone (6 fields: seconds first).
        cron = await app.cron_tickers.add(
            "report", "0 0 9 * * mon-fri", timezone="Europe/Berlin", request={"team": "ops"}
        )
        await advance(app, timedelta(days=3))
        occurrences = await app.cron_tickers.occurrences(cron.id)
    print(*fired, sep="\n")
    print(len(occurrences), "report occurrences")
    # nightly Sat 02:30
    # nightly Sun 03:00
    # nightly Mon 02:30
    # report Mon 09:00 {'team': 'ops'}
    # 1 report occurrences


if __name__ == "__main__":
    asyncio.run(main())

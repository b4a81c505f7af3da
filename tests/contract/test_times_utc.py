"""Times in any timezone go in as UTC instants and come back as UTC, on every store.

Regression (issue 8, item 8): aware non-UTC datetimes were stored and returned
unconverted by the memory store and by ``ManualClock.set``. Python compares two
datetimes of the same zone by wall time, so in the autumn overlap 02:45 CEST
sorted after 02:15 CET (it is half an hour earlier), and ``now + interval``
moved the wall clock, not time: a retry 30 minutes after 02:50 CEST was due an
hour late. Now every time is converted to UTC where it enters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerq import EngineOptions, Status, TickerContext, TickerQ, TimeTickerSpec
from tickerq.testing import ManualClock, advance, run_until_idle

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# Around the 2026 transitions: Berlin springs forward on March 29 (02:00 -> 03:00)
# and falls back on October 25 (03:00 -> 02:00); New York on March 8 and November 1.
AROUND_DST = [
    datetime(2026, 10, 25, 2, 45, fold=0, tzinfo=BERLIN),  # 00:45 UTC (summer time)
    datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=BERLIN),  # 01:15 UTC (winter time)
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),  # 01:30 UTC
    datetime(2026, 10, 25, 1, 59, tzinfo=BERLIN),  # 23:59 UTC the day before
    datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN),  # in the gap: 01:30 UTC
    datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),  # 01:00 UTC
    datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NEW_YORK),  # 05:30 UTC
    datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK),  # 06:10 UTC
    datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK),  # in the gap: 07:30 UTC
    datetime(2026, 3, 8, 3, 5, tzinfo=NEW_YORK),  # 07:05 UTC
]


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is UTC


def same_instant(a: datetime | None, b: datetime) -> bool:
    # Not a == b: Python never finds a time in a DST overlap equal to a time of
    # another zone (PEP 495), even the same instant.
    return a is not None and a.astimezone(UTC) == b.astimezone(UTC)


async def test_times_come_back_as_the_same_instants_in_utc(app: TickerQ) -> None:
    tickers = [
        await app.time_tickers.add("alpha", request=i, execution_time=when)
        for i, when in enumerate(AROUND_DST[:5])
    ]
    tickers += await app.time_tickers.add_many(
        [
            TimeTickerSpec(function="beta", request=i, execution_time=when)
            for i, when in enumerate(AROUND_DST[5:], start=5)
        ]
    )
    for ticker, when in zip(tickers, AROUND_DST, strict=True):
        assert same_instant(ticker.execution_time, when)
        assert is_utc(ticker.execution_time)
        stored = await app.time_tickers.get(ticker.id)
        assert stored == ticker
        assert is_utc(stored.execution_time)
        assert is_utc(stored.created_at) and is_utc(stored.updated_at)

    # Latest first, by instant (not by wall time in the overlap).
    listed = await app.time_tickers.query()
    by_instant = sorted(enumerate(AROUND_DST), key=lambda p: p[1].timestamp(), reverse=True)
    assert [t.request for t in listed] == [i for i, _ in by_instant]

    moved = await app.time_tickers.update(tickers[0].id, execution_time=AROUND_DST[1])
    assert same_instant(moved.execution_time, AROUND_DST[1]) and is_utc(moved.execution_time)
    assert await app.time_tickers.get(tickers[0].id) == moved


async def test_a_clock_set_in_another_zone_tells_utc(
    make_app: Callable[..., TickerQ], clock: ManualClock
) -> None:
    app = make_app()
    ran: list[tuple[int, datetime | None, datetime]] = []

    @app.function
    async def job(ctx: TickerContext[dict[str, int]]) -> None:
        ran.append((ctx.request["i"], ctx.scheduled_for, ctx.app.clock.now()))

    clock.set(datetime(2026, 10, 24, 20, 0, tzinfo=BERLIN))
    assert is_utc(clock.now())
    async with app:
        for i, when in enumerate(AROUND_DST[:4]):
            await job.schedule({"i": i}, at=when)
        clock.set(datetime(2026, 10, 25, 3, 0, fold=1, tzinfo=BERLIN))  # 02:00 UTC
        assert clock.now() == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
        assert is_utc(clock.now())
        await run_until_idle(app)
        done = await app.time_tickers.query()
    assert sorted(i for i, _, _ in ran) == [0, 1, 2, 3]
    for i, scheduled, now in ran:
        assert same_instant(scheduled, AROUND_DST[i]) and is_utc(scheduled)
        assert is_utc(now)
    for ticker in done:
        assert is_utc(ticker.executed_at) and is_utc(ticker.finished_at)


async def test_retry_across_the_autumn_change_waits_the_exact_interval(
    make_app: Callable[..., TickerQ], clock: ManualClock
) -> None:
    app = make_app()

    @app.function(retries=1, retry_intervals=[1800])
    async def flaky(ctx: TickerContext) -> None:
        raise RuntimeError("try again")

    # 02:50 summer time, ten minutes before the clocks go back to 02:00.
    first = datetime(2026, 10, 25, 2, 50, fold=0, tzinfo=BERLIN)
    clock.set(first - timedelta(minutes=5))
    async with app:
        ticker = await flaky.schedule(at=first)
        await advance(app, timedelta(minutes=5))
        waiting = await app.time_tickers.get(ticker.id)
    assert waiting.status is Status.IDLE and waiting.retry_count == 1
    # Half an hour later is 02:20 winter time (01:20 UTC), not 03:20 (02:20 UTC).
    assert waiting.execution_time == datetime(2026, 10, 25, 1, 20, tzinfo=UTC)
    assert is_utc(waiting.execution_time)


async def test_generated_zoned_times_round_trip_and_order(
    make_app: Callable[..., TickerQ],
) -> None:
    import asyncio

    app = make_app(options=EngineOptions(poll_interval=3600, heartbeat_interval=600))
    app.function("alpha")(_noop)
    await app.open()
    loop = asyncio.get_running_loop()
    zones = st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), UTC])
    near_changes = st.one_of(
        st.datetimes(datetime(2026, 10, 24, 22), datetime(2026, 10, 25, 4), timezones=zones),
        st.datetimes(datetime(2026, 3, 29, 0), datetime(2026, 3, 29, 4), timezones=zones),
        st.datetimes(datetime(2026, 11, 1, 0), datetime(2026, 11, 1, 3), timezones=zones),
        st.datetimes(datetime(2026, 4, 5, 1), datetime(2026, 4, 5, 3), timezones=zones),
    )

    async def check(times: list[datetime]) -> None:
        added = [
            await app.time_tickers.add("alpha", request=i, execution_time=when)
            for i, when in enumerate(times)
        ]
        try:
            for ticker, when in zip(added, times, strict=True):
                stored = await app.time_tickers.get(ticker.id)
                assert same_instant(stored.execution_time, when)
                assert is_utc(stored.execution_time)
            listed = [t.request for t in await app.time_tickers.query(limit=100)]
            # Latest first; equal instants in any order.
            instants = [times[i].timestamp() for i in listed]
            assert instants == sorted(instants, reverse=True)
        finally:
            await app.time_tickers.delete_many([t.id for t in added])

    @settings(
        max_examples=25,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(near_changes, min_size=2, max_size=8))
    def drive(times: list[datetime]) -> None:
        asyncio.run_coroutine_threadsafe(check(times), loop).result(timeout=20)

    await asyncio.to_thread(drive)


async def _noop(ctx: TickerContext) -> None:
    return None

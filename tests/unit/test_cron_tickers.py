"""Cron tickers in the engine: schedules, timezones, misfires, seeding, operations."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from support import START
from tickerq import MisfirePolicy, Status, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance, run_until_idle


def cron_app(clock: ManualClock, **kwargs: object) -> tuple[TickerQ, list[datetime]]:
    app = TickerQ(clock=clock, **kwargs)  # type: ignore[arg-type]
    fired: list[datetime] = []

    @app.function()
    async def tick(ctx: TickerContext) -> None:
        assert ctx.scheduled_for is not None
        fired.append(ctx.scheduled_for)

    return app, fired


async def test_a_week_of_cron_in_milliseconds(clock: ManualClock) -> None:
    app, fired = cron_app(clock)
    async with app:
        cron = await app.cron_tickers.add("tick", "0 */6 * * *")
        await advance(app, timedelta(days=7))
        history = await app.cron_tickers.occurrences(cron.id, limit=1000)
    assert len(fired) == 28
    assert fired[0] == START + timedelta(hours=3)  # 12:00 after 09:00
    assert all(b - a == timedelta(hours=6) for a, b in itertools.pairwise(fired))
    assert len(history) == 28 and {o.status for o in history} == {Status.DONE}
    assert history[0].execution_time == fired[-1]  # newest first


async def test_seconds_field_and_exact_fire_times(clock: ManualClock) -> None:
    app, fired = cron_app(clock)
    async with app:
        await app.cron_tickers.add("tick", "*/20 * * * * *")
        await advance(app, 61)
    assert [(f - START).total_seconds() for f in fired] == [20, 40, 60]


async def test_cron_runs_in_its_timezone(clock: ManualClock) -> None:
    app, fired = cron_app(clock, timezone="America/New_York")
    async with app:
        await app.cron_tickers.add("tick", "30 8 * * *")  # app timezone by default
        await app.cron_tickers.add("tick", "30 8 * * *", timezone="Asia/Tokyo")
        await advance(app, timedelta(days=1))
    # 08:30 New York (EST, UTC-5) = 13:30 UTC; 08:30 Tokyo (UTC+9) = 23:30 UTC the day before
    assert sorted(fired) == [
        datetime(2026, 3, 2, 13, 30, tzinfo=UTC),
        datetime(2026, 3, 2, 23, 30, tzinfo=UTC),
    ]


async def test_spring_forward_through_the_engine() -> None:
    # Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29 (01:00 UTC).
    clock = ManualClock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    app, fired = cron_app(clock)
    async with app:
        await app.cron_tickers.add("tick", "30 2 * * *", timezone="Europe/Berlin")
        await advance(app, timedelta(days=2))
    assert fired == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # the gap: once, at the transition
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]


async def test_fall_back_through_the_engine() -> None:
    # Europe/Berlin repeats 02:00-03:00 on 2026-10-25.
    clock = ManualClock(datetime(2026, 10, 24, 23, 0, tzinfo=UTC))
    app, fired = cron_app(clock)
    async with app:
        fixed = await app.cron_tickers.add("tick", "30 2 * * *", timezone="Europe/Berlin")
        await advance(app, timedelta(hours=4))
        fixed_fires = list(fired)
        await app.cron_tickers.delete(fixed.id)
        fired.clear()
    assert fixed_fires == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # once

    clock2 = ManualClock(datetime(2026, 10, 24, 23, 50, tzinfo=UTC))
    app2, fired2 = cron_app(clock2)
    async with app2:
        await app2.cron_tickers.add("tick", "30 * * * *", timezone="Europe/Berlin")
        await advance(app2, timedelta(hours=2))
    # interval-style: 02:30 CEST and 02:30 CET both fire
    assert fired2 == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("policy", "expected_offsets_min"),
    [
        (MisfirePolicy.RUN_ONCE, [50, 60]),  # the latest missed fire, then on schedule
        (MisfirePolicy.RUN_ALL, [10, 20, 30, 40, 50, 60]),
        (MisfirePolicy.SKIP, [60]),
    ],
)
async def test_misfire_policy_after_downtime(
    clock: ManualClock, policy: MisfirePolicy, expected_offsets_min: list[int]
) -> None:
    app, fired = cron_app(clock)
    async with app:
        await app.cron_tickers.add("tick", "*/10 * * * *", misfire=policy)
    # The node is down from 09:00 to 09:55.
    clock.tick(timedelta(minutes=55))
    async with app:
        await advance(app, timedelta(minutes=5))
    assert [int((f - START).total_seconds() // 60) for f in fired] == expected_offsets_min


async def test_disable_enable_and_run_now(clock: ManualClock) -> None:
    app, fired = cron_app(clock)
    async with app:
        cron = await app.cron_tickers.add("tick", "0 * * * *")
        await app.cron_tickers.disable(cron.id)
        await advance(app, timedelta(hours=3))
        assert fired == []
        enabled = await app.cron_tickers.enable(cron.id)
        # Fires missed while disabled are not made up.
        assert enabled.next_fire_at == START + timedelta(hours=4)
        occurrence = await app.cron_tickers.run_now(cron.id)
        assert occurrence.execution_time == clock.now()
        await run_until_idle(app)
        assert fired == [START + timedelta(hours=3)]
        await advance(app, timedelta(hours=1))
    assert fired == [START + timedelta(hours=3), START + timedelta(hours=4)]


async def test_update_expression_reschedules(clock: ManualClock) -> None:
    app, fired = cron_app(clock)
    async with app:
        cron = await app.cron_tickers.add("tick", "0 0 * * *")
        updated = await app.cron_tickers.update(cron.id, expression="*/5 * * * *")
        assert updated.next_fire_at == START + timedelta(minutes=5)
        await advance(app, timedelta(minutes=11))
    assert len(fired) == 2


async def test_decorator_crons_are_seeded_once(clock: ManualClock) -> None:
    app = TickerQ(clock=clock)
    count = 0

    @app.function(cron="*/30 * * * *")
    async def sweep() -> None:
        nonlocal count
        count += 1

    async with app:
        await advance(app, timedelta(hours=1))
    async with app:  # a restart must not add a second cron ticker
        await advance(app, timedelta(hours=1))
        crons = await app.cron_tickers.query()
    assert len(crons) == 1 and crons[0].seeded and crons[0].function == "sweep"
    assert count == 4


async def test_occurrence_retries(clock: ManualClock) -> None:
    app = TickerQ(clock=clock)
    tries: list[int] = []

    @app.function()
    async def flaky(ctx: TickerContext) -> None:
        tries.append(ctx.retry_count)
        raise RuntimeError("nope")

    async with app:
        cron = await app.cron_tickers.add("flaky", "0 10 * * *", retries=2, retry_intervals=[30])
        await advance(app, timedelta(hours=2))
        (occurrence,) = await app.cron_tickers.occurrences(cron.id)
        attempts = await app.cron_tickers.attempts(occurrence.id)
    assert tries == [0, 1, 2]
    assert occurrence.status is Status.FAILED and occurrence.retry_count == 2
    assert [a.started_at - START for a in attempts] == [
        timedelta(hours=1),
        timedelta(hours=1, seconds=30),
        timedelta(hours=1, seconds=60),
    ]


async def test_skip_if_already_running_for_cron(clock: ManualClock) -> None:
    import asyncio

    app = TickerQ(clock=clock)
    gate = asyncio.Event()
    starts: list[datetime] = []

    @app.function()
    async def long_cron(ctx: TickerContext) -> None:
        ctx.skip_if_already_running()
        starts.append(clock.now())
        await gate.wait()

    async with app:
        cron = await app.cron_tickers.add("long_cron", "* * * * * *")
        clock.tick(1)
        app.engine.wake()
        await asyncio.sleep(0.01)
        clock.tick(1)
        app.engine.wake()
        await asyncio.sleep(0.01)
        gate.set()
        await run_until_idle(app)
        statuses = [o.status for o in await app.cron_tickers.occurrences(cron.id)]
    assert starts == [START + timedelta(seconds=1)]
    assert statuses == [Status.SKIPPED, Status.DONE]


async def test_delete_cron_ticker(clock: ManualClock) -> None:
    app, fired = cron_app(clock)
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *")
        await app.cron_tickers.delete(cron.id)
        await advance(app, timedelta(minutes=5))
        assert await app.cron_tickers.query() == []
    assert fired == []

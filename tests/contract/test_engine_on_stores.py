"""Store contract, end to end: the engine on every store, driven by a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from support import START
from tickerq import (
    Priority,
    RunCondition,
    Status,
    TickerContext,
    TickerQ,
    TimeTickerSpec,
)
from tickerq.testing import advance, run_until_idle

MakeApp = Callable[..., TickerQ]


async def test_enqueued_job_runs_to_done(make_app: MakeApp) -> None:
    app = make_app()
    seen: list[int] = []

    @app.function()
    async def work(ctx: TickerContext[dict[str, int]]) -> None:
        seen.append(ctx.request["n"])

    async with app:
        ticker = await work.enqueue({"n": 7})
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
        attempts = await app.time_tickers.attempts(ticker.id)
    assert seen == [7]
    assert done.status is Status.DONE
    assert done.executed_at == START and done.finished_at == START
    assert done.lock_holder is None and done.lease_until is None
    assert [(a.number, a.status, a.node) for a in attempts] == [(0, Status.DONE, "node-a")]


async def test_scheduled_job_runs_at_its_time(make_app: MakeApp) -> None:
    app = make_app()
    ran_at: list[datetime] = []

    @app.function()
    async def later() -> None:
        ran_at.append(app.clock.now())

    async with app:
        ticker = await later.schedule(after=timedelta(seconds=90))
        await advance(app, timedelta(seconds=60))
        assert ran_at == []
        assert (await app.time_tickers.get(ticker.id)).status is Status.IDLE
        await advance(app, timedelta(seconds=60))
        done = await app.time_tickers.get(ticker.id)
    assert ran_at == [START + timedelta(seconds=90)]
    assert done.status is Status.DONE and done.executed_at == START + timedelta(seconds=90)


async def test_retries_follow_their_intervals(make_app: MakeApp) -> None:
    app = make_app()
    tries: list[int] = []

    @app.function(retries=2, retry_intervals=[10, 30])
    async def flaky(ctx: TickerContext) -> None:
        tries.append(ctx.retry_count)
        raise RuntimeError("down")

    async with app:
        ticker = await flaky.enqueue()
        await advance(app, timedelta(minutes=2))
        done = await app.time_tickers.get(ticker.id)
        attempts = await app.time_tickers.attempts(ticker.id)
    assert tries == [0, 1, 2]
    assert [(a.started_at - START).total_seconds() for a in attempts] == [0, 10, 40]
    assert [(a.number, a.status) for a in attempts] == [
        (0, Status.FAILED),
        (1, Status.FAILED),
        (2, Status.FAILED),
    ]
    assert all(a.error_type == "RuntimeError" and a.error_message == "down" for a in attempts)
    assert all(a.traceback and "RuntimeError: down" in a.traceback for a in attempts)
    assert done.status is Status.FAILED and done.retry_count == 2
    assert done.error_message == "down"


async def test_cron_fires_three_times(make_app: MakeApp) -> None:
    app = make_app()
    fired: list[datetime] = []

    @app.function()
    async def tick(ctx: TickerContext) -> None:
        fired.append(app.clock.now())

    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *")
        await advance(app, timedelta(minutes=3, seconds=30))
        occurrences = await app.cron_tickers.occurrences(cron.id)
        after = await app.cron_tickers.get(cron.id)
    fires = [START + timedelta(minutes=n) for n in (1, 2, 3)]
    assert fired == fires
    assert [o.execution_time for o in occurrences] == fires[::-1]
    assert all(o.status is Status.DONE for o in occurrences)
    assert after.next_fire_at == START + timedelta(minutes=4)


async def test_decorator_cron_is_seeded_once_across_restarts(make_app: MakeApp) -> None:
    app = make_app()
    runs: list[datetime] = []

    @app.function(cron="*/30 * * * *")
    async def sweep() -> None:
        runs.append(app.clock.now())

    async with app:
        await advance(app, timedelta(minutes=40))
    async with app:  # a restart must not add a second cron ticker
        await advance(app, timedelta(minutes=30))
        crons = await app.cron_tickers.query()
    assert len(crons) == 1 and crons[0].seeded and crons[0].function == "sweep"
    assert runs == [START + timedelta(minutes=30), START + timedelta(minutes=60)]


async def test_one_slot_goes_to_the_highest_priority(make_app: MakeApp) -> None:
    app = make_app(max_concurrency=1)
    order: list[str] = []

    def register(name: str, priority: Priority) -> None:
        @app.function(name, priority=priority)
        async def job() -> None:
            order.append(name)

    for name, priority in (
        ("low", Priority.LOW),
        ("normal", Priority.NORMAL),
        ("high", Priority.HIGH),
    ):
        register(name, priority)
    await app.open()
    for name in ("low", "normal", "high"):  # oldest has the lowest priority
        await app.time_tickers.add(name)
    async with app:
        await run_until_idle(app)
    assert order == ["high", "normal", "low"]


async def test_chain_runs_by_its_conditions(make_app: MakeApp) -> None:
    app = make_app()
    log: list[str] = []

    @app.function()
    async def step(ctx: TickerContext[str]) -> None:
        log.append(ctx.request)
        if ctx.request == "parent":
            raise RuntimeError("parent failed")

    def spec(name: str, condition: RunCondition | None = None) -> TimeTickerSpec:
        return TimeTickerSpec(function="step", request=name, run_condition=condition)

    async with app:
        parent, on_failure, on_success = await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="step",
                    request="parent",
                    children=[
                        spec("on-failure", RunCondition.ON_FAILURE),
                        spec("on-success", RunCondition.ON_SUCCESS),
                    ],
                )
            ]
        )
        await run_until_idle(app)
        statuses = [
            (await app.time_tickers.get(t.id)).status for t in (parent, on_failure, on_success)
        ]
    assert log == ["parent", "on-failure"]
    assert statuses == [Status.FAILED, Status.DONE, Status.SKIPPED]


async def test_cancel_reaches_a_running_job(make_app: MakeApp) -> None:
    app = make_app()
    started = asyncio.Event()

    @app.function()
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        ticker = await forever.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        await app.time_tickers.cancel(ticker.id)
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
        attempts = await app.time_tickers.attempts(ticker.id)
    assert done.status is Status.CANCELLED
    assert [a.status for a in attempts] == [Status.CANCELLED]


async def test_stop_leaves_nothing_locked(make_app: MakeApp) -> None:
    app = make_app()
    started = asyncio.Event()

    @app.function(retries=3)
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    await app.start()
    ticker = await forever.enqueue()
    await asyncio.wait_for(started.wait(), 5)
    await app.stop(grace=0)  # interrupts the job and closes the store

    await app.open()
    back = await app.time_tickers.get(ticker.id)
    assert back.status is Status.IDLE  # runs again at the next start
    assert back.retry_count == 0  # an interruption does not use up a retry
    assert (back.lock_holder, back.lease_until) == (None, None)
    assert await app.store.nodes() == []  # the node said goodbye

"""The engine on the memory store, driven by a manual clock."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from dataclasses import dataclass
from datetime import timedelta

import pytest

from support import START
from tickerq import (
    EngineOptions,
    Priority,
    RetryPolicy,
    Status,
    TerminateExecution,
    TickerContext,
    TickerQ,
)
from tickerq.testing import ManualClock, advance, run_until_idle


@dataclass
class Item:
    n: int


async def test_enqueued_job_runs_with_its_request(app: TickerQ) -> None:
    seen: list[int] = []

    @app.function()
    async def work(ctx: TickerContext[Item]) -> None:
        seen.append(ctx.request.n)

    async with app:
        ticker = await work.enqueue(Item(7))
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert seen == [7]
    assert done.status is Status.DONE
    assert done.executed_at == START and done.lock_holder is None
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [(a.number, a.status, a.node) for a in attempts] == [(0, Status.DONE, "test-node")]


async def test_scheduled_job_runs_exactly_at_its_time(app: TickerQ, clock: ManualClock) -> None:
    ran_at = []

    @app.function()
    async def later() -> None:
        ran_at.append(clock.now())

    async with app:
        await later.schedule(after=timedelta(minutes=5))
        await later.schedule(at=START + timedelta(minutes=2))
        await advance(app, timedelta(minutes=1))
        assert ran_at == []
        await advance(app, timedelta(minutes=10))
    assert ran_at == [START + timedelta(minutes=2), START + timedelta(minutes=5)]


async def test_engine_wakes_at_once_for_earlier_work(app: TickerQ, clock: ManualClock) -> None:
    ran = asyncio.Event()

    @app.function()
    async def job() -> None:
        ran.set()

    async with app:
        await job.schedule(after=timedelta(hours=1))
        await run_until_idle(app)  # the engine now sleeps until the hour
        assert app.engine._deadline == START + timedelta(hours=1)
        await job.enqueue()
        await asyncio.wait_for(ran.wait(), 1)
    assert clock.now() == START  # no time had to pass


async def test_async_on_loop_sync_in_pool(app: TickerQ) -> None:
    threads: dict[str, str] = {}

    @app.function()
    async def on_loop() -> None:
        threads["async"] = threading.current_thread().name

    @app.function()
    def in_pool() -> None:
        threads["sync"] = threading.current_thread().name

    async with app:
        await on_loop.enqueue()
        await in_pool.enqueue()
        await run_until_idle(app)
    assert threads["async"] == threading.current_thread().name
    assert threads["sync"].startswith("tickerq")


async def test_free_slot_goes_to_highest_priority(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_concurrency=1)
    order: list[str] = []
    gate = asyncio.Event()

    @app.function()
    async def first() -> None:
        order.append("first")
        await gate.wait()

    def make(name: str, priority: Priority) -> None:
        @app.function(name, priority=priority)
        async def job() -> None:
            order.append(name)

    make("low", Priority.LOW)
    make("normal", Priority.NORMAL)
    make("high", Priority.HIGH)

    async with app:
        await first.enqueue()
        await asyncio.sleep(0.01)
        assert order == ["first"]
        # Added oldest-first with the lowest priority first: priority must win over age.
        for name in ("low", "normal", "high"):
            await app.time_tickers.add(name)
        await asyncio.sleep(0.01)
        assert order == ["first"]  # the only slot is busy
        gate.set()
        await run_until_idle(app)
    assert order == ["first", "high", "normal", "low"]


async def test_long_running_gets_its_own_thread_outside_the_pool(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_concurrency=1)
    release = threading.Event()
    started = threading.Event()
    names: list[str] = []

    @app.function(priority=Priority.LONG_RUNNING)
    def crunch() -> None:
        names.append(threading.current_thread().name)
        started.set()
        release.wait(5)

    normal_ran = asyncio.Event()

    @app.function()
    async def quick() -> None:
        normal_ran.set()

    async with app:
        await crunch.enqueue()
        await asyncio.to_thread(started.wait, 5)
        await quick.enqueue()
        await asyncio.wait_for(normal_ran.wait(), 2)  # the single slot was still free
        assert app.engine.active == 1  # crunch still running
        release.set()
        await run_until_idle(app)
    assert names == ["tickerq-crunch"]


async def test_global_and_per_function_concurrency(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_concurrency=3)
    gate = asyncio.Event()
    running = {"limited": 0, "free": 0}
    peak = {"limited": 0, "free": 0, "total": 0}

    def make(name: str, limit: int) -> None:
        @app.function(name, max_concurrency=limit)
        async def job() -> None:
            running[name] += 1
            peak[name] = max(peak[name], running[name])
            peak["total"] = max(peak["total"], running["limited"] + running["free"])
            await gate.wait()
            running[name] -= 1

    make("limited", 1)
    make("free", 0)
    async with app:
        for _ in range(4):
            await app.time_tickers.add("limited")
            await app.time_tickers.add("free")
        await asyncio.sleep(0.02)
        assert running == {"limited": 1, "free": 2}
        gate.set()
        await run_until_idle(app)
        assert await app.time_tickers.count(status=Status.DONE) == 8
    assert peak == {"limited": 1, "free": 2, "total": 3}


async def test_async_timeout_fails_the_attempt(app: TickerQ) -> None:
    @app.function(timeout=0.02)
    async def hangs() -> None:
        await asyncio.Event().wait()

    async with app:
        ticker = await hangs.enqueue()
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert done.status is Status.FAILED
    assert done.error_type == "TimeoutError"
    assert done.error_message == "timed out after 0.02 s"


async def test_sync_timeout_fails_and_asks_the_thread_to_stop(app: TickerQ) -> None:
    saw_cancel = threading.Event()

    @app.function()
    def slow(ctx: TickerContext) -> None:
        for _ in range(200):
            if ctx.cancelled:
                saw_cancel.set()
                return
            threading.Event().wait(0.005)

    async with app:
        ticker = await app.time_tickers.add("slow", timeout=0.02)
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert done.status is Status.FAILED
    assert done.error_message == "timed out after 0.02 s"
    assert saw_cancel.is_set()


async def test_cancel_waiting_ticker(app: TickerQ) -> None:
    calls = []

    @app.function()
    async def job() -> None:
        calls.append(1)

    async with app:
        ticker = await job.schedule(after=3600)
        cancelled = await app.time_tickers.cancel(ticker.id)
        assert cancelled.status is Status.CANCELLED
        await advance(app, timedelta(hours=2))
    assert calls == []


async def test_cancel_running_async_job(app: TickerQ) -> None:
    started = asyncio.Event()
    cancelled = []

    @app.function()
    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with app:
        ticker = await job.enqueue()
        await started.wait()
        await app.time_tickers.cancel(ticker.id)
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert cancelled == [True]
    assert done.status is Status.CANCELLED


async def test_cancel_running_sync_job_is_cooperative(app: TickerQ) -> None:
    started = threading.Event()
    steps: list[int] = []

    @app.function()
    def job(ctx: TickerContext) -> None:
        started.set()
        for i in range(400):
            if ctx.cancelled:
                steps.append(i)
                return
            threading.Event().wait(0.002)

    async with app:
        ticker = await job.enqueue()
        await asyncio.to_thread(started.wait, 2)
        await app.time_tickers.cancel(ticker.id)
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert done.status is Status.CANCELLED
    assert steps and steps[0] < 399  # it stopped early because it saw the flag


async def test_retry_intervals_last_one_repeats(app: TickerQ, clock: ManualClock) -> None:
    @app.function(retries=3, retry_intervals=[10, 60])
    async def flaky() -> None:
        raise RuntimeError("down")

    async with app:
        ticker = await flaky.enqueue()
        await advance(app, timedelta(minutes=10))
        done = await app.time_tickers.get(ticker.id)
        attempts = await app.time_tickers.attempts(ticker.id)
    offsets = [(a.started_at - START).total_seconds() for a in attempts]
    assert offsets == [0, 10, 70, 130]
    assert [a.status for a in attempts] == [Status.FAILED] * 4
    assert all(a.error_message == "down" and a.traceback for a in attempts)
    assert done.status is Status.FAILED and done.retry_count == 3


async def test_retry_plan_is_stored_on_the_ticker(app: TickerQ, clock: ManualClock) -> None:
    @app.function(retries=1, retry_intervals=[30])
    async def flaky() -> None:
        raise RuntimeError("once")

    async with app:
        ticker = await flaky.enqueue()
        await run_until_idle(app)
        waiting = await app.time_tickers.get(ticker.id)
    # The retry is a row in the store, not a sleep in memory: it survives a stop.
    assert waiting.status is Status.IDLE
    assert waiting.retry_count == 1
    assert waiting.execution_time == START + timedelta(seconds=30)
    assert waiting.error_message == "once"


async def test_exponential_backoff_with_jitter(clock: ManualClock) -> None:
    policy = RetryPolicy(base=10, cap=3600, jitter=0.5)
    app = TickerQ(clock=clock, options=EngineOptions(retry=policy))

    @app.function(retries=4)
    async def flaky() -> None:
        raise RuntimeError("again")

    async with app:
        ticker = await flaky.enqueue()
        await advance(app, timedelta(hours=2))
        attempts = await app.time_tickers.attempts(ticker.id)
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 4
    for n, gap in enumerate(gaps):
        full = 10 * 2**n
        assert full * 0.5 <= gap <= full, (n, gap)
    assert len(set(gaps)) == 4


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=10, cap=60, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.delay(20, None, rng) for _ in range(200)]
    assert all(30 <= d <= 60 for d in delays)
    assert max(delays) - min(delays) > 10
    assert policy.delay(5, [1, 2, 3], rng) == 3


async def test_late_start_is_due_done(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, options=EngineOptions(late_threshold=1.0))
    due_flags: list[bool] = []

    @app.function()
    async def job(ctx: TickerContext) -> None:
        due_flags.append(ctx.is_due)

    await app.open()
    late = await job.enqueue()  # due now, but the engine starts 5 s later
    clock.tick(5)
    async with app:
        on_time = await job.schedule(after=60)
        await advance(app, 120)
        assert (await app.time_tickers.get(late.id)).status is Status.DUE_DONE
        assert (await app.time_tickers.get(on_time.id)).status is Status.DONE
    assert due_flags == [True, False]


async def test_terminate_execution_chooses_the_status(app: TickerQ) -> None:
    @app.function(retries=3)
    async def job(ctx: TickerContext[str]) -> None:
        if ctx.request == "skip":
            raise TerminateExecution(Status.SKIPPED, "nothing to do")
        raise TerminateExecution(Status.FAILED, "bad data, do not retry")

    async with app:
        skipped = await job.enqueue("skip")
        failed = await job.enqueue("fail")
        await run_until_idle(app)
        s = await app.time_tickers.get(skipped.id)
        f = await app.time_tickers.get(failed.id)
    assert (s.status, s.skipped_reason) == (Status.SKIPPED, "nothing to do")
    assert (f.status, f.retry_count, f.error_message) == (
        Status.FAILED,
        0,
        "bad data, do not retry",
    )


async def test_skip_if_already_running(app: TickerQ) -> None:
    gate = asyncio.Event()
    entered = []

    @app.function()
    async def exclusive(ctx: TickerContext) -> None:
        ctx.skip_if_already_running()
        entered.append(ctx.id)
        await gate.wait()

    async with app:
        first = await exclusive.enqueue()
        await asyncio.sleep(0.01)
        second = await exclusive.enqueue()
        await asyncio.sleep(0.01)
        gate.set()
        await run_until_idle(app)
        assert (await app.time_tickers.get(first.id)).status is Status.DONE
        assert (await app.time_tickers.get(second.id)).status is Status.SKIPPED
    assert entered == [first.id]


async def test_exception_handler_sees_every_failed_attempt(app: TickerQ) -> None:
    seen: list[tuple[str, int, str]] = []

    @app.on_exception
    async def handler(ctx: TickerContext, error: BaseException) -> None:
        seen.append((ctx.function, ctx.retry_count, str(error)))

    @app.function(retries=1, retry_intervals=[0])
    def broken() -> None:
        raise ValueError("nope")

    async with app:
        await broken.enqueue()
        await advance(app, 1)
    assert seen == [("broken", 0, "nope"), ("broken", 1, "nope")]


async def test_graceful_stop_waits_then_interrupts(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_concurrency=2)
    quick_started = asyncio.Event()

    @app.function()
    async def quick() -> None:
        quick_started.set()
        await asyncio.sleep(0.01)

    @app.function()
    async def endless() -> None:
        await asyncio.Event().wait()

    @app.function()
    async def later() -> None:
        pass

    await app.start()
    q = await quick.enqueue()
    e = await endless.enqueue()
    await quick_started.wait()
    waiting = await later.schedule(after=3600)
    await app.stop(grace=0.05)
    assert (await app.time_tickers.get(q.id)).status is Status.DONE
    interrupted = await app.time_tickers.get(e.id)
    assert interrupted.status is Status.IDLE  # runs again at the next start
    assert interrupted.retry_count == 0  # an interruption does not use a retry
    assert interrupted.lock_holder is None
    assert (await app.time_tickers.get(waiting.id)).status is Status.IDLE


async def test_unstarted_work_stays_idle_on_stop(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_concurrency=1)
    gate = asyncio.Event()

    @app.function()
    async def blocker() -> None:
        await gate.wait()

    @app.function()
    async def queued() -> None:
        pass

    await app.start()
    await blocker.enqueue()
    pending = [await queued.enqueue() for _ in range(3)]
    await asyncio.sleep(0.01)
    asyncio.get_running_loop().call_later(0.01, gate.set)
    await app.stop(grace=1)
    statuses = {(await app.time_tickers.get(t.id)).status for t in pending}
    assert statuses == {Status.IDLE}


async def test_paused_engine_claims_nothing(app: TickerQ) -> None:
    ran = []

    @app.function()
    async def job() -> None:
        ran.append(1)

    async with app:
        app.engine.pause()
        await job.enqueue()
        await asyncio.sleep(0.01)
        assert ran == []
        app.engine.resume()
        await run_until_idle(app)
    assert ran == [1]


async def test_scheduling_before_start_runs_once_started(app: TickerQ) -> None:
    ran = []

    @app.function()
    async def job(ctx: TickerContext[int]) -> None:
        ran.append(ctx.request)

    await app.open()
    ticker = await job.enqueue(5)
    assert (await app.time_tickers.get(ticker.id)).status is Status.IDLE
    async with app:
        await run_until_idle(app)
    assert ran == [5]


async def test_request_that_no_longer_validates_fails_the_run(app: TickerQ) -> None:
    @app.function(retries=3)
    async def job(ctx: TickerContext[Item]) -> None:
        pass

    async with app:
        ticker = await app.time_tickers.add("job", request={"n": 1})
        await app.time_tickers.update(ticker.id, execution_time=START + timedelta(hours=1))
        # a row edited behind the app's back (e.g. by hand in the database)
        row = app.store._rows[ticker.id]  # type: ignore[attr-defined]
        row.request = {"n": "not a number"}
        await advance(app, timedelta(hours=2))
        done = await app.time_tickers.get(ticker.id)
    # it never will validate: failed at once, its retries left unused
    assert (done.status, done.retry_count) == (Status.FAILED, 0)
    assert done.error_type == "InvalidRequestError"
    assert "not a number" in (done.error_message or "")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_many_jobs_all_reach_a_final_status(clock: ManualClock, kind: str) -> None:
    app = TickerQ(clock=clock, max_concurrency=8)
    count = 0

    if kind == "async":

        @app.function("job")
        async def job_async() -> None:
            nonlocal count
            count += 1
    else:

        @app.function("job")
        def job_sync() -> None:
            nonlocal count
            count += 1

    async with app:
        for i in range(300):
            await app.time_tickers.add("job", after=i % 7)
        await advance(app, 10)
        assert await app.time_tickers.count(status=Status.DONE) == 300
    assert count == 300


def test_terminate_execution_needs_a_final_status() -> None:
    with pytest.raises(ValueError, match="IN_PROGRESS"):
        TerminateExecution(Status.IN_PROGRESS, "not allowed")


async def test_every_status_change_is_an_event(app: TickerQ) -> None:
    from tickerq.events import Event, TickerChanged

    events: list[Event] = []
    app.events.subscribe(events.append)

    @app.function()
    async def job() -> None:
        pass

    async with app:
        ticker = await job.enqueue()
        await run_until_idle(app)
    statuses = [e.status for e in events if isinstance(e, TickerChanged) and e.id == ticker.id]
    assert statuses == [Status.IDLE, Status.IN_PROGRESS, Status.DONE]
    states = [e.state for e in events if type(e).__name__ == "EngineStateChanged"]  # type: ignore[attr-defined]
    assert states == ["running", "stopped"]


async def test_retention_purges_old_ended_tickers(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, options=EngineOptions(retention=3600, retention_batch=2))

    @app.function()
    async def job() -> None:
        pass

    async with app:
        old = [await job.enqueue() for _ in range(5)]
        await run_until_idle(app)
        keep = await job.schedule(after=timedelta(hours=3))  # still waiting
        await advance(app, timedelta(hours=2, minutes=1))
        assert await app.time_tickers.count() == 1
        assert (await app.time_tickers.get(keep.id)).status is Status.IDLE
    for ticker in old:
        with pytest.raises(LookupError):
            await app.time_tickers.get(ticker.id)

"""Graceful stop: bounded in time, results that arrive are kept, no run overlaps its re-run.

Found by probing (issue 8, item 4): a hung sync job kept a stopped worker alive
forever (the thread pool's threads are joined at exit), and a sync job given
back at stop kept running while its row ran again elsewhere, its result thrown
away.
"""

from __future__ import annotations

import asyncio
import threading
import time

from support import START
from tickerq import EngineOptions, Status, TickerContext, TickerQ
from tickerq.testing import ManualClock


def make(grace: float = 0.2, margin: float = 0.3) -> TickerQ:
    return TickerQ(
        clock=ManualClock(START),
        node_id="node-a",
        options=EngineOptions(grace_period=grace, stop_margin=margin),
    )


async def started(flag: threading.Event) -> None:
    for _ in range(1000):
        if flag.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the job never started")


async def test_a_hung_sync_job_does_not_hold_up_stop_and_keeps_its_claim() -> None:
    app = make()
    running, release = threading.Event(), threading.Event()

    @app.function()
    def hung() -> None:  # ignores cancellation
        running.set()
        release.wait(30)

    try:
        async with app:
            ticker = await hung.enqueue()
            await started(running)
            began = time.monotonic()
        took = time.monotonic() - began
        assert took < 0.2 + 0.3 + 0.5, f"stop took {took:.2f} s"
        row = await app.store.get_time_ticker(ticker.id)
        assert row is not None
        # not given back: it cannot run again while its thread still runs
        assert (row.status, row.lock_holder) == (Status.IN_PROGRESS, "node-a")
        threads = [t for t in threading.enumerate() if t.name.startswith("tickerq")]
        assert threads and all(t.daemon for t in threads), threads
    finally:
        release.set()


async def test_a_sync_job_that_returns_after_being_asked_to_stop_keeps_its_result() -> None:
    app = make()
    running = threading.Event()

    @app.function()
    def polite(ctx: TickerContext[None]) -> None:
        running.set()
        while not ctx.cancelled:
            time.sleep(0.01)
        # finishes its work (a warm shutdown): the result counts

    async with app:
        ticker = await polite.enqueue()
        await started(running)
    row = await app.store.get_time_ticker(ticker.id)
    assert row is not None and row.status is Status.DONE
    assert row.lock_holder is None


async def test_a_sync_job_that_ends_cancelled_at_stop_is_given_back_without_a_retry() -> None:
    app = make()
    running = threading.Event()

    @app.function(retries=0)
    def quits(ctx: TickerContext[None]) -> None:
        running.set()
        while not ctx.cancelled:
            time.sleep(0.01)
        ctx.raise_if_cancelled()

    async with app:
        ticker = await quits.enqueue()
        await started(running)
    row = await app.store.get_time_ticker(ticker.id)
    assert row is not None
    assert (row.status, row.retry_count, row.lock_holder) == (Status.IDLE, 0, None)


async def test_a_second_signal_cuts_the_grace_period_short() -> None:
    app = make(grace=30, margin=0.2)
    running = asyncio.Event()

    @app.function()
    async def forever() -> None:
        running.set()
        await asyncio.sleep(3600)

    await app.start()
    ticker = await forever.enqueue()
    await asyncio.wait_for(running.wait(), 5)
    began = time.monotonic()
    stopping = asyncio.create_task(app.stop())
    await asyncio.sleep(0.05)
    app.engine.hurry()
    await asyncio.wait_for(stopping, 5)
    assert time.monotonic() - began < 2
    row = await app.store.get_time_ticker(ticker.id)
    assert row is not None and row.status is Status.IDLE  # interrupted: it runs again

"""Runs whose node froze or died: claims, stale results and the lost-run limit.

Found by probing (issue 8, items 2 and 3): a node frozen past its lease took its
row back while its first run still went on; the first run's result was written
over the second claim (the store matched results by node only); and a job that
killed every node that ran it (os._exit) went round forever, never FAILED.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from contract.conftest import Ops
from tickerq import EngineOptions, RunCondition, Status, TickerContext, TickerQ
from tickerq.stores.base import LostRunPolicy
from tickerq.testing import run_until_idle


async def test_a_result_lands_only_on_the_claim_it_belongs_to(app: TickerQ, ops: Ops) -> None:
    """Same node, claimed twice: the first claim's late result changes nothing."""
    ticker = await ops.add("alpha")
    first = await ops.claim_one(ticker.id, node="node-a", lease=60)
    stale = ops.outcome(first, Status.FAILED, node="node-a", error_message="stale")
    later = ops.at(61)
    assert await ops.store.reclaim_expired(later) == 1
    second = await ops.claim_one(ticker.id, now=later, node="node-a")
    assert second.claim != stale.claim

    await ops.store.complete([stale])
    got = await app.time_tickers.get(ticker.id)
    assert (got.status, got.lock_holder, got.error_message) == (
        Status.IN_PROGRESS,
        "node-a",
        None,
    )
    await ops.store.complete([ops.outcome(second, Status.DONE, node="node-a", started_at=later)])
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.DONE
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [a.error_type for a in attempts] == ["LeaseExpired", None]


async def test_stale_results_are_refused_in_a_claim_batch_too(app: TickerQ, ops: Ops) -> None:
    """The results handed to claim() (the hot path) are matched to their claim as well."""
    ticker = await ops.add("alpha")
    first = await ops.claim_one(ticker.id, lease=60)
    stale = ops.outcome(first, Status.DONE)
    later = ops.at(61)
    await ops.store.reclaim_expired(later)
    await ops.claim_one(ticker.id, now=later)
    jobs = await ops.store.claim(
        later,
        node="node-a",
        lease_until=later + timedelta(seconds=60),
        slots=1,
        capacity={},
        functions=["alpha"],
        finished=[stale],
    )
    assert jobs == []
    assert (await app.time_tickers.get(ticker.id)).status is Status.IN_PROGRESS


async def test_heartbeat_names_the_runs_a_node_no_longer_holds(app: TickerQ, ops: Ops) -> None:
    from contract.test_runs import node

    kept, lost = await ops.add("alpha"), await ops.add("beta")
    jobs = await ops.claim(lease=60)
    assert {j.id for j in jobs} == {kept.id, lost.id}
    await ops.store.heartbeat(node("node-a", ops), [kept.id], ops.at(120))
    await ops.store.reclaim_expired(ops.at(61))  # lost's lease ran out; kept's was renewed
    await ops.claim(ops.at(61), node="node-b")
    gone = await ops.store.heartbeat(node("node-a", ops), [kept.id, lost.id], ops.at(180))
    assert gone == [lost.id]


async def test_a_row_lost_too_often_ends_failed(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    policy = {"policies": {"alpha": LostRunPolicy(max_stale_restarts=2)}}
    at = ops.now
    for restarts in (1, 2):
        await ops.claim_one(ticker.id, now=at, lease=60)
        at += timedelta(seconds=61)
        assert await ops.store.reclaim_expired(at, **policy) == 1
        got = await app.time_tickers.get(ticker.id)
        assert (got.status, got.stale_restarts) == (Status.IDLE, restarts)
    await ops.claim_one(ticker.id, now=at, lease=60)
    at += timedelta(seconds=61)
    assert await ops.store.reclaim_expired(at, **policy) == 1
    got = await app.time_tickers.get(ticker.id)
    assert (got.status, got.stale_restarts, got.error_type) == (Status.FAILED, 3, "LeaseExpired")
    assert "max_stale_restarts=2" in (got.error_message or "")
    assert got.finished_at == at and got.lock_holder is None
    assert [a.error_type for a in await app.time_tickers.attempts(ticker.id)] == [
        "LeaseExpired"
    ] * 3
    assert await ops.store.claim(at, node="x", lease_until=at, slots=9, capacity={}, functions=["alpha"]) == []  # fmt: skip


async def test_a_job_that_must_not_repeat_is_cancelled_when_lost(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    on_cancel = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_CANCELLED)
    on_success = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    await ops.claim_one(parent.id, lease=60)
    policy = {"default": LostRunPolicy(rerun=False)}
    assert await ops.store.reclaim_expired(ops.at(61), **policy) == 1
    got = await app.time_tickers.get(parent.id)
    assert (got.status, got.stale_restarts) == (Status.CANCELLED, 1)
    assert "rerun_lost=False" in (got.error_message or "")
    # the chain resolves as for any cancelled parent
    assert (await app.time_tickers.get(on_success.id)).status is Status.SKIPPED
    assert [j.id for j in await ops.claim(ops.at(61))] == [on_cancel.id]


async def test_the_engine_never_runs_one_row_twice_after_losing_its_claim(
    make_app: Any, store_kind: str
) -> None:
    """A node whose lease ran out (it froze) while a run went on gets the row back from
    its own claim: the first run carries on under the new claim, no second run starts,
    and the node's slots are not leaked."""
    app = make_app(
        options=EngineOptions(lease=60, heartbeat_interval=3600, poll_interval=1, grace_period=1)
    )
    release = asyncio.Event()
    starts: list[int] = []

    @app.function()
    async def slow(ctx: TickerContext[None]) -> None:
        starts.append(ctx.retry_count)
        await release.wait()

    async with app:
        ticker = await slow.enqueue()
        await until(lambda: starts == [0])
        assert app.engine.active == 1
        # the node "froze": its lease ran out and another node took the row back
        await app.store.reclaim_expired(app.clock.now() + timedelta(seconds=61))
        app.clock.tick(62)
        app.engine.wake()
        for _ in range(1000):  # until the engine claimed it again
            got = await app.time_tickers.get(ticker.id)
            if got.status is Status.IN_PROGRESS:
                break
            await asyncio.sleep(0.005)
        assert got.status is Status.IN_PROGRESS and got.lock_holder == "node-a"
        await asyncio.sleep(0.05)  # a second run would have started by now
        assert starts == [0], "a second run of the same row started on one node"
        assert app.engine.active == 1
        release.set()
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
        assert app.engine.active == 0 and app.engine._active == 0
    assert done.status in (Status.DONE, Status.DUE_DONE)
    attempts = await _attempts_after_stop(app, ticker.id, store_kind)
    assert [a.error_type for a in attempts] == ["LeaseExpired", None]


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (real time, bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def _attempts_after_stop(app: TickerQ, ticker_id: Any, store_kind: str) -> list[Any]:
    await app.open()
    try:
        return await app.time_tickers.attempts(ticker_id)
    finally:
        await app.stop()


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, BaseException, GeneratorExit])
async def test_a_base_exception_fails_the_job_not_the_node(
    make_app: Any, raised: type[BaseException]
) -> None:
    app = make_app()
    after: list[str] = []

    @app.function()
    async def poison() -> None:
        raise raised("from the job")

    @app.function()
    def poison_sync() -> None:
        raise raised("from the job")

    @app.function()
    async def fine() -> None:
        after.append("ran")

    async with app:
        bad = [await poison.enqueue(), await poison_sync.enqueue()]
        await run_until_idle(app)
        assert app.engine.running
        ok = await fine.enqueue()
        await run_until_idle(app)
        ended = [await app.time_tickers.get(t.id) for t in bad]
        good = await app.time_tickers.get(ok.id)
    assert [(t.status, t.error_type) for t in ended] == [(Status.FAILED, raised.__name__)] * 2
    assert good.status is Status.DONE and after == ["ran"]

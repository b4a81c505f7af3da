"""Store contract: claiming due work, releasing it, and the next due time."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

from support import START
from tickerq import Priority, RunCondition, Status, TickerQ
from tickerq.enums import TickerKind

if TYPE_CHECKING:
    from contract.conftest import Ops


async def test_claims_only_due_rows_and_only_once(app: TickerQ, ops: Ops) -> None:
    due = await ops.add("alpha")
    later = await ops.add("alpha", after=60)
    await ops.add("beta", parent_id=due.id)  # waits for its parent, whatever the time
    assert [j.id for j in await ops.claim()] == [due.id]
    assert await ops.claim() == []  # a second claim does not return it again
    assert await ops.claim(node="node-b") == []
    assert await ops.claim(ops.at(59)) == []
    assert [j.id for j in await ops.claim(ops.at(60))] == [later.id]


async def test_claimed_rows_are_started_and_locked(app: TickerQ, ops: Ops) -> None:
    ticker = await app.time_tickers.add(
        "alpha", request={"k": "v"}, retries=2, retry_intervals=[7], timeout=9, description="d"
    )
    ops.clock.tick(3)
    (job,) = await ops.claim(node="node-b", lease=90)
    assert job.kind is TickerKind.TIME
    assert (job.id, job.function, job.priority) == (ticker.id, "alpha", Priority.NORMAL)
    assert job.request == {"k": "v"}
    assert (job.retries, job.retry_intervals, job.retry_count) == (2, (7.0,), 0)
    assert job.timeout == 9 and job.execution_time == START
    assert job.parent_id is None and job.cron_ticker_id is None
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.IN_PROGRESS  # a claim starts the job
    assert got.lock_holder == "node-b"
    assert got.locked_at == ops.now
    assert got.lease_until == ops.now + timedelta(seconds=90)


async def test_highest_priority_first_then_oldest(app: TickerQ, ops: Ops) -> None:
    # added with the lowest priority first and the oldest times last: priority wins
    low = await ops.add("low", execution_time=START)
    beta = await ops.add("beta", execution_time=START + timedelta(seconds=1))
    high = await ops.add("high", execution_time=START + timedelta(seconds=2))
    alpha = await ops.add("alpha", execution_time=START + timedelta(milliseconds=500))
    ops.clock.tick(3)
    everything = await ops.claim(slots=10)
    assert [j.id for j in everything] == [high.id, alpha.id, beta.id, low.id]
    await ops.store.release(everything)
    best_two = await ops.claim(slots=2)
    assert [j.id for j in best_two] == [high.id, alpha.id]
    assert [j.id for j in await ops.claim(slots=1)] == [beta.id]
    assert [j.id for j in await ops.claim(slots=1)] == [low.id]


async def test_slots_do_not_count_long_running_jobs(app: TickerQ, ops: Ops) -> None:
    for _ in range(3):
        await ops.add("alpha")
    for _ in range(2):
        await ops.add("long")
    claimed = await ops.claim(slots=1)
    assert Counter(j.function for j in claimed) == {"long": 2, "alpha": 1}
    assert await ops.claim(slots=0) == []  # two alpha left, no slot
    extra_long = await ops.add("long")
    assert [j.id for j in await ops.claim(slots=0)] == [extra_long.id]
    assert Counter(j.function for j in await ops.claim(slots=5)) == {"alpha": 2}


async def test_per_function_capacity(app: TickerQ, ops: Ops) -> None:
    for n in range(3):
        await ops.add("alpha", execution_time=START - timedelta(seconds=10 - n))
    for _ in range(2):
        await ops.add("beta")
    claimed = await ops.claim(slots=10, capacity={"alpha": 1})
    assert Counter(j.function for j in claimed) == {"alpha": 1, "beta": 2}
    assert await ops.claim(slots=10, capacity={"alpha": 0}) == []  # none of alpha
    assert Counter(j.function for j in await ops.claim(capacity={"alpha": 2})) == {"alpha": 2}
    running = await app.time_tickers.count(status=Status.IN_PROGRESS)
    idle = await app.time_tickers.count(status=Status.IDLE)
    assert (running, idle) == (5, 0)  # rows held back by capacity were not left locked


async def test_capacity_applies_to_long_running_jobs(app: TickerQ, ops: Ops) -> None:
    for _ in range(3):
        await ops.add("long")
    assert len(await ops.claim(slots=0, capacity={"long": 1})) == 1
    assert await ops.claim(slots=0, capacity={"long": 0}) == []
    assert await app.time_tickers.count(status=Status.IDLE) == 2


async def test_capacity_leaves_the_slots_to_other_functions(app: TickerQ, ops: Ops) -> None:
    # The oldest due rows are of a function at its limit: the free slots still go
    # to the other due work in the same claim.
    for n in range(3):
        await ops.add("alpha", execution_time=START - timedelta(seconds=10 - n))
    beta = [await ops.add("beta") for _ in range(2)]
    claimed = await ops.claim(slots=3, capacity={"alpha": 1})
    assert Counter(j.function for j in claimed) == {"alpha": 1, "beta": 2}
    assert {j.id for j in claimed} >= {b.id for b in beta}


async def test_claims_only_the_functions_asked_for(app: TickerQ, ops: Ops) -> None:
    alpha = await ops.add("alpha")
    beta = await ops.add("beta")
    assert [j.id for j in await ops.claim(functions=["beta", "gamma"])] == [beta.id]
    assert await ops.claim(functions=[]) == []
    assert await ops.claim(functions=["beta"]) == []
    assert [j.id for j in await ops.claim(functions=["alpha"])] == [alpha.id]


async def test_release_gives_back_claims_that_did_not_run(app: TickerQ, ops: Ops) -> None:
    first = await ops.add("alpha", execution_time=START - timedelta(seconds=1))
    second = await ops.add("alpha")
    job1, job2 = await ops.claim()
    assert (job1.id, job2.id) == (first.id, second.id)
    await ops.store.release([job1])
    back = await app.time_tickers.get(first.id)
    assert back.status is Status.IDLE
    assert (back.lock_holder, back.locked_at, back.lease_until) == (None, None, None)
    still = await app.time_tickers.get(second.id)
    assert still.status is Status.IN_PROGRESS and still.lock_holder == "node-a"
    assert [j.id for j in await ops.claim(node="node-b")] == [first.id]
    await ops.store.release([])


async def test_next_due_time(app: TickerQ, ops: Ops) -> None:
    assert await ops.store.next_due_time() is None
    in_two = await ops.add("alpha", after=120)
    assert await ops.store.next_due_time() == START + timedelta(seconds=120)
    in_one = await ops.add("alpha", after=60)
    await ops.add("beta", parent_id=in_one.id, run_condition=RunCondition.ON_SUCCESS)
    assert await ops.store.next_due_time() == START + timedelta(seconds=60)
    ops.clock.tick(60)
    await ops.claim_one(in_one.id)  # claimed rows are no longer waiting
    assert await ops.store.next_due_time() == START + timedelta(seconds=120)
    cron = await app.cron_tickers.add("gamma", "* * * * *")  # next fire 09:02
    assert cron.next_fire_at == START + timedelta(minutes=2)
    assert await ops.store.next_due_time() == START + timedelta(minutes=2)
    await app.cron_tickers.disable(cron.id)
    assert await ops.store.next_due_time() == START + timedelta(seconds=120)
    await app.time_tickers.cancel(in_two.id)
    assert await ops.store.next_due_time() is None


async def test_function_limits_hold_across_nodes(app: TickerQ, ops: Ops, store_kind: str) -> None:
    if store_kind == "memory":
        return  # one process: the engine's own count is the cluster's (capacity above)
    for _ in range(4):
        await ops.add("alpha")
    await ops.add("beta")
    first = await ops.claim(node="node-a", limits={"alpha": 2})
    assert Counter(j.function for j in first) == {"alpha": 2, "beta": 1}
    # Another node sees the two alpha runs of node-a: no room left for alpha.
    assert await ops.claim(node="node-b", limits={"alpha": 2}) == []
    done = next(j for j in first if j.function == "alpha")
    await ops.store.complete([ops.outcome(done, Status.DONE, node="node-a")])
    second = await ops.claim(node="node-b", limits={"alpha": 2})
    assert [j.function for j in second] == ["alpha"]

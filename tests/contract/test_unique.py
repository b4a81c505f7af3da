"""Store contract: unique jobs (``unique_key`` and ``on_conflict``, issue 12 part 3).

A key is held while a ticker of its function with that key waits or runs; an
enqueue while it is held keeps the holder, raises, or replaces it (in place
while it waits, chained after it while it runs). Retries and updates never make
a second holder. Every store answers alike, and two apps on one database agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

from support import START
from tickerq import (
    BulkOutcome,
    DuplicateJobError,
    EnqueueOutcome,
    InvalidArgumentError,
    RunCondition,
    Status,
    TickerContext,
    TickerNotFoundError,
    TickerQ,
    TimeTickerSpec,
)
from tickerq.testing import run_until_idle

if TYPE_CHECKING:
    from contract.conftest import Ops

MakeApp = Callable[..., TickerQ]
LATER = START + timedelta(hours=1)

ADDED, KEPT = EnqueueOutcome.ADDED, EnqueueOutcome.KEPT
REPLACED, CHAINED = EnqueueOutcome.REPLACED, EnqueueOutcome.CHAINED


async def count(app: TickerQ, function: str = "alpha") -> int:
    return await app.time_tickers.count(function=function)


# -- keep, error, replace ------------------------------------------------------------------


async def test_keep_returns_the_holder_and_stores_nothing(app: TickerQ, ops: Ops) -> None:
    first = await ops.add("alpha", request={"n": 1}, unique_key="order-42")
    assert first.enqueued is ADDED and first.unique_key == "order-42"
    again = await ops.add("alpha", request={"n": 2}, unique_key="order-42")
    assert again.enqueued is KEPT
    assert again.id == first.id and again.request == {"n": 1}
    assert await count(app) == 1
    stored = await ops.get(first.id)
    assert stored.unique_key == "order-42" and stored.enqueued is None
    assert stored == first  # the outcome is not part of the ticker's value


async def test_error_names_function_key_and_holder(app: TickerQ, ops: Ops) -> None:
    first = await ops.add("alpha", unique_key="k")
    with pytest.raises(DuplicateJobError) as excinfo:
        await ops.add("alpha", request=2, unique_key="k", on_conflict="error")
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert (error.function, error.unique_key, error.holder_id) == ("alpha", "k", first.id)
    assert "'alpha'" in str(error) and "'k'" in str(error) and str(first.id) in str(error)
    assert await count(app) == 1 and (await ops.get(first.id)).request is None


async def test_replace_changes_a_waiting_holder_in_place(app: TickerQ, ops: Ops) -> None:
    first = await ops.add("alpha", request={"n": 1}, execution_time=LATER, unique_key="k")
    sooner = ops.at(30)
    replaced = await app.time_tickers.add(
        "alpha",
        request={"n": 2},
        execution_time=sooner,
        description="newest",
        retries=3,
        retry_intervals=[5],
        timeout=9,
        headers={"tenant": "t1"},
        unique_key="k",
        on_conflict="replace",
    )
    assert replaced.enqueued is REPLACED and replaced.id == first.id
    stored = await ops.get(first.id)
    assert stored.status is Status.IDLE and stored.unique_key == "k"
    assert (stored.request, stored.execution_time, stored.description) == (
        {"n": 2},
        sooner,
        "newest",
    )
    assert (stored.retries, stored.retry_intervals, stored.timeout) == (3, (5.0,), 9.0)
    assert stored.headers == {"tenant": "t1"} and stored.created_at == first.created_at
    assert await count(app) == 1
    assert await ops.claim(ops.at(29)) == []
    assert [j.id for j in await ops.claim(sooner)] == [first.id]


async def test_replace_of_a_running_holder_chains_after_it(app: TickerQ, ops: Ops) -> None:
    holder = await ops.add("alpha", request=1, unique_key="k")
    job = await ops.claim_one(holder.id)

    chained = await ops.add("alpha", request=2, unique_key="k", on_conflict="replace")
    assert chained.enqueued is CHAINED and chained.id != holder.id
    assert chained.parent_id == holder.id and chained.unique_key == "k"
    assert (await ops.get(holder.id)).unique_key is None  # the key moved on
    # one waiting ticker per key: later replaces change the chained one
    again = await ops.add("alpha", request=3, unique_key="k", on_conflict="replace")
    assert again.enqueued is REPLACED and again.id == chained.id and again.request == 3
    kept = await ops.add("alpha", request=4, unique_key="k")
    assert kept.enqueued is KEPT and kept.id == chained.id
    assert await count(app) == 2
    # it does not run beside the holder
    assert await ops.claim(ops.at(60)) == []

    await ops.complete(job, Status.FAILED)  # whatever way the run ends
    assert [j.id for j in await ops.claim(ops.at(61))] == [chained.id]
    assert (await ops.get(chained.id)).request == 3


async def test_chained_ticker_runs_after_a_holder_ended_by_the_claim_path(
    app: TickerQ, ops: Ops
) -> None:
    # The engine writes results with its next claim (the hot path on SQL stores):
    # a child chained while the holder ran must still be resolved.
    holder = await ops.add("alpha", unique_key="k")
    job = await ops.claim_one(holder.id)
    chained = await ops.add("alpha", request="next", unique_key="k", on_conflict="replace")
    now = ops.at(5)
    claimed = await app.store.claim(
        now,
        node="node-a",
        lease_until=now + timedelta(seconds=60),
        slots=10,
        capacity={},
        functions=["alpha"],
        finished=[ops.outcome(job, Status.DONE, started_at=ops.now, finished_at=now)],
    )
    claimed += await ops.claim(ops.at(6))
    assert [j.id for j in claimed] == [chained.id]
    assert (await ops.get(holder.id)).status is Status.DONE


async def test_replace_after_the_holder_ended_adds(app: TickerQ, ops: Ops) -> None:
    first = await ops.add("alpha", unique_key="k")
    await ops.run(first.id, Status.DONE)
    fresh = await ops.add("alpha", unique_key="k", on_conflict="replace")
    assert fresh.enqueued is ADDED and fresh.id != first.id and fresh.parent_id is None


async def test_a_keyed_chain_child_is_resolved_like_any_child(app: TickerQ, ops: Ops) -> None:
    waiting = await ops.add("alpha", execution_time=LATER)
    child = await ops.add("beta", parent_id=waiting.id, unique_key="c1")
    assert child.enqueued is ADDED and child.execution_time is None
    assert (await ops.add("beta", unique_key="c1")).id == child.id
    assert [j.id for j in await ops.claim(ops.at(60))] == []  # it waits for its parent

    ended = await ops.add("alpha")
    await ops.run(ended.id, Status.DONE)
    due = await ops.add("beta", parent_id=ended.id, unique_key="c2")
    assert due.status is Status.IDLE and due.execution_time is not None
    assert [j.id for j in await ops.claim()] == [due.id]

    skipped = await ops.add(
        "beta", parent_id=ended.id, unique_key="c3", run_condition=RunCondition.ON_FAILURE
    )
    assert skipped.enqueued is ADDED and skipped.status is Status.SKIPPED
    assert (await ops.add("beta", unique_key="c3")).enqueued is ADDED  # released at once

    with pytest.raises(TickerNotFoundError):
        await ops.add("beta", parent_id=uuid4(), unique_key="c1")
    with pytest.raises(TickerNotFoundError):
        await ops.add("beta", parent_id=uuid4(), unique_key="c4")
    assert await count(app, "beta") == 4


# -- when a key is held ------------------------------------------------------------------


@pytest.mark.parametrize("end", [Status.DONE, Status.FAILED, Status.CANCELLED, Status.SKIPPED])
async def test_a_key_is_released_when_its_ticker_ends(app: TickerQ, ops: Ops, end: Status) -> None:
    first = await ops.add("alpha", unique_key="k")
    if end is Status.CANCELLED:
        await app.time_tickers.cancel(first.id)
    else:
        await ops.run(first.id, end)
    assert (await ops.get(first.id)).status is end
    second = await ops.add("alpha", unique_key="k", on_conflict="error")
    assert second.enqueued is ADDED and second.id != first.id


async def test_a_key_stays_held_while_its_ticker_waits_to_retry_or_runs(
    app: TickerQ, ops: Ops
) -> None:
    first = await ops.add("alpha", unique_key="k", retries=2)
    job = await ops.claim_one(first.id)
    assert (await ops.add("alpha", unique_key="k")).id == first.id  # running
    await ops.complete(job, Status.IDLE, retry_at=ops.at(60))  # back to wait for a retry
    assert (await ops.get(first.id)).status is Status.IDLE
    assert (await ops.add("alpha", unique_key="k")).id == first.id
    # a run lost with its node: taken back, it still holds the key
    await ops.claim_one(first.id, now=ops.at(60), lease=1)
    assert await app.store.reclaim_expired(ops.at(120)) == 1
    assert (await ops.add("alpha", unique_key="k")).enqueued is KEPT


async def test_keys_are_per_function_and_tickers_without_one_are_free(
    app: TickerQ, ops: Ops
) -> None:
    a = await ops.add("alpha", unique_key="k")
    b = await ops.add("beta", unique_key="k")
    assert a.enqueued is ADDED and b.enqueued is ADDED and a.id != b.id
    other = await ops.add("alpha", unique_key="K")  # keys are case-sensitive
    plain = [await ops.add("alpha") for _ in range(2)]
    assert other.enqueued is ADDED and all(t.enqueued is ADDED for t in plain)
    assert await count(app) == 4 and await count(app, "beta") == 1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"unique_key": ""}, "''"),
        ({"unique_key": "   "}, "'   '"),
        ({"unique_key": "k" * 201}, "201"),
        ({"unique_key": 42}, "42"),
        ({"unique_key": "a\x00b"}, "unique_key"),
        ({"unique_key": "k", "on_conflict": "overwrite"}, "'overwrite'"),
        ({"on_conflict": None}, "None"),
    ],
)
async def test_bad_keys_and_conflict_policies_store_nothing(
    app: TickerQ, ops: Ops, kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await ops.add("alpha", **kwargs)
    assert named in str(excinfo.value)
    assert await count(app) == 0


async def test_the_longest_key_is_stored_exactly(app: TickerQ, ops: Ops) -> None:
    key = "ü" * 200
    first = await ops.add("alpha", unique_key=key)
    assert (await ops.get(first.id)).unique_key == key
    assert (await ops.add("alpha", unique_key=key)).id == first.id


# -- retry and update ----------------------------------------------------------------------


async def test_retry_of_an_ended_ticker_whose_key_is_held_is_refused(
    app: TickerQ, ops: Ops
) -> None:
    old = await ops.add("alpha", unique_key="k")
    await ops.run(old.id, Status.FAILED)
    holder = await ops.add("alpha", unique_key="k")

    result = await app.time_tickers.retry_many([old.id])
    item = result.of(old.id)
    assert item.outcome is BulkOutcome.NOT_ALLOWED and item.held_by == holder.id
    assert item.status is Status.FAILED and str(holder.id) in (item.reason or "")
    with pytest.raises(DuplicateJobError) as excinfo:
        await app.time_tickers.retry(old.id)
    assert excinfo.value.holder_id == holder.id
    assert (await ops.get(old.id)).status is Status.FAILED

    # the holder itself may be run now; once it ended, the old one may run again
    assert (await app.time_tickers.retry_many([holder.id])).done == [holder.id]
    await ops.run(holder.id, Status.DONE)
    assert (await app.time_tickers.retry(old.id)).status is Status.IDLE
    assert (await ops.add("alpha", unique_key="k")).id == old.id


async def test_retry_of_two_ended_tickers_with_one_key_runs_one(app: TickerQ, ops: Ops) -> None:
    ended = []
    for _ in range(2):
        t = await ops.add("alpha", unique_key="k")
        await ops.run(t.id, Status.DONE)
        ended.append(t.id)
    first, second = sorted(ended)
    result = await app.time_tickers.retry_many([second, first])
    assert result.done == [first]
    assert result.of(second).held_by == first
    assert [(await ops.get(i)).status for i in (first, second)] == [Status.IDLE, Status.DONE]


async def test_update_to_a_held_key_is_refused(app: TickerQ, ops: Ops) -> None:
    holder = await ops.add("alpha", execution_time=LATER, unique_key="k")
    free = await ops.add("alpha", execution_time=LATER)
    with pytest.raises(DuplicateJobError) as excinfo:
        await app.time_tickers.update(free.id, unique_key="k", description="x")
    assert excinfo.value.holder_id == holder.id
    unchanged = await ops.get(free.id)
    assert unchanged.unique_key is None and unchanged.description == ""
    # another function's key is another key
    other = await ops.add("beta", execution_time=LATER)
    assert (await app.time_tickers.update(other.id, unique_key="k")).unique_key == "k"
    # giving the key up frees it
    assert (await app.time_tickers.update(holder.id, unique_key=None)).unique_key is None
    assert (await app.time_tickers.update(free.id, unique_key="k")).unique_key == "k"
    assert (await ops.add("alpha", unique_key="k")).id == free.id


async def test_update_many_gives_a_key_to_one_ticker(app: TickerQ, ops: Ops) -> None:
    ids = sorted([(await ops.add("alpha", execution_time=LATER)).id for _ in range(3)])
    result = await app.time_tickers.update_many(ids, unique_key="k", description="keyed")
    assert result.done == [ids[0]]
    assert [result.of(i).held_by for i in ids[1:]] == [ids[0], ids[0]]
    assert [(await ops.get(i)).description for i in ids] == ["keyed", "", ""]
    with pytest.raises(InvalidArgumentError, match="unique_key"):
        await app.time_tickers.update_many(ids, unique_key="")


async def test_add_many_with_a_held_key_stores_nothing(app: TickerQ, ops: Ops) -> None:
    holder = await ops.add("alpha", unique_key="k")
    specs = [
        TimeTickerSpec(function="beta", unique_key="k"),
        TimeTickerSpec(function="alpha", unique_key="k"),
    ]
    with pytest.raises(DuplicateJobError) as excinfo:
        await app.time_tickers.add_many(specs)
    assert excinfo.value.holder_id == holder.id
    twice = [TimeTickerSpec(function="gamma", unique_key="j")] * 2
    with pytest.raises(InvalidArgumentError, match="twice"):
        await app.time_tickers.add_many(twice)
    assert await app.time_tickers.count() == 1
    added = await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="beta", unique_key="k", children=[TimeTickerSpec(function="gamma")]
            )
        ]
    )
    assert [t.unique_key for t in added] == ["k", None]
    assert (await ops.add("beta", unique_key="k")).id == added[0].id


# -- races and the engine ------------------------------------------------------------------


async def test_concurrent_enqueues_of_one_key_store_one(make_app: MakeApp, store_kind: str) -> None:
    apps = [make_app(node_id=f"n{i}") for i in range(1 if store_kind == "memory" else 2)]
    for a in apps:
        a.function("alpha")(_noop)
        await a.open()
    calls = [
        apps[i % len(apps)].time_tickers.add("alpha", request=i, unique_key="k") for i in range(12)
    ]
    got = await asyncio.gather(*calls)
    assert sorted(t.enqueued.value for t in got if t.enqueued) == ["ADDED"] + ["KEPT"] * 11
    assert len({t.id for t in got}) == 1
    assert await apps[0].time_tickers.count() == 1

    replaced = await asyncio.gather(
        *(
            apps[i % len(apps)].time_tickers.add(
                "alpha", request=100 + i, unique_key="k", on_conflict="replace"
            )
            for i in range(8)
        )
    )
    assert {t.enqueued for t in replaced} == {REPLACED} and len({t.id for t in replaced}) == 1
    assert await apps[0].time_tickers.count() == 1


async def test_debounce_on_the_engine_runs_the_latest_request_once(make_app: MakeApp) -> None:
    app = make_app()
    seen: list[int] = []

    @app.function()
    async def sync_search(ctx: TickerContext[int]) -> None:
        seen.append(ctx.request)

    async with app:
        for n in range(5):
            await sync_search.schedule(n, after=30, unique_key="user-7", on_conflict="replace")
            app.clock.tick(10)  # each call comes before the last one ran
        assert seen == []
        app.clock.tick(30)
        app.engine.wake(None)
        await run_until_idle(app)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        await run_until_idle(app)
        assert await app.time_tickers.count(function="sync_search") == 1
    assert seen == [4]


async def _noop(ctx: TickerContext) -> None:
    return None

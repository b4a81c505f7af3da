"""Store contract: pauses of functions and of the whole cluster, stored and obeyed.

The store part (set, clear, read, the next due time without paused rows), the
manager's checks (``app.pauses``) and the engine on each store: a paused
function's due jobs stay IDLE without using an attempt and run once resumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from support import START
from tickerq import (
    EngineOptions,
    FunctionNotFoundError,
    InvalidArgumentError,
    Node,
    Pause,
    Status,
    SystemClock,
    TickerContext,
    TickerQ,
)
from tickerq.events import Event, PausesChanged
from tickerq.models import CLUSTER
from tickerq.testing import advance, run_until_idle

if TYPE_CHECKING:
    from contract.conftest import Ops

MakeApp = Callable[..., TickerQ]


# -- the store ---------------------------------------------------------------------------


async def test_set_read_and_clear_pauses(app: TickerQ, ops: Ops) -> None:
    store = ops.store
    assert await store.pauses() == {}
    first = Pause(function="alpha", paused_at=START, paused_by="ops")
    assert await store.set_pause(first) == first
    # paused again: the first pause holds, unchanged
    again = Pause(function="alpha", paused_at=START + timedelta(seconds=5), paused_by="other")
    assert await store.set_pause(again) == first
    cluster = Pause(function=CLUSTER, paused_at=START + timedelta(seconds=1))
    assert await store.set_pause(cluster) == cluster
    assert await store.pauses() == {"alpha": first, CLUSTER: cluster}
    assert cluster.cluster and not first.cluster
    assert await store.clear_pause("alpha", START) is True
    assert await store.clear_pause("alpha", START) is False
    assert await store.clear_pause("beta", START) is False
    assert await store.pauses() == {CLUSTER: cluster}
    assert await store.clear_pause(CLUSTER, START) is True
    assert await store.pauses() == {}


async def test_pauses_are_announced_on_the_bus(app: TickerQ, ops: Ops) -> None:
    seen: list[Event] = []
    unsubscribe = app.events.subscribe(seen.append)
    try:
        await ops.store.set_pause(Pause(function="alpha", paused_at=START))
        await ops.store.set_pause(Pause(function="alpha", paused_at=START))  # no change
        await ops.store.clear_pause("alpha", START + timedelta(seconds=3))
        await ops.store.clear_pause("alpha", START)  # no change
    finally:
        unsubscribe()
    changes = [e for e in seen if isinstance(e, PausesChanged)]
    assert changes == [
        PausesChanged(START, "alpha", True),
        PausesChanged(START + timedelta(seconds=3), "alpha", False),
    ]


async def test_next_due_time_leaves_paused_rows_out(app: TickerQ, ops: Ops) -> None:
    await ops.add("alpha", execution_time=START + timedelta(seconds=10))
    await ops.add("beta", execution_time=START + timedelta(seconds=20))
    await ops.add("alpha", execution_time=START - timedelta(seconds=5))
    store = ops.store
    assert await store.next_due_time() == START - timedelta(seconds=5)
    assert await store.next_due_time(paused=["alpha"]) == START + timedelta(seconds=20)
    assert await store.next_due_time(START, paused=["beta"]) == START + timedelta(seconds=10)
    assert await store.next_due_time(START, paused=["alpha"]) == START + timedelta(seconds=20)
    assert await store.next_due_time(paused=["alpha", "beta"]) is None
    assert await store.next_due_time(paused=[CLUSTER]) is None
    # a cron of a paused function still counts: its fires are made, and wait
    await app.cron_tickers.add("alpha", "*/5 * * * *")
    fire = START + timedelta(minutes=5)
    assert await store.next_due_time(paused=[CLUSTER]) == fire
    assert await store.next_due_time(START, paused=["alpha", "beta"]) == fire
    # the rows left out are still there for the unpaused question
    assert await store.next_due_time() == START - timedelta(seconds=5)


async def test_a_claim_of_the_unpaused_functions_leaves_the_paused_rows(
    app: TickerQ, ops: Ops
) -> None:
    paused = await ops.add("alpha")
    free = await ops.add("beta")
    assert [j.id for j in await ops.claim(functions=["beta", "gamma"])] == [free.id]
    assert (await ops.get(paused.id)).status is Status.IDLE
    assert [j.id for j in await ops.claim()] == [paused.id]


@pytest.mark.parametrize("path", ["plain", "limited"])
async def test_a_claim_leaves_what_is_paused_as_stored_whatever_it_is_asked(
    app: TickerQ, ops: Ops, path: str
) -> None:
    """The engine's view of the pauses can be a moment old (a pause stored while it
    was about to claim): the claim itself leaves the rows of functions paused when
    it runs, on the hot path and on the general one (a capacity limit)."""
    capacity = {"gamma": 5} if path == "limited" else None
    store = ops.store
    paused = await ops.add("alpha")
    free = await ops.add("beta")
    await store.set_pause(Pause(function="alpha", paused_at=START))
    assert [j.id for j in await ops.claim(capacity=capacity)] == [free.id]
    assert (await ops.get(paused.id)).status is Status.IDLE
    later = await ops.add("beta")
    await store.set_pause(Pause(function=CLUSTER, paused_at=START))
    assert await ops.claim(capacity=capacity) == []
    await store.clear_pause(CLUSTER, START)
    await store.clear_pause("alpha", START)
    claimed = {j.id for j in await ops.claim(capacity=capacity)}
    assert claimed == {paused.id, later.id}


async def test_change_marker_moves_on_pause_and_resume(app: TickerQ, ops: Ops) -> None:
    store = ops.store
    before = await store.change_marker()
    if before is None:
        pytest.skip("a store no other process changes has no change marker")
    await store.set_pause(Pause(function="alpha", paused_at=START))
    paused = await store.change_marker()
    assert paused is not None and "pauses" in paused.changed_since(before)
    await store.clear_pause("alpha", START)
    resumed = await store.change_marker()
    assert resumed is not None and "pauses" in resumed.changed_since(paused)


# -- app.pauses ----------------------------------------------------------------------------


async def test_manager_pauses_resumes_and_lists(app: TickerQ, ops: Ops) -> None:
    held = await app.pauses.pause("alpha", by="alice")
    assert (held.function, held.paused_at, held.paused_by) == ("alpha", START, "alice")
    ops.clock.tick(5)
    assert await app.pauses.pause("alpha") == held  # already paused: the first stands
    cluster = await app.pauses.pause_cluster()
    assert cluster.paused_by == "node-a"  # who: this node, by default
    assert await app.pauses.query() == [cluster, held]  # the cluster's first
    assert await app.pauses.get("alpha") == held
    assert await app.pauses.get(CLUSTER) == cluster
    assert await app.pauses.get("beta") is None
    assert await app.pauses.resume("alpha") is True
    assert await app.pauses.resume("alpha") is False
    assert await app.pauses.resume_cluster() is True
    assert await app.pauses.resume_cluster() is False
    assert await app.pauses.query() == []


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda a: a.pauses.pause("nope"), FunctionNotFoundError, "'nope'"),
        (lambda a: a.pauses.pause("*"), InvalidArgumentError, "'*'"),
        (lambda a: a.pauses.pause(42), InvalidArgumentError, "42"),
        (lambda a: a.pauses.pause("a\x00b"), InvalidArgumentError, "function"),
        (lambda a: a.pauses.pause("x" * 201), InvalidArgumentError, "201"),
        (lambda a: a.pauses.pause("alpha", by=7), InvalidArgumentError, "by"),
        (lambda a: a.pauses.pause("alpha", by="y" * 201), InvalidArgumentError, "by"),
        (lambda a: a.pauses.pause_cluster(by=["me"]), InvalidArgumentError, "by"),
        (lambda a: a.pauses.resume("nope"), FunctionNotFoundError, "'nope'"),
        (lambda a: a.pauses.resume("*"), InvalidArgumentError, "resume_cluster"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    app: TickerQ, call: Callable[[TickerQ], object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error) as raised:
        await call(app)  # type: ignore[misc]
    assert named in str(raised.value)
    assert await app.store.pauses() == {}


async def test_a_function_the_cluster_knows_can_be_paused_and_a_gone_one_resumed(
    app: TickerQ, ops: Ops
) -> None:
    elsewhere = "runs_elsewhere"
    node = Node(
        id="node-b",
        started_at=START,
        last_heartbeat=START,
        version="x",
        max_concurrency=1,
        functions=(elsewhere,),
    )
    await ops.store.heartbeat(node, [], START + timedelta(minutes=1))
    assert (await app.pauses.pause(elsewhere)).function == elsewhere
    # the node that runs it is gone: it can still be resumed (it is paused)
    await ops.store.remove_node("node-b")
    assert await app.pauses.resume(elsewhere) is True
    with pytest.raises(FunctionNotFoundError, match=elsewhere):
        await app.pauses.resume(elsewhere)  # neither paused nor known any more


# -- the engine ------------------------------------------------------------------------------


async def test_paused_jobs_wait_without_an_attempt_and_run_once_resumed(
    make_app: MakeApp,
) -> None:
    app = make_app()
    ran: list[str] = []

    @app.function()
    async def mail(ctx: TickerContext[int]) -> None:
        ran.append(f"mail {ctx.request}")

    @app.function()
    async def other() -> None:
        ran.append("other")

    async with app:
        await app.pauses.pause("mail")
        waiting = [await mail.enqueue(n) for n in range(3)]
        later = await mail.schedule(9, after=timedelta(seconds=30))
        await other.enqueue()
        await advance(app, timedelta(minutes=2))
        assert ran == ["other"]  # the paused function's jobs wait; the others run
        for ticker in [*waiting, later]:
            row = await app.time_tickers.get(ticker.id)
            assert (row.status, row.retry_count, row.lock_holder) == (Status.IDLE, 0, None)
            assert await app.time_tickers.attempts(ticker.id) == []
        assert await app.pauses.resume("mail") is True
        await run_until_idle(app)
        rows = [await app.time_tickers.get(t.id) for t in [*waiting, later]]
    assert sorted(ran) == ["mail 0", "mail 1", "mail 2", "mail 9", "other"]
    assert {r.status for r in rows} == {Status.DUE_DONE}  # they started late
    assert {r.retry_count for r in rows} == {0}


async def test_a_cluster_pause_starts_nothing_but_crons_still_fire(make_app: MakeApp) -> None:
    app = make_app()
    ran: list[str] = []

    @app.function()
    async def job() -> None:
        ran.append("job")

    @app.function(cron="*/1 * * * *")
    async def minutely() -> None:
        ran.append("cron")

    async with app:
        await app.pauses.pause_cluster(by="ops")
        await job.enqueue()
        await advance(app, timedelta(minutes=3, seconds=10))
        assert ran == []
        (cron,) = await app.cron_tickers.query(function="minutely")
        made = await app.cron_tickers.occurrences(cron.id)
        # its fires were made while paused, and wait
        assert len(made) == 3 and {o.status for o in made} == {Status.IDLE}
        await app.pauses.resume_cluster()
        await run_until_idle(app)
        after = await app.cron_tickers.occurrences(cron.id)
    assert sorted(ran) == ["cron", "cron", "cron", "job"]
    assert {o.status for o in after} == {Status.DUE_DONE}


async def test_a_running_job_goes_on_when_its_function_is_paused(make_app: MakeApp) -> None:
    app = make_app()
    started = asyncio.Event()
    release = asyncio.Event()

    @app.function()
    async def slow() -> None:
        started.set()
        await release.wait()

    async with app:
        ticker = await slow.enqueue()
        await asyncio.wait_for(started.wait(), 10)
        await app.pauses.pause("slow")
        second = await slow.enqueue()
        release.set()
        await run_until_idle(app)
        assert (await app.time_tickers.get(ticker.id)).status is Status.DONE
        assert (await app.time_tickers.get(second.id)).status is Status.IDLE


def _count_calls(store: Any, name: str) -> list[int]:
    """Count the calls of ``store.<name>`` (an instance attribute; ``del`` restores it)."""
    calls = [0]
    real = getattr(store, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await real(*args, **kwargs)

    setattr(store, name, counted)
    return calls


async def test_advance_does_not_stop_at_paused_rows(make_app: MakeApp) -> None:
    """Rows of a paused function due one per second are not stops of ``advance()``:
    the engine is not woken to claim for each of them."""
    app = make_app()

    @app.function()
    async def paused_fn() -> None:
        return None

    async with app:
        await app.pauses.pause("paused_fn")
        for second in range(60):
            await paused_fn.schedule(after=timedelta(seconds=second))
        await run_until_idle(app)
        claims = _count_calls(app.store, "claim")
        try:
            await advance(app, timedelta(seconds=90))
        finally:
            del app.store.claim  # type: ignore[attr-defined]
        assert await app.time_tickers.count(status="IDLE") == 60
    assert claims[0] <= 3, f"{claims[0]} claims while only paused rows were due"


async def test_an_idle_engine_does_not_spin_on_paused_rows(make_app: MakeApp) -> None:
    """On the real clock: with paused rows due now and every 20 ms for a second, an
    engine with nothing else to do sleeps (a few claims and due-time questions, not
    one per row); once resumed it runs them all at once."""
    app = make_app(clock=SystemClock())
    ran: list[int] = []
    all_ran = asyncio.Event()

    @app.function()
    async def paused_fn(ctx: TickerContext[int]) -> None:
        ran.append(ctx.request)
        if len(ran) == 60:
            all_ran.set()

    async with app:
        await app.pauses.pause("paused_fn")
        now = datetime.now(UTC)
        for n in range(60):
            at = now + timedelta(milliseconds=20 * (n - 10))
            await paused_fn.schedule(n, at=at)
        claims = _count_calls(app.store, "claim")
        looks = _count_calls(app.store, "next_due_time")
        try:
            await asyncio.sleep(1.5)
        finally:
            del app.store.claim  # type: ignore[attr-defined]
            del app.store.next_due_time  # type: ignore[attr-defined]
        assert ran == []
        resumed = time.monotonic()
        await app.pauses.resume("paused_fn")
        await asyncio.wait_for(all_ran.wait(), 5)
        took = time.monotonic() - resumed
    assert claims[0] <= 4 and looks[0] <= 4, f"{claims[0]} claims, {looks[0]} looks"
    assert sorted(ran) == list(range(60)) and took < 1.0, f"resumed work ran after {took:.2f} s"


async def test_another_node_pauses_and_resumes_this_ones_work(
    make_app: MakeApp, store_kind: str
) -> None:
    """Two nodes on one store (real clock): what one pauses the other stops starting,
    and what it resumes the other starts within a second (PostgreSQL: by its
    notice, without a poll; SQLite: at the poll that sees the file change)."""
    if store_kind == "memory":
        pytest.skip("the memory store is not shared")
    poll = 3600 if store_kind == "postgresql" else 0.25
    options = EngineOptions(poll_interval=poll, heartbeat_interval=600, lease=3600)
    worker = make_app(node_id="worker", clock=SystemClock(), options=options)
    ran: list[int] = []
    first_run, resumed_run = asyncio.Event(), asyncio.Event()

    @worker.function()
    async def work(ctx: TickerContext[int]) -> None:
        ran.append(ctx.request)
        (first_run if ctx.request == 1 else resumed_run).set()

    admin = make_app(node_id="admin", clock=SystemClock(), options=options)
    admin.function("work")(_noop)
    await admin.open()
    async with worker:
        await admin.time_tickers.add("work", request=1)
        await asyncio.wait_for(first_run.wait(), 5)  # its view: nothing paused
        await admin.pauses.pause("work", by="admin")
        await asyncio.sleep(1.0)  # more than the worker's view may lag (0.5 s)
        held = await admin.time_tickers.add("work", request=2)
        await asyncio.sleep(0.6)
        assert ran == [1]
        assert (await admin.time_tickers.get(held.id)).status is Status.IDLE
        resumed = time.monotonic()
        await admin.pauses.resume("work")
        await asyncio.wait_for(resumed_run.wait(), 5)
        took = time.monotonic() - resumed
    assert ran == [1, 2]
    assert took < 1.0, f"the other node started resumed work after {took:.2f} s"


async def _noop(ctx: TickerContext[int]) -> None:
    return None

"""Chains: children run after their parent when their run condition matches."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from support import START
from tickerq import RunCondition, Status, TerminateExecution, TickerContext, TickerQ, TimeTickerSpec
from tickerq.testing import ManualClock, advance, run_until_idle


def chain_app(clock: ManualClock) -> tuple[TickerQ, list[str]]:
    app = TickerQ(clock=clock, max_concurrency=4)
    log: list[str] = []

    @app.function()
    async def step(ctx: TickerContext[str]) -> None:
        log.append(ctx.request)
        if ctx.request.startswith("fail"):
            raise RuntimeError(ctx.request)
        if ctx.request.startswith("cancel"):
            raise TerminateExecution(Status.CANCELLED, "cancelled by the job")

    return app, log


def spec(
    name: str, condition: RunCondition | None = None, *children: TimeTickerSpec
) -> TimeTickerSpec:
    return TimeTickerSpec(function="step", request=name, run_condition=condition, children=children)


PARENT_OUTCOMES = {"ok": Status.DONE, "fail": Status.FAILED, "cancel": Status.CANCELLED}
EXPECTED = {
    # condition -> set of parent outcomes for which the child runs
    RunCondition.ON_SUCCESS: {"ok"},
    RunCondition.ON_FAILURE: {"fail"},
    RunCondition.ON_CANCELLED: {"cancel"},
    RunCondition.ON_FAILURE_OR_CANCELLED: {"fail", "cancel"},
    RunCondition.ON_ANY_COMPLETED_STATUS: {"ok", "fail", "cancel"},
    None: {"ok", "fail", "cancel"},
}


@pytest.mark.parametrize("outcome", list(PARENT_OUTCOMES))
async def test_each_run_condition(clock: ManualClock, outcome: str) -> None:
    app, log = chain_app(clock)
    children = [spec(f"child-{c.name if c else 'default'}", c) for c in EXPECTED]
    async with app:
        tickers = await app.time_tickers.add_many([spec(outcome, None, *children)])
        await run_until_idle(app)
        parent = await app.time_tickers.get(tickers[0].id)
        assert parent.status is PARENT_OUTCOMES[outcome]
        for child_spec, child in zip(children, tickers[1:], strict=True):
            final = await app.time_tickers.get(child.id)
            runs = outcome in EXPECTED[child_spec.run_condition]
            assert final.status is (Status.DONE if runs else Status.SKIPPED), child_spec.request
            if not runs:
                assert final.skipped_reason is not None
                assert PARENT_OUTCOMES[outcome].name in final.skipped_reason
    ran_children = {r for r in log if r.startswith("child-")}
    expected = {
        f"child-{c.name if c else 'default'}" for c, ok in EXPECTED.items() if outcome in ok
    }
    assert ran_children == expected


async def test_children_wait_for_the_parent_to_finish(clock: ManualClock) -> None:
    app = TickerQ(clock=clock)
    gate = asyncio.Event()
    log: list[str] = []

    @app.function()
    async def parent() -> None:
        log.append("parent start")
        await gate.wait()
        log.append("parent end")

    @app.function()
    async def child() -> None:
        log.append("child")

    async with app:
        await app.time_tickers.add_many(
            [TimeTickerSpec(function="parent", children=[TimeTickerSpec(function="child")])]
        )
        await asyncio.sleep(0.01)
        assert log == ["parent start"]
        gate.set()
        await run_until_idle(app)
    assert log == ["parent start", "parent end", "child"]


async def test_in_progress_child_starts_with_the_parent(clock: ManualClock) -> None:
    app = TickerQ(clock=clock)
    gate = asyncio.Event()
    log: list[str] = []

    @app.function()
    async def parent() -> None:
        log.append("parent start")
        await gate.wait()

    @app.function()
    async def sidecar() -> None:
        log.append("sidecar")

    async with app:
        await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="parent",
                    children=[
                        TimeTickerSpec(function="sidecar", run_condition=RunCondition.IN_PROGRESS)
                    ],
                )
            ]
        )
        await asyncio.sleep(0.02)
        assert log == ["parent start", "sidecar"]  # while the parent still runs
        gate.set()
        await run_until_idle(app)


async def test_in_progress_child_of_a_cancelled_parent_is_skipped(clock: ManualClock) -> None:
    app, log = chain_app(clock)
    async with app:
        tickers = await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="step",
                    request="parent",
                    execution_time=START + timedelta(hours=1),
                    children=[spec("side", RunCondition.IN_PROGRESS)],
                )
            ]
        )
        await app.time_tickers.cancel(tickers[0].id)
        await advance(app, timedelta(hours=2))
        child = await app.time_tickers.get(tickers[1].id)
    assert child.status is Status.SKIPPED
    assert log == []


async def test_skips_cascade_to_grandchildren(clock: ManualClock) -> None:
    app, log = chain_app(clock)
    tree = spec(
        "ok",
        None,
        spec("on-failure", RunCondition.ON_FAILURE, spec("grandchild", None, spec("great", None))),
        spec("on-success", RunCondition.ON_SUCCESS, spec("fail-deep", None, spec("after-deep"))),
    )
    async with app:
        tickers = await app.time_tickers.add_many([tree])
        await run_until_idle(app)
        by_request = {}
        for t in tickers:
            got = await app.time_tickers.get(t.id)
            by_request[got.request] = got.status
    assert by_request == {
        "ok": Status.DONE,
        "on-failure": Status.SKIPPED,
        "grandchild": Status.SKIPPED,
        "great": Status.SKIPPED,
        "on-success": Status.DONE,
        "fail-deep": Status.FAILED,
        "after-deep": Status.DONE,
    }
    assert log == ["ok", "on-success", "fail-deep", "after-deep"]


async def test_child_with_its_own_time_waits_for_it(clock: ManualClock) -> None:
    app, _ = chain_app(clock)
    ran_at: dict[str, object] = {}

    @app.function()
    async def stamp(ctx: TickerContext[str]) -> None:
        ran_at[ctx.request] = clock.now()

    async with app:
        await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="stamp",
                    request="parent",
                    children=[
                        TimeTickerSpec(
                            function="stamp",
                            request="child",
                            execution_time=START + timedelta(minutes=30),
                        )
                    ],
                )
            ]
        )
        await advance(app, timedelta(minutes=10))
        assert ran_at == {"parent": START}
        await advance(app, timedelta(hours=1))
    assert ran_at == {"parent": START, "child": START + timedelta(minutes=30)}


async def test_parent_retries_before_children_decide(clock: ManualClock) -> None:
    app = TickerQ(clock=clock)
    attempts: list[int] = []

    @app.function(retries=1, retry_intervals=[60])
    async def flaky(ctx: TickerContext) -> None:
        attempts.append(ctx.retry_count)
        if ctx.retry_count == 0:
            raise RuntimeError("first try fails")

    @app.function()
    async def after() -> None:
        pass

    async with app:
        tickers = await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="flaky",
                    children=[
                        TimeTickerSpec(function="after", run_condition=RunCondition.ON_SUCCESS)
                    ],
                )
            ]
        )
        await advance(app, 10)
        assert (await app.time_tickers.get(tickers[1].id)).status is Status.IDLE
        await advance(app, 120)
        assert (await app.time_tickers.get(tickers[1].id)).status is Status.DONE
    assert attempts == [0, 1]


async def test_child_added_to_a_finished_parent_resolves_at_once(clock: ManualClock) -> None:
    app, log = chain_app(clock)
    async with app:
        parent = await app.time_tickers.add("step", request="ok")
        await run_until_idle(app)
        late = await app.time_tickers.add(
            "step", request="late", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE
        )
        await run_until_idle(app)
        assert (await app.time_tickers.get(late.id)).status is Status.SKIPPED
        ok = await app.time_tickers.add(
            "step", request="late-ok", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS
        )
        await run_until_idle(app)
        assert (await app.time_tickers.get(ok.id)).status is Status.DONE
    assert log == ["ok", "late-ok"]


async def test_deleting_a_parent_deletes_its_chain(clock: ManualClock) -> None:
    app, _ = chain_app(clock)
    await app.open()
    tickers = await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="step",
                request="p",
                execution_time=START + timedelta(hours=1),
                children=[spec("c", None, spec("g"))],
            )
        ]
    )
    await app.time_tickers.delete(tickers[0].id)
    assert await app.time_tickers.count() == 0

"""Middleware around enqueues and runs, results kept, and the failure/cancel hooks
(issue 11, items 1-3), on the memory store; tests/contract covers every store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from tickerq import (
    InvalidArgumentError,
    RegistrationError,
    Status,
    TickerContext,
    TickerKind,
    TickerQ,
    TimeTickerSpec,
)
from tickerq.hooks import Cancellation, Failure
from tickerq.middleware import Middleware, run_chain
from tickerq.models import TimeTicker
from tickerq.testing import ManualClock, advance, run_until_idle


class Recorder(Middleware):
    """Records the order it is entered and left, around runs and enqueues."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def on_enqueue(self, ticker: TimeTicker, call_next: Any) -> TimeTicker:
        self.log.append(f"{self.name}:enqueue")
        headers = {**ticker.headers, self.name: "1"}
        stored: TimeTicker = await call_next(ticker.evolve(headers=headers))
        self.log.append(f"{self.name}:enqueued")
        return stored

    async def on_execute(self, ctx: TickerContext[Any], call_next: Any) -> Any:
        self.log.append(f"{self.name}:before")
        try:
            return await call_next(ctx)
        finally:
            self.log.append(f"{self.name}:after")


async def test_middleware_wraps_runs_and_enqueues_outermost_first(clock: ManualClock) -> None:
    log: list[str] = []
    app = TickerQ(clock=clock, middleware=[Recorder("outer", log)])
    app.add_middleware(Recorder("added", log))
    seen: list[dict[str, str]] = []

    @app.function(middleware=[Recorder("own", log)])
    async def job(ctx: TickerContext[int]) -> int:
        log.append(f"job:{ctx.request}")
        seen.append(dict(ctx.headers))
        return ctx.request * 2

    @app.function()
    def plain(ctx: TickerContext[int]) -> int:  # a sync job: its thread runs inside
        log.append("plain")
        return ctx.request + 1

    async with app:
        ticker = await job.enqueue(21, headers={"tenant": "acme"})
        assert log == [
            "outer:enqueue",
            "added:enqueue",
            "own:enqueue",
            "own:enqueued",
            "added:enqueued",
            "outer:enqueued",
        ]
        assert ticker.headers == {"tenant": "acme", "outer": "1", "added": "1", "own": "1"}
        log.clear()
        await run_until_idle(app)
        assert log == [
            "outer:before",
            "added:before",
            "own:before",
            "job:21",
            "own:after",
            "added:after",
            "outer:after",
        ]
        done = await app.time_tickers.get(ticker.id)
        log.clear()
        other = await plain.enqueue(1)
        await run_until_idle(app)
        assert log == [
            "outer:enqueue",
            "added:enqueue",
            "added:enqueued",
            "outer:enqueued",
            "outer:before",
            "added:before",
            "plain",
            "added:after",
            "outer:after",
        ]
        plain_done = await app.time_tickers.get(other.id)
    assert seen == [{"tenant": "acme", "outer": "1", "added": "1", "own": "1"}]
    assert done.headers == seen[0]
    assert (done.status, done.result) == (Status.DONE, 42)
    assert (plain_done.status, plain_done.result) == (Status.DONE, 2)


async def test_a_middleware_may_change_the_result_or_stop_the_run(app: TickerQ) -> None:
    ran: list[int] = []

    class Doubling:
        async def on_execute(self, ctx: TickerContext[Any], call_next: Any) -> Any:
            if ctx.request == 0:
                return -1  # call_next not called: the job does not run
            return 2 * await call_next(ctx)

    @app.function(middleware=[Doubling()])
    async def job(ctx: TickerContext[int]) -> int:
        ran.append(ctx.request)
        return ctx.request

    async with app:
        kept = await job.enqueue(5)
        stopped = await job.enqueue(0)
        await run_until_idle(app)
        assert (await app.time_tickers.get(kept.id)).result == 10
        assert (await app.time_tickers.get(stopped.id)).result == -1
    assert ran == [5]


async def test_an_error_in_middleware_fails_the_attempt_and_retries(app: TickerQ) -> None:
    class Flaky:
        calls = 0

        async def on_execute(self, ctx: TickerContext[Any], call_next: Any) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("middleware broke")
            return await call_next(ctx)

    app.add_middleware(Flaky())

    @app.function(retries=1, retry_intervals=[0])
    async def job() -> str:
        return "ok"

    async with app:
        ticker = await job.enqueue()
        await advance(app, 1)
        done = await app.time_tickers.get(ticker.id)
        attempts = await app.time_tickers.attempts(ticker.id)
    assert (done.status, done.result, done.retry_count) == (Status.DONE, "ok", 1)
    assert [(a.status, a.error_message, a.result) for a in attempts] == [
        (Status.FAILED, "middleware broke", None),
        (Status.DONE, None, "ok"),
    ]


async def test_enqueue_middleware_may_not_change_identity(app: TickerQ) -> None:
    class Rename:
        async def on_enqueue(self, ticker: TimeTicker, call_next: Any) -> TimeTicker:
            return await call_next(ticker.evolve(function="other"))  # type: ignore[no-any-return]

    class BadHeaders:
        async def on_enqueue(self, ticker: TimeTicker, call_next: Any) -> TimeTicker:
            return await call_next(ticker.evolve(headers={"n": 5}))  # type: ignore[no-any-return]

    @app.function(middleware=[Rename()])
    async def renamed() -> None:
        return None

    @app.function(middleware=[BadHeaders()])
    async def numbered() -> None:
        return None

    await app.open()
    with pytest.raises(InvalidArgumentError, match="may not change a ticker's id, function"):
        await renamed.enqueue()
    with pytest.raises(InvalidArgumentError, match=r"headers\['n'\] must be text"):
        await numbered.enqueue()
    assert await app.time_tickers.count() == 0  # nothing stored


async def test_add_many_runs_each_ticker_through_its_middleware(app: TickerQ) -> None:
    log: list[str] = []

    @app.function(middleware=[Recorder("own", log)])
    async def job() -> None:
        return None

    @app.function()
    async def other() -> None:
        return None

    await app.open()
    out = await app.time_tickers.add_many(
        [TimeTickerSpec(function="job", children=[TimeTickerSpec(function="other")])]
    )
    stored = [await app.time_tickers.get(t.id) for t in out]
    assert [t.headers for t in stored] == [{"own": "1"}, {}]
    assert log == ["own:enqueue", "own:enqueued"]


@pytest.mark.parametrize("bad", [object(), "text", 5])
def test_what_is_not_middleware_is_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a middleware"):
        TickerQ(middleware=[bad])
    app = TickerQ()
    with pytest.raises(InvalidArgumentError, match="is not a middleware"):
        app.add_middleware(bad)
    with pytest.raises(RegistrationError, match="is not a middleware"):

        @app.function(middleware=[bad])
        async def job() -> None:
            return None


def test_a_sync_hook_is_refused() -> None:
    class Sync:
        def on_execute(self, ctx: Any, call_next: Any) -> Any:
            return call_next(ctx)

    with pytest.raises(InvalidArgumentError, match="on_execute must be an `async def`"):
        TickerQ(middleware=[Sync()])


async def test_run_chain_without_hooks_is_the_terminal_itself() -> None:
    async def terminal(value: int) -> int:
        return value + 1

    assert await run_chain((), 1, terminal) == 2


# -- results ----------------------------------------------------------------------------


class Receipt(BaseModel):
    order: int
    total: float


@dataclass
class Point:
    x: int
    y: int


async def test_results_are_stored_as_json_of_their_return_type(app: TickerQ) -> None:
    @app.function()
    async def receipt(ctx: TickerContext[int]) -> Receipt:
        return Receipt(order=ctx.request, total=9.5)

    @app.function()
    def point() -> Point:
        return Point(1, 2)

    @app.function()
    async def wrong() -> int:
        return "not an int"  # type: ignore[return-value]

    @app.function()
    async def not_json() -> Any:
        return {1, 2}

    async with app:
        tickers = [
            await receipt.enqueue(7),
            await point.enqueue(),
            await wrong.enqueue(),
            await not_json.enqueue(),
        ]
        await run_until_idle(app)
        done = [await app.time_tickers.get(t.id) for t in tickers]
    assert [(t.status, t.result) for t in done[:2]] == [
        (Status.DONE, {"order": 7, "total": 9.5}),
        (Status.DONE, {"x": 1, "y": 2}),
    ]
    assert done[2].status is Status.FAILED and done[2].error_type == "InvalidResultError"
    assert "not its return type int" in (done[2].error_message or "")
    assert done[3].status is Status.FAILED and "which is not JSON" in (done[3].error_message or "")


async def test_a_result_over_the_size_limit_fails_its_attempt(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, max_payload_bytes=100)

    @app.function()
    async def big() -> str:
        return "x" * 200

    async with app:
        ticker = await big.enqueue()
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)
    assert done.status is Status.FAILED and done.result is None
    assert "over the limit of 100" in (done.error_message or "")


def test_a_return_type_that_is_not_json_is_refused_at_registration() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError, match=r"return type .* cannot be serialized as JSON"):

        @app.function()
        async def job() -> asyncio.Event:
            return asyncio.Event()


async def test_wait_returns_the_ended_ticker_or_times_out(app: TickerQ) -> None:
    gate = asyncio.Event()

    @app.function()
    async def slow() -> str:
        await gate.wait()
        return "done"

    async with app:
        ticker = await slow.enqueue()
        with pytest.raises(TimeoutError):
            await app.time_tickers.wait(ticker.id, timeout=0.05)
        waiting = asyncio.create_task(app.time_tickers.wait(ticker.id, timeout=5))
        await asyncio.sleep(0.01)
        gate.set()
        ended = await waiting
    assert (ended.status, ended.result) == (Status.DONE, "done")


# -- hooks ------------------------------------------------------------------------------


async def test_failure_hooks_know_the_last_attempt_and_fire_once(app: TickerQ) -> None:
    failures: list[tuple[int, Failure]] = []
    finals: list[tuple[str, str]] = []

    @app.on_exception
    def every(ctx: TickerContext[Any], error: BaseException, failure: Failure) -> None:
        failures.append((ctx.attempt, failure))

    @app.on_final_failure
    async def final(ctx: TickerContext[Any], error: BaseException) -> None:
        finals.append((ctx.function, str(error)))

    @app.function(retries=2, retry_intervals=[0])
    async def broken() -> None:
        raise ValueError("nope")

    async with app:
        await broken.enqueue()
        await advance(app, 5)
    assert failures == [
        (1, Failure(final=False, attempt=1, retries_left=2)),
        (2, Failure(final=False, attempt=2, retries_left=1)),
        (3, Failure(final=True, attempt=3, retries_left=0)),
    ]
    assert finals == [("broken", "nope")]


async def test_the_cancel_hook_fires_once_for_waiting_and_running_tickers(app: TickerQ) -> None:
    cancelled: list[Cancellation] = []
    app.on_cancel(cancelled.append)
    started = asyncio.Event()

    @app.function()
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        later = await endless.schedule(after=3600)
        running = await endless.enqueue()
        await started.wait()
        await app.time_tickers.cancel(later.id)
        await app.time_tickers.cancel(running.id)
        await run_until_idle(app)
        assert (await app.time_tickers.get(running.id)).status is Status.CANCELLED
    assert cancelled == [
        Cancellation(later.id, TickerKind.TIME, "endless", False),
        Cancellation(running.id, TickerKind.TIME, "endless", True),
    ]


async def test_headers_can_be_changed_while_waiting_and_are_checked(app: TickerQ) -> None:
    @app.function()
    async def job() -> None:
        return None

    await app.open()
    ticker = await job.schedule(after=60, headers={"a": "1"})
    changed = await app.time_tickers.update(ticker.id, headers={"b": "2"})
    assert changed.headers == {"b": "2"}
    assert (await app.time_tickers.get(ticker.id)).headers == {"b": "2"}
    with pytest.raises(InvalidArgumentError, match="headers"):
        await app.time_tickers.update(ticker.id, headers={"": "x"})
    with pytest.raises(InvalidArgumentError, match="headers"):
        await job.enqueue(headers={"x": 1})  # type: ignore[dict-item]
    assert (await app.time_tickers.get(ticker.id)).headers == {"b": "2"}
    assert await app.time_tickers.count() == 1

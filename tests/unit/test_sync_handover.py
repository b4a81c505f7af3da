"""``app.sync.enqueue`` on the memory store hands tickers to the loop without waiting.

The ticker is built and checked in the calling thread; the loop stores the
tickers handed over meanwhile in one batch. These tests hold the loop busy on
purpose (a coroutine that blocks its thread) to see what waits and what does not.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import UUID

import pytest

from tickerq import InvalidRequestError, Status, TickerContext, TickerQ, TickerQError
from tickerq.sync import MAX_HANDED_OVER


@dataclass
class Note:
    text: str


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


class BusyLoop:
    """Holds the app's loop thread busy until released (a call that blocks it)."""

    def __init__(self, app: TickerQ) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()

        async def block() -> None:
            self.entered.set()
            self.gate.wait(10)  # blocks the loop's thread on purpose

        self.thread = threading.Thread(target=app.sync.run, args=(block(),))

    def __enter__(self) -> BusyLoop:
        self.thread.start()
        assert self.entered.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.thread.join(5)


@pytest.fixture
def counted() -> Iterator[tuple[TickerQ, Counter[UUID]]]:
    app = TickerQ(max_concurrency=4)
    runs: Counter[UUID] = Counter()
    lock = threading.Lock()

    @app.function("note")
    def note(ctx: TickerContext[Note]) -> None:
        with lock:
            runs[ctx.id] += 1

    app.sync.start()
    try:
        yield app, runs
    finally:
        app.sync.stop()


def test_enqueue_returns_while_the_loop_is_busy_and_the_ticker_is_stored_after(
    counted: tuple[TickerQ, Counter[UUID]],
) -> None:
    """Found: each enqueue waited for a round trip through the loop (0.18x the async
    call); now it returns at once and the loop stores the tickers in a batch."""
    app, runs = counted
    fn = app.get_function("note")
    ids: list[UUID] = []
    with BusyLoop(app):
        caller = threading.Thread(
            target=lambda: ids.extend(app.sync.enqueue(fn, Note(str(i))).id for i in range(10))
        )
        caller.start()
        caller.join(5)
        assert not caller.is_alive(), "enqueue waited for the busy loop"
        assert len(ids) == 10
    for ticker_id in ids:  # stored before any later call through the facade
        assert app.sync.time_tickers.get(ticker_id).function == "note"
    _wait_for(lambda: len(runs) == 10, "the jobs to run")
    assert set(runs) == set(ids) and set(runs.values()) == {1}


def test_handed_over_tickers_are_bounded_while_the_loop_is_busy(
    counted: tuple[TickerQ, Counter[UUID]],
) -> None:
    app, runs = counted
    fn = app.get_function("note")
    total = MAX_HANDED_OVER + 5
    with BusyLoop(app):
        caller = threading.Thread(
            target=lambda: [app.sync.enqueue(fn, Note("x")) for _ in range(total)]
        )
        caller.start()
        _wait_for(lambda: len(app.sync._handed) == MAX_HANDED_OVER, "the hand-over to fill")
        assert caller.is_alive()  # it waits for room, holding no more than the bound
        assert len(app.sync._handed) == MAX_HANDED_OVER
    caller.join(5)
    assert not caller.is_alive()
    _wait_for(lambda: sum(runs.values()) == total, "every job to run")
    assert set(runs.values()) == {1}
    _wait_for(lambda: app.sync.time_tickers.count(status=Status.DONE) == total, "results")


def test_many_threads_enqueue_and_each_ticker_runs_once(
    counted: tuple[TickerQ, Counter[UUID]],
) -> None:
    app, runs = counted
    fn = app.get_function("note")
    ids: list[UUID] = []
    lock = threading.Lock()

    def caller() -> None:
        mine = [fn.sync.enqueue(Note("y")).id for _ in range(150)]
        mine += [fn.sync.schedule(Note("z"), after=0).id for _ in range(50)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(ids) == len(set(ids)) == 1200
    _wait_for(lambda: sum(runs.values()) == 1200, "every job to run", 20)
    assert set(runs) == set(ids) and set(runs.values()) == {1}


def test_a_bad_request_raises_in_the_caller_and_stores_nothing(
    counted: tuple[TickerQ, Counter[UUID]],
) -> None:
    app, _ = counted
    fn = app.get_function("note")
    with pytest.raises(InvalidRequestError):
        app.sync.enqueue(fn, {"text": 5})
    with pytest.raises(InvalidRequestError):
        app.sync.schedule(fn, {"nope": 1}, after=10)
    assert app.sync.time_tickers.count() == 0


def test_enqueue_on_the_loop_thread_still_raises() -> None:
    app = TickerQ()
    errors: list[str] = []

    @app.function()
    async def nested() -> None:
        try:
            app.sync.enqueue(nested)
        except TickerQError as exc:
            errors.append(str(exc))

    with app.sync:
        app.sync.enqueue(nested)
        _wait_for(lambda: bool(errors), "the nested call to fail")
    assert errors[0].startswith("app.sync cannot be used from inside the app's own event loop")


def test_enqueue_then_stop_keeps_the_ticker() -> None:
    app = TickerQ()

    @app.function()
    def later() -> None:
        pass

    app.sync.start()
    ticker = app.sync.schedule(later, after=3600)
    app.sync.stop()
    assert app.sync.time_tickers.get(ticker.id).status is Status.IDLE
    app.sync.stop()

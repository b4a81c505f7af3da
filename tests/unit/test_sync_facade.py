"""The blocking facade drives the same async core from plain threads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tickerq import Status, TickerContext, TickerQ


@dataclass
class Note:
    text: str


def test_sync_facade_enqueue_and_query() -> None:
    app = TickerQ(max_concurrency=2)
    done = threading.Event()
    seen: list[str] = []

    @app.function()
    def write(ctx: TickerContext[Note]) -> None:
        seen.append(ctx.request.text)
        done.set()

    # Scheduling before the engine starts is allowed; it runs once started.
    ticker = app.sync.enqueue(write, Note("hello"))
    assert app.sync.time_tickers.get(ticker.id).status is Status.IDLE
    with app.sync:
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while app.sync.time_tickers.get(ticker.id).status is not Status.DONE:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert app.sync.run(app.time_tickers.count(status="DONE")) == 1
    assert seen == ["hello"]
    assert not app.engine.running


def test_sync_facade_refuses_to_deadlock_inside_its_loop() -> None:
    app = TickerQ()
    errors: list[str] = []

    @app.function()
    async def nested() -> None:
        try:
            app.sync.run(app.time_tickers.count())
        except Exception as exc:
            errors.append(str(exc))

    with app.sync:
        app.sync.enqueue(nested)
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.005)
    assert errors == ["app.sync cannot be used from inside the app's own event loop"]

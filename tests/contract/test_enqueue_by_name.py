"""Enqueue by name (``app.enqueue("send_email", {...})``) from a process without the
job code: the request is plain JSON, checked where the function is registered.

A producer app with no functions and a worker app with them share each store
(the memory store is not shared: there the one app enqueues its own functions by
name, checked in place).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import BaseModel

from tickerq import (
    FunctionNotFoundError,
    InvalidRequestError,
    Status,
    TickerContext,
    TickerQ,
)
from tickerq.testing import run_until_idle

MakeApp = Callable[..., TickerQ]


class Email(BaseModel):
    to: str
    subject: str = "hello"


def _worker(make_app: MakeApp, seen: list[Email]) -> TickerQ:
    app = make_app(node_id="worker")

    @app.function(retries=3)
    async def send_email(ctx: TickerContext[Email]) -> None:
        seen.append(ctx.request)

    return app


async def test_a_producer_without_the_code_enqueues_by_name(
    make_app: MakeApp, store_kind: str
) -> None:
    if store_kind == "memory":
        pytest.skip("the memory store is not shared")
    seen: list[Email] = []
    worker = _worker(make_app, seen)
    producer = make_app(node_id="producer")
    await worker.start()  # its heartbeat tells the cluster it runs send_email
    await producer.open()
    good = await producer.enqueue("send_email", {"to": "a@example.com"})
    later = await producer.schedule("send_email", {"to": "b@example.com"}, after=0)
    bad = await producer.enqueue("send_email", {"subject": "no address"}, retries=3)
    with pytest.raises(FunctionNotFoundError, match="send_emial"):
        await producer.enqueue("send_emial", {"to": "x"})
    assert await producer.time_tickers.count() == 3
    worker.wake_engine(None)  # another process's rows (no notice under the manual clock)
    await run_until_idle(worker)
    assert seen == [Email(to="a@example.com"), Email(to="b@example.com")]
    assert {(await producer.time_tickers.get(t.id)).status for t in (good, later)} == {Status.DONE}
    # checked on the worker: it never will validate, so no retry despite its 3
    failed = await producer.time_tickers.get(bad.id)
    assert (failed.status, failed.retry_count) == (Status.FAILED, 0)
    [attempt] = await producer.time_tickers.attempts(bad.id)
    assert attempt.error_type == "InvalidRequestError"
    assert "send_email" in (attempt.error_message or "")
    assert "to" in (attempt.error_message or "")


async def test_a_registered_name_is_checked_where_it_is_enqueued(make_app: MakeApp) -> None:
    seen: list[Email] = []
    app = _worker(make_app, seen)
    await app.open()
    with pytest.raises(InvalidRequestError, match="send_email"):
        await app.enqueue("send_email", {"subject": "no address"})
    with pytest.raises(FunctionNotFoundError):
        await app.enqueue("nobody", None)
    assert await app.time_tickers.count() == 0
    by_handle = await app.enqueue(app.get_function("send_email"), Email(to="c@example.com"))
    by_name = await app.enqueue("send_email", {"to": "d@example.com"}, unique_key="d")
    again = await app.enqueue("send_email", {"to": "e@example.com"}, unique_key="d")
    assert again.id == by_name.id
    await app.start()
    await run_until_idle(app)
    assert seen == [Email(to="c@example.com"), Email(to="d@example.com")]
    assert (await app.time_tickers.get(by_handle.id)).status is Status.DONE


async def test_the_blocking_facade_enqueues_by_name_too(make_app: MakeApp, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("the memory store is not shared")
    seen: list[Email] = []
    worker = _worker(make_app, seen)
    await worker.start()
    producer = make_app(node_id="producer")
    producer.sync.open()
    try:
        ticker = producer.sync.enqueue("send_email", {"to": "f@example.com"})
        assert producer.sync.time_tickers.get(ticker.id).status is Status.IDLE
    finally:
        producer.sync.stop()
    worker.wake_engine(None)
    await run_until_idle(worker)
    assert seen == [Email(to="f@example.com")]


async def test_a_bad_function_argument_names_it(make_app: MakeApp) -> None:
    app = make_app()
    await app.open()
    with pytest.raises(Exception, match="42"):
        await app.enqueue(42, None)  # type: ignore[call-overload]

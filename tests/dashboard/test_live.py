"""The SSE endpoint: an event soon after a change, in-process and from another process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tickerq import TickerQ


async def read_events(
    asgi: Any, action: Callable[[], Awaitable[object]], wanted: str, timeout: float = 5.0
) -> tuple[str, float]:
    """Open /events, run ``action`` once the stream started, return the text once ``wanted``
    appears in it (and the seconds it took after the action)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/events",
        "raw_path": b"/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost:8787"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
    }
    disconnect = asyncio.Event()
    started = asyncio.Event()
    found = asyncio.Event()
    chunks: list[str] = []
    armed = False
    headers: dict[bytes, bytes] = {}

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal armed
        if message["type"] == "http.response.start":
            headers.update(dict(message["headers"]))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b"").decode())
            text = "".join(chunks)
            if "event: hello" in text:
                started.set()
            if armed and wanted in text:
                found.set()

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(asgi(scope, receive, send))
    try:
        await asyncio.wait_for(started.wait(), timeout)
        assert headers[b"content-type"].startswith(b"text/event-stream")
        await asyncio.sleep(0.7)  # let the poller take its first look
        chunks.clear()
        armed = True
        t0 = loop.time()
        await action()
        await asyncio.wait_for(found.wait(), timeout)
        return "".join(chunks), loop.time() - t0
    finally:
        disconnect.set()
        await asyncio.wait_for(task, timeout)


async def test_sse_event_after_an_in_process_change(memory_app: TickerQ) -> None:
    dash = memory_app.dashboard()
    text, took = await read_events(
        dash, lambda: memory_app.time_tickers.add("charge", request={}), "event: change"
    )
    assert '"tickers"' in text
    assert took < 1.0


async def test_sse_sees_another_process_change(tmp_path: Path, make_app) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    viewer, writer = make_app(url), make_app(url)
    await viewer.open()
    await writer.open()
    try:
        dash = viewer.dashboard()
        text, took = await read_events(
            dash, lambda: writer.time_tickers.add("charge", request={}), '"tickers"'
        )
        assert "event: change" in text
        assert took < 1.5
        # crons changed elsewhere too
        text, _ = await read_events(
            dash, lambda: writer.cron_tickers.add("charge", "* * * * *"), '"crons"'
        )
    finally:
        await viewer.stop()
        await writer.stop()


async def test_sse_coalesces_bursts(memory_app: TickerQ) -> None:
    dash = memory_app.dashboard()

    async def burst() -> None:
        for _ in range(50):
            await memory_app.time_tickers.add("charge", request={})

    text, _ = await read_events(dash, burst, "event: change")
    await asyncio.sleep(0)
    assert text.count("event: change") <= 2


async def _whole_stream(feed: Any, last_event_id: str | None = None) -> str:
    """Every chunk of one stream of ``feed``, until it ends by itself."""
    return "".join([chunk async for chunk in feed.stream(last_event_id)])


def _last_id(text: str) -> str:
    return [line for line in text.splitlines() if line.startswith("id: ")][-1][4:]


async def test_a_stream_ends_by_itself_and_says_whether_a_returning_page_missed_a_change(
    memory_app: TickerQ,
) -> None:
    """A stream that never ends keeps a server's graceful shutdown waiting for ever
    (uvicorn, where the dashboard is mounted): it ends after ``max_age``, and the
    hello of the next one tells a page coming back whether it missed anything."""
    from tickerq.dashboard.live import LiveFeed, topics_of

    feed = LiveFeed(memory_app.events, memory_app.store, min_interval=0.0, max_age=0.4)
    began = asyncio.get_running_loop().time()
    first = await asyncio.wait_for(_whole_stream(feed), 5)
    assert 0.4 <= asyncio.get_running_loop().time() - began < 2
    assert '"missed": false' in first and first.rstrip().endswith("data: {}")
    assert "event: bye" in first and "retry: 500" in first

    # back at once, nothing changed meanwhile: no need to read the page again
    again = await asyncio.wait_for(_whole_stream(feed, _last_id(first)), 5)
    assert '"missed": false' in again

    # a change while the page was away (the feed still listens: it just left)
    feed.publish(topics_of(_a_ticker_event()))
    later = await asyncio.wait_for(_whole_stream(feed, _last_id(again)), 5)
    assert '"missed": true' in later
    # a page of another feed (the dashboard restarted) missed everything
    other = await asyncio.wait_for(_whole_stream(feed, "0123abcd.5"), 5)
    assert '"missed": true' in other


async def test_a_change_during_a_stream_moves_its_id_on(memory_app: TickerQ) -> None:
    """A page that got every change of its stream is told nothing was missed; the id
    is taken with the change's topics, so a change after them is not counted seen."""
    from tickerq.dashboard.live import LiveFeed, topics_of

    feed = LiveFeed(memory_app.events, memory_app.store, min_interval=0.0, max_age=0.6)

    async def change_soon() -> None:
        await asyncio.sleep(0.2)
        feed.publish(topics_of(_a_ticker_event()))

    changing = asyncio.create_task(change_soon())
    text = await asyncio.wait_for(_whole_stream(feed), 5)
    await changing
    assert "event: change" in text
    seen = _last_id(text)
    assert '"missed": false' in await asyncio.wait_for(_whole_stream(feed, seen), 5)


def _a_ticker_event() -> Any:
    from datetime import UTC, datetime
    from uuid import uuid4

    from tickerq.enums import Status, TickerKind
    from tickerq.events import TickerChanged

    return TickerChanged(datetime.now(UTC), TickerKind.TIME, uuid4(), "noop", Status.IDLE)


async def test_a_bad_stream_max_age_is_refused_naming_it(memory_app: TickerQ) -> None:
    import pytest

    from tickerq.errors import InvalidArgumentError

    for bad in (0, -1, 7200, "15", True, float("nan")):
        with pytest.raises(InvalidArgumentError, match=f"stream_max_age.*{bad!r}"):
            memory_app.dashboard(stream_max_age=bad)  # type: ignore[arg-type]

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

"""The standalone server (tickerq dashboard, demo): a slow client cannot hold a connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tickerq import TickerQ
from tickerq.dashboard.server import DashboardServer, start_server

TIMEOUT = 0.5
"""The server's request read timeout in these tests."""


@pytest.fixture
async def server(memory_app: TickerQ) -> AsyncIterator[DashboardServer]:
    served = await start_server(memory_app.dashboard(), "127.0.0.1", 0, read_timeout=TIMEOUT)
    yield served
    await served.stop()


async def connect(server: DashboardServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def dribble(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, line: bytes) -> float:
    """Send ``line`` every 50 ms until the server closes; how long that took (at most 5 s)."""
    started = time.monotonic()
    while time.monotonic() - started < 5:
        try:
            writer.write(line)
            await writer.drain()
        except ConnectionError:
            break
        try:
            if await asyncio.wait_for(reader.read(65536), 0.05) == b"":
                break
        except TimeoutError:
            continue
    return time.monotonic() - started


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_slow_headers_lose_the_connection(server: DashboardServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
    held = await dribble(writer, reader, b"X-Slow: 1\r\n")
    await close(writer)
    assert held < TIMEOUT + 1.5, f"a slowloris client held the connection for {held:.1f}s"


async def test_a_slow_body_loses_the_connection(server: DashboardServer) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"POST /api/time-tickers HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    held = await dribble(writer, reader, b" ")
    await close(writer)
    assert held < TIMEOUT + 1.5, f"a slow body held the connection for {held:.1f}s"


async def test_keep_alive_requests_each_get_the_deadline(server: DashboardServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(
        next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    await reader.readexactly(length)
    writer.write(b"GET / HTTP/1.1\r\n")
    held = await dribble(writer, reader, b"X-Slow: 1\r\n")
    await close(writer)
    assert held < TIMEOUT + 1.5, f"a slow second request held the connection for {held:.1f}s"


async def test_prompt_requests_and_event_streams_are_not_cut(server: DashboardServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    # well past the read deadline, the stream (a request fully read) is still open
    await asyncio.sleep(TIMEOUT * 3)
    assert not reader.at_eof()
    await close(writer)

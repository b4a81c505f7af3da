"""Serving a dashboard with uvicorn inside a running event loop (CLI and demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["REQUEST_READ_TIMEOUT", "DashboardServer", "DeadlineH11Protocol", "start_server"]

logger = logging.getLogger("tickerq.dashboard")

REQUEST_READ_TIMEOUT = 15.0
"""Seconds a client gets to send a whole request (line, headers and body) once
the server waits for one; then its connection is closed. A client that sends a
header line now and then (slowloris) cannot hold a connection forever."""


class DashboardServer:
    """A uvicorn server running as a task on the current loop; ``await stop()`` ends it."""

    def __init__(self, server: Any, task: asyncio.Task[None], url: str, asgi: Starlette) -> None:
        self._server = server
        self._task = task
        self.url = url
        """Where a browser opens it."""
        self._asgi = asgi

    async def stop(self) -> None:
        """Close open event streams and stop serving."""
        dash = getattr(self._asgi.state, "tickerq_dashboard", None)
        if dash is not None:
            dash.live.close()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await asyncio.wait_for(self._task, 5)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request is not read in time.

    uvicorn's own keep-alive timeout is cancelled by any byte received, and
    there is none while the first request's headers come in: a deadline per
    request, that incoming data does not push back, is added here.
    """

    read_timeout = REQUEST_READ_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self._deadline is None:
            self._arm()  # keep-alive: the next request gets its own deadline
        self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _settle(self) -> None:
        if self.conn.their_state not in _READING:
            self._disarm()  # the request is in: the app takes its time, not the client

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state in _READING and not self.transport.is_closing():
            logger.warning(
                "dashboard: closed the connection of %s: no complete request in %gs",
                self.client[0] if self.client else "a client",
                self.read_timeout,
            )
            self.transport.close()


_READING = (h11.IDLE, h11.SEND_BODY)


async def start_server(
    asgi: Starlette,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    read_timeout: float = REQUEST_READ_TIMEOUT,
) -> DashboardServer:
    """Bind ``host:port`` (OSError if taken) and serve ``asgi`` there in the background.

    A connection whose request (headers and body) is not in after
    ``read_timeout`` seconds is closed.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the caller handles signals
            yield

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, reuse_port=False)
    sock.setblocking(False)
    config = uvicorn.Config(
        asgi,
        log_config=None,  # uvicorn's records go where the program's logging sends them
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
        access_log=False,
        proxy_headers=False,
        http=type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"read_timeout": read_timeout}),
        timeout_keep_alive=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="tickerq-dashboard")
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    for _ in range(100):  # wait until it accepts connections
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    if task.done():
        task.result()
    return DashboardServer(server, task, f"http://{shown}:{bound_port}/", asgi)

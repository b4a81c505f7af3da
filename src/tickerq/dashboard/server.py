"""Serving a dashboard with uvicorn inside a running event loop (CLI and demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["DashboardServer", "start_server"]

logger = logging.getLogger("tickerq.dashboard")


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


async def start_server(
    asgi: Starlette, host: str = "127.0.0.1", port: int = 8787
) -> DashboardServer:
    """Bind ``host:port`` (OSError if taken) and serve ``asgi`` there in the background."""
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
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
        access_log=False,
        proxy_headers=False,
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

"""``/metrics``, ``/healthz`` and ``/readyz`` on a port of their own, for a worker.

``tickerq run MODULE:APP --metrics-port 9108`` serves them from the worker's
event loop (asyncio streams: no thread, no web framework loaded), alongside the
engine, until the worker stops:

- ``GET /metrics``: the app's :class:`~tickerq.contrib.prometheus.PrometheusMiddleware`
  registry, in the text format the ``Accept`` header asks for;
- ``GET /healthz``: 200 ``{"status": "ok"}``, answered by the event loop itself
  (a loop blocked by a job answers nothing: the probe's timeout is the signal);
- ``GET /readyz``: 200 ``{"status": "ready", ...}`` or 503 ``{"status": "not ready",
  "reason": ...}`` (see :class:`tickerq.health.HealthChecks`).

One request per connection (``Connection: close``); a request must arrive whole
within :data:`REQUEST_TIMEOUT` seconds and its head fit in :data:`MAX_HEAD` bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tickerq.health import HealthChecks, liveness

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["MAX_HEAD", "REQUEST_TIMEOUT", "MonitorServer", "start_monitor"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
"""Seconds a client gets to send its request line and headers."""
MAX_HEAD = 16 * 1024
"""Bytes of request line and headers accepted."""

Metrics = Callable[[str], Awaitable[tuple[bytes, str]]]
"""``metrics(accept) -> (body, content type)``."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


class MonitorServer:
    """Serves the probes and metrics of ``app`` on the running event loop."""

    def __init__(
        self, app: TickerQ, *, metrics: Metrics | None = None, engine: bool | None = True
    ) -> None:
        self.app = app
        self._metrics = metrics
        self.checks = HealthChecks(app, engine=engine)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        """``http://host:port`` it listens on."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: any free port); OSError if it cannot."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])

    async def stop(self) -> None:
        """Stop listening and drop the connections still open."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        await self.checks.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return
        except asyncio.LimitOverrunError:
            await _write(writer, 431, _TEXT, b"request head too large\n", head_only=False)
            return
        method, path, headers = _parse(head)
        if method is None:
            await _write(writer, 400, _TEXT, b"bad request\n", head_only=False)
            return
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _write(
                writer, 405, _TEXT, b"GET only\n", head_only=False, extra={"Allow": "GET, HEAD"}
            )
            return
        try:
            status, content_type, body = await self._route(path, headers)
        except Exception:
            logger.exception("answering GET %s on the monitor port failed", path[:200])
            status, content_type, body = 500, _TEXT, b"internal error; see the worker's log\n"
        await _write(writer, status, content_type, body, head_only=head_only)

    async def _route(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, _JSON, _dump(liveness())
        if path == "/readyz":
            readiness = await self.checks.ready()
            return readiness.status_code, _JSON, _dump(readiness.body())
        if path == "/metrics" and self._metrics is not None:
            body, content_type = await self._metrics(headers.get("accept", ""))
            return 200, content_type, body
        if path == "/":
            paths = ["/healthz", "/readyz"] + (["/metrics"] if self._metrics else [])
            return 200, _TEXT, ("tickerq: " + " ".join(paths) + "\n").encode()
        return 404, _TEXT, b"not found\n"


def _parse(head: bytes) -> tuple[str | None, str, dict[str, str]]:
    """Method, path and headers (lower-case names) of a request head; method None if bad."""
    try:
        text = head.decode("latin-1")
        line, *lines = text.split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        return None, "", {}
    if not version.startswith("HTTP/1."):
        return None, "", {}
    headers: dict[str, str] = {}
    for raw in lines:
        name, sep, value = raw.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, urlsplit(target).path or "/", headers


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode() + b"\n"


async def _write(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool,
    extra: dict[str, str] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    await writer.drain()


async def start_monitor(
    app: TickerQ,
    host: str,
    port: int,
    *,
    metrics: bool = True,
    engine: bool | None = True,
) -> MonitorServer:
    """Serve ``app``'s probes (and, with ``metrics``, its Prometheus metrics: the app's
    PrometheusMiddleware, installed if it has none) on ``host``:``port``.

    ImportError when ``metrics`` and prometheus_client is not installed; OSError
    when the port cannot be listened on.
    """
    exposition: Metrics | None = None
    if metrics:
        from tickerq.contrib.prometheus import prometheus_of

        middleware = prometheus_of(app)
        assert middleware is not None
        exposition = middleware.exposition
    server = MonitorServer(app, metrics=exposition, engine=engine)
    await server.start(host, port)
    return server

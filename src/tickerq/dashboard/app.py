"""The dashboard's ASGI app: security around every request, routes, errors.

The top of the dashboard: it assembles the pages, forms and JSON API, which share
``context.py`` and ``rendering.py``; nothing in the dashboard imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickerq.dashboard import api, forms, pages
from tickerq.dashboard.api import PUBLIC_PATHS
from tickerq.dashboard.auth import (
    AuthCallable,
    BasicAuth,
    DashboardUser,
    Permission,
    PermissionsSpec,
    authenticate,
    local_refusal,
    permissions_for,
    same_origin,
    user_name,
)
from tickerq.dashboard.context import (
    MAX_BODY,
    Dashboard,
    DashboardError,
    dashboard_of,
    error_message,
    error_status,
    log_refusal,
    mount_prefix,
)
from tickerq.dashboard.live import LiveFeed
from tickerq.dashboard.rendering import error_page
from tickerq.dashboard.service import Redactor, Service
from tickerq.errors import InvalidArgumentError, TickerQError

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["CSP", "create_dashboard"]

logger = logging.getLogger("tickerq.dashboard")

HERE = Path(__file__).parent

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
"""The Content-Security-Policy of every response: no inline script or style."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def wants_json(conn: HTTPConnection) -> bool:
    """True for API paths (answer errors as JSON)."""
    path = conn.scope.get("tickerq.route_path", "")
    return str(path).startswith("/api")


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path or "/"


class SecurityLayer:
    """Authenticates, authorizes and checks origins and body sizes; adds security headers."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dash = self.dashboard
        scope["tickerq.dashboard"] = dash
        prefix, fixed_path = mount_prefix(scope)
        if fixed_path is not None:
            scope["path"] = fixed_path
        scope["tickerq.prefix"] = dash.base_path or prefix
        scope["tickerq.route_path"] = _route_path(scope)
        conn = HTTPConnection(scope)
        is_api = wants_json(conn)
        if scope["method"] in ("GET", "HEAD") and scope["tickerq.route_path"] in PUBLIC_PATHS:
            # Probes (Kubernetes sends no credentials, from the node's address): no
            # login, no loopback rule; they tell states, nothing else.
            await _with_body_limit(self.app, scope, receive, self._with_headers(send), is_api)
            return

        send_with_headers = self._with_headers(send)
        refusal = await self._refusal(conn, is_api)
        if refusal is not None:
            response, reason, quiet = refusal
            log_refusal(conn, response.status_code, reason, quiet=quiet)
            await response(scope, receive, send_with_headers)
            return
        await dash.ensure_open()
        await _with_body_limit(self.app, scope, receive, send_with_headers, is_api)

    @staticmethod
    def _with_headers(send: Send) -> Send:
        """``send`` adding the security headers to the response."""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {h[0].lower() for h in headers}
                for name, value in _SECURITY_HEADERS:
                    if name not in names:
                        headers.append((name, value))
            await send(message)

        return send_with_headers

    async def _refusal(
        self, conn: HTTPConnection, is_api: bool
    ) -> tuple[Response, str, bool] | None:
        """Why the request is refused: the answer, the reason to log, and whether
        that is only worth a debug line. None: it may go on (its user is set)."""
        dash = self.dashboard
        if dash.auth is None:
            problem = local_refusal(conn)
            if problem is not None:
                return _error(is_api, 403, f"refused: {problem}. {_LOCAL_ONLY}"), problem, False
        identity = await authenticate(conn, dash.auth)
        if identity is None:
            # a browser's first request carries no credentials: not a refused login
            challenge = "authorization" not in conn.headers and hasattr(dash.auth, "scheme")
            return _unauthenticated(dash, is_api), "not authenticated", challenge
        name = user_name(identity)
        user = DashboardUser(
            name=name,
            permissions=permissions_for(identity, name, dash.permissions),
            identity=identity,
        )
        conn.scope["tickerq.user"] = user
        if not user.can(Permission.VIEW):
            message = f"user {name!r} may not view the dashboard"
            return _error(is_api, 403, message), message, False
        local_only = dash.auth is None
        if conn.scope["method"] not in SAFE_METHODS and not same_origin(
            conn, dash.allowed_origins, local_only=local_only
        ):
            source = str(conn.headers.get("origin") or conn.headers.get("referer"))
            message = "cross-site request refused: the Origin is not the dashboard's"
            reason = f"cross-site request from {source[:200]!r} (user {name!r})"
            return _error(is_api, 403, message), reason, False
        declared = conn.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return _too_large(is_api), f"Content-Length {declared[:30]} over {MAX_BODY}", False
        return None


_LOCAL_ONLY = (
    "the tickerq dashboard answers only loopback clients (127.0.0.1, ::1) that name "
    "this machine (Host localhost, 127.0.0.1 or [::1]) and come through no proxy, "
    "until auth is configured: app.dashboard(auth=...)"
)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a request body passes MAX_BODY."""


async def _with_body_limit(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, is_api: bool
) -> None:
    """Run ``app``, refusing the request with 413 as soon as its body passes MAX_BODY.

    Counted while the body streams in, whatever Content-Length said (or chunked),
    so a large body is never held in memory.
    """
    received = 0
    started = False

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise _BodyTooLarge
        return message

    async def tracked_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, limited_receive, tracked_send)
    except _BodyTooLarge:
        log_refusal(HTTPConnection(scope), 413, f"body over {MAX_BODY} bytes")
        if not started:
            await _too_large(is_api)(scope, receive, send)


def _too_large(is_api: bool) -> Response:
    response = _error(is_api, 413, f"the request body is over {MAX_BODY:,} bytes")
    response.headers["connection"] = "close"  # do not read the rest of it
    return response


def _unauthenticated(dash: Dashboard, is_api: bool) -> Response:
    response = _error(is_api, 401, "authentication required")
    if isinstance(dash.auth, BasicAuth):
        response.headers["www-authenticate"] = f'Basic realm="{dash.auth.realm}"'
    elif getattr(dash.auth, "scheme", "") == "Bearer":
        response.headers["www-authenticate"] = 'Bearer realm="tickerq"'
    return response


_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _error(is_api: bool, status: int, message: str) -> Response:
    if is_api:
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


REFRESH_HEADER = "X-Tickerq-Refresh"
"""Sent by the page's live refreshes (static/app.js)."""
GONE_HEADER = "X-Tickerq-Gone"
"""Answer to a live refresh of a ticker or cron deleted meanwhile (with 204)."""


async def _handle_error(request: Request, exc: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, HTTPException):
        status, message, details = exc.status_code, str(exc.detail), None
        headers = dict(exc.headers or {})
    else:
        status = error_status(exc)
        message, details = error_message(exc)
        if status >= 500:
            logger.exception("dashboard: %s %s failed", request.method, request.url.path)
            if not isinstance(exc, TickerQError):
                message = "internal error; see the server log"
    if status == 404 and request.headers.get(REFRESH_HEADER):
        # A live refresh of something deleted meanwhile: not an error for the page,
        # which marks what it shows as gone (see static/app.js).
        return Response(status_code=204, headers={GONE_HEADER: "1"})
    if wants_json(request):
        body: dict[str, Any] = {"error": message}
        if details is not None:
            body["detail"] = details
        return JSONResponse(body, status_code=status, headers=headers)
    response = error_page(request, status, message)
    response.headers.update(headers)
    return response


async def _metrics(request: Request) -> Response:
    """The app's Prometheus metrics (``app.dashboard(metrics=True)``; the view permission)."""
    metrics = dashboard_of(request).metrics
    assert metrics is not None  # the route exists only then
    body, content_type = await metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


def _html_routes() -> list[Route]:
    """The pages (GET) and the actions of their forms (POST), in one table: a path
    may have both, and a fixed segment (``new``, ``delete``, ``cancel``...) comes before
    ``{id}``."""
    return [
        Route("/", pages.overview, methods=["GET"]),
        Route("/events", pages.events, methods=["GET"]),
        Route("/nodes", pages.nodes, methods=["GET"]),
        Route("/time-tickers", pages.time_tickers, methods=["GET"]),
        Route("/time-tickers", forms.add_time_ticker, methods=["POST"]),
        Route("/time-tickers/new", pages.time_ticker_form, methods=["GET"]),
        Route("/time-tickers/delete", forms.batch_delete, methods=["POST"]),
        Route("/time-tickers/cancel", forms.bulk_time_action, methods=["POST"]),
        Route("/time-tickers/retry", forms.bulk_time_action, methods=["POST"]),
        Route("/time-tickers/{id}", pages.time_ticker, methods=["GET"]),
        Route("/time-tickers/{id}", forms.edit_time_ticker, methods=["POST"]),
        Route("/time-tickers/{id}/edit", pages.time_ticker_form, methods=["GET"]),
        Route("/time-tickers/{id}/{action}", forms.time_action, methods=["POST"]),
        Route("/cron-tickers", pages.cron_tickers, methods=["GET"]),
        Route("/cron-tickers", forms.add_cron, methods=["POST"]),
        Route("/cron-tickers/new", pages.cron_form, methods=["GET"]),
        Route("/cron-tickers/{id}", pages.cron_ticker, methods=["GET"]),
        Route("/cron-tickers/{id}", forms.edit_cron, methods=["POST"]),
        Route("/cron-tickers/{id}/edit", pages.cron_form, methods=["GET"]),
        Route("/cron-tickers/{id}/{action}", forms.cron_action, methods=["POST"]),
        Route("/cron-preview", pages.cron_preview_fragment, methods=["GET"]),
        Route("/occurrences/cancel", forms.bulk_occurrence_action, methods=["POST"]),
        Route("/occurrences/retry", forms.bulk_occurrence_action, methods=["POST"]),
        Route("/occurrences/{id}", pages.occurrence, methods=["GET"]),
        Route("/occurrences/{id}/{action}", forms.occurrence_action, methods=["POST"]),
        Route("/engine/{action}", forms.engine_action, methods=["POST"]),
        Route("/functions", pages.functions, methods=["GET"]),
        Route("/functions/{action}", forms.function_action, methods=["POST"]),
        Route("/cluster/{action}", forms.cluster_action, methods=["POST"]),
    ]


def create_dashboard(
    app: TickerQ,
    *,
    auth: AuthCallable | None = None,
    permissions: PermissionsSpec = None,
    base_path: str = "",
    redact: Redactor | None = None,
    title: str = "tickerq",
    allowed_origins: Sequence[str] = (),
    metrics: bool = False,
    stream_max_age: float = 15.0,
) -> Starlette:
    """The dashboard of ``app`` as a Starlette app (ASGI), to mount or serve.

    ``auth``: None (loopback clients only, with a loopback ``Host`` and no proxy
    headers), :class:`BasicAuth`, :class:`BearerAuth` or a callable
    ``auth(request) -> user | None`` (may be async; a falsy result refuses).
    ``permissions``: None (every user may do everything), a set of
    :class:`Permission` for everyone, a mapping user name -> set, or a callable
    ``(user) -> set``. ``base_path``: the path it is mounted at, when the
    framework does not pass it as the ASGI ``root_path``. ``redact(function,
    payload) -> payload`` hides parts of payloads. ``allowed_origins``: extra
    origins allowed to POST (a proxy that rewrites Host). ``metrics``: serve the
    app's Prometheus metrics at ``/metrics`` (its PrometheusMiddleware, installed
    if it has none; needs ``tickerq[prometheus]``), to users with the view permission.
    ``stream_max_age``: seconds a page's event stream lasts before the browser
    opens the next one (the most a server's graceful shutdown waits for it).

    ``/api/healthz`` and ``/api/readyz`` answer anyone, without credentials (see
    :mod:`tickerq.health`).
    """
    dash = Dashboard(
        app,
        auth=auth,
        permissions=permissions,
        base_path=base_path,
        title=title,
        allowed_origins=tuple(allowed_origins),
    )
    dash.service = Service(app, redact)
    if (
        isinstance(stream_max_age, bool)
        or not isinstance(stream_max_age, int | float)
        or not 0 < stream_max_age <= 3600
    ):
        raise InvalidArgumentError(
            f"stream_max_age must be seconds in (0, 3600], got {stream_max_age!r}"
        )
    dash.live = LiveFeed(app.events, app.store, max_age=float(stream_max_age))
    if metrics:
        try:
            from tickerq.contrib.prometheus import prometheus_of
        except ImportError as exc:
            raise ImportError(
                f"app.dashboard(metrics=True) needs prometheus_client ({exc}): "
                "pip install 'tickerq[prometheus]'"
            ) from exc
        dash.metrics = prometheus_of(app)
    routes: list[Route | Mount] = [
        *([Route("/metrics", _metrics, methods=["GET"])] if metrics else []),
        *_html_routes(),
        Mount("/api", routes=api.routes()),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    exception_handlers: dict[Any, Any] = {
        cls: _handle_error
        for cls in (HTTPException, TickerQError, DashboardError, ValidationError, ValueError)
    }
    star = Starlette(routes=routes, exception_handlers=exception_handlers)
    star.add_middleware(SecurityLayer, dashboard=dash)
    star.state.tickerq_dashboard = dash
    return star

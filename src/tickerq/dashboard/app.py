"""The dashboard's ASGI app: security around every request, routes, errors."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickerq.dashboard.auth import (
    AuthCallable,
    BasicAuth,
    DashboardUser,
    Permission,
    PermissionsSpec,
    authenticate,
    check_permissions_spec,
    local_refusal,
    permissions_for,
    same_origin,
    user_name,
)
from tickerq.dashboard.live import LiveFeed
from tickerq.dashboard.service import Redactor, Service
from tickerq.errors import (
    CronError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    StoreConnectionError,
    TickerNotFoundError,
    TickerQError,
    TickerStateError,
)

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["CSP", "Dashboard", "DashboardError", "create_dashboard"]

logger = logging.getLogger("tickerq.dashboard")

HERE = Path(__file__).parent

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
"""The Content-Security-Policy of every response: no inline script or style."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 2_000_000


class DashboardError(Exception):
    """An error answered with ``status`` and a message naming the bad value."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Dashboard:
    """One dashboard over one app: its settings, service and live feed."""

    app: TickerQ
    auth: AuthCallable | None = None
    permissions: PermissionsSpec = None
    base_path: str = ""
    title: str = "tickerq"
    allowed_origins: Collection[str] = ()
    service: Service = field(init=False)
    live: LiveFeed = field(init=False)
    templates: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.base_path = self.base_path.rstrip("/")
        if self.base_path and not self.base_path.startswith("/"):
            raise ValueError(f"base_path must start with '/', got {self.base_path!r}")
        check_permissions_spec(self.permissions)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def prefix(self, scope: Scope) -> str:
        """Where the dashboard is mounted: ``base_path`` or the ASGI root_path."""
        if self.base_path:
            return self.base_path
        if "tickerq.prefix" in scope:  # fixed where the request entered the dashboard
            return str(scope["tickerq.prefix"])
        return _mount_prefix(scope)[0]

    async def ensure_open(self) -> None:
        """Open the app's store if nobody did yet (a mounted dashboard gets no lifespan)."""
        if not self.app._opened:
            await self.app.open()


def dashboard_of(conn: HTTPConnection) -> Dashboard:
    """The dashboard serving this request."""
    dash = conn.scope["tickerq.dashboard"]
    assert isinstance(dash, Dashboard)
    return dash


def user_of(conn: HTTPConnection) -> DashboardUser:
    """The user making this request (set by the security layer)."""
    user = conn.scope["tickerq.user"]
    assert isinstance(user, DashboardUser)
    return user


def require(conn: HTTPConnection, permission: Permission) -> DashboardUser:
    """The user, if they hold ``permission``; else a 403."""
    user = user_of(conn)
    if not user.can(permission):
        message = f"user {user.name!r} lacks the {permission.value!r} permission for this"
        log_refusal(conn, 403, message)
        raise DashboardError(403, message)
    return user


def wants_json(conn: HTTPConnection) -> bool:
    """True for API paths (answer errors as JSON)."""
    path = conn.scope.get("tickerq.route_path", "")
    return str(path).startswith("/api")


def _mount_prefix(scope: Scope) -> tuple[str, str | None]:
    """Where the dashboard is mounted, and a corrected ``path`` (or None).

    Starlette and FastAPI set ``root_path``. Litestar's ``is_mount`` strips the
    mount path from ``path`` without setting ``root_path`` (and adds a trailing
    slash): the prefix is then what ``raw_path`` has before it.
    """
    root = str(scope.get("root_path", "")).rstrip("/")
    if root:
        return root, None
    raw, path = scope.get("raw_path"), str(scope.get("path", ""))
    if not isinstance(raw, bytes) or not path:
        return "", None
    full = unquote(raw.decode("latin-1"))
    if full == path:
        return "", None
    if full.endswith(path):
        return full[: len(full) - len(path)].rstrip("/"), None
    bare = path.rstrip("/")
    if path.endswith("/") and full.endswith(bare) and not full.endswith("/"):
        return full[: len(full) - len(bare)].rstrip("/"), bare or "/"
    return "", None


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
        prefix, fixed_path = _mount_prefix(scope)
        if fixed_path is not None:
            scope["path"] = fixed_path
        scope["tickerq.prefix"] = dash.base_path or prefix
        scope["tickerq.route_path"] = _route_path(scope)
        conn = HTTPConnection(scope)
        is_api = wants_json(conn)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {h[0].lower() for h in headers}
                for name, value in _SECURITY_HEADERS:
                    if name not in names:
                        headers.append((name, value))
            await send(message)

        refusal = await self._refusal(conn, is_api)
        if refusal is not None:
            response, reason, quiet = refusal
            log_refusal(conn, response.status_code, reason, quiet=quiet)
            await response(scope, receive, send_with_headers)
            return
        await dash.ensure_open()
        await _with_body_limit(self.app, scope, receive, send_with_headers, is_api)

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


def log_refusal(conn: HTTPConnection, status: int, reason: str, *, quiet: bool = False) -> None:
    """Log a refused request: who (client address), what (method and path), why.

    Never headers or the query string, where credentials live.
    """
    client = conn.scope.get("client")
    via = conn.headers.get("x-forwarded-for") or conn.headers.get("forwarded")
    logger.log(
        logging.DEBUG if quiet else logging.WARNING,
        "dashboard: refused (%d) %s %r from %s%s: %s",
        status,
        conn.scope.get("method", "?"),
        str(conn.scope.get("path", ""))[:300],
        client[0] if client else "unknown client",
        f" (forwarded for {via[:200]!r})" if via else "",
        reason,
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


def error_status(exc: BaseException) -> int:
    """The HTTP status for a tickerq error."""
    if isinstance(exc, DashboardError):
        return exc.status
    if isinstance(exc, FunctionNotFoundError):
        return 422
    if isinstance(exc, TickerNotFoundError):
        return 404
    if isinstance(exc, TickerStateError):
        return 409
    if isinstance(
        exc, InvalidArgumentError | InvalidRequestError | CronError | ValidationError | ValueError
    ):
        return 422
    if isinstance(exc, StoreConnectionError):
        return 503
    return 500


def error_message(exc: BaseException) -> tuple[str, list[dict[str, Any]] | None]:
    """A message naming the bad value, and pydantic's details if any."""
    if isinstance(exc, ValidationError):
        details = []
        parts = []
        for err in exc.errors(include_url=False, include_context=False):
            where = ".".join(str(x) for x in err["loc"]) or "body"
            given = err.get("input")
            shown = repr(given)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            parts.append(f"{where}: {err['msg']} (got {shown})")
            details.append({"loc": list(err["loc"]), "msg": err["msg"], "input": shown})
        return "invalid input: " + "; ".join(parts), details
    if isinstance(exc, DashboardError):
        return exc.message, None
    return str(exc), None


REFRESH_HEADER = "X-Tickerq-Refresh"
"""Sent by the page's live refreshes (static/app.js)."""
GONE_HEADER = "X-Tickerq-Gone"
"""Answer to a live refresh of a ticker or cron deleted meanwhile (with 204)."""


async def _handle_error(request: Request, exc: Exception) -> Response:
    from tickerq.dashboard.views import error_page

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


def create_dashboard(
    app: TickerQ,
    *,
    auth: AuthCallable | None = None,
    permissions: PermissionsSpec = None,
    base_path: str = "",
    redact: Redactor | None = None,
    title: str = "tickerq",
    allowed_origins: Sequence[str] = (),
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
    origins allowed to POST (a proxy that rewrites Host).
    """
    from tickerq.dashboard import api, views

    dash = Dashboard(
        app,
        auth=auth,
        permissions=permissions,
        base_path=base_path,
        title=title,
        allowed_origins=tuple(allowed_origins),
    )
    dash.service = Service(app, redact)
    dash.live = LiveFeed(app, dash.service.queries)
    routes: list[Route | Mount] = [
        *views.routes(),
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

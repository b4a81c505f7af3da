"""What every dashboard handler shares: the Dashboard serving the request, its user,
permission checks, errors and how they are answered.

The pages, the form actions and the JSON API import this module; ``app.py``
assembles them into the ASGI app, and nothing in the dashboard imports it back.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Scope

from tickerq.dashboard.auth import (
    AuthCallable,
    DashboardUser,
    Permission,
    PermissionsSpec,
    check_permissions_spec,
)
from tickerq.dashboard.live import LiveFeed
from tickerq.dashboard.service import Service
from tickerq.errors import (
    CronError,
    DuplicateJobError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    StoreConnectionError,
    TickerNotFoundError,
    TickerStateError,
)
from tickerq.health import HealthChecks

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.contrib.prometheus import PrometheusMiddleware

__all__ = [
    "MAX_BODY",
    "Dashboard",
    "DashboardError",
    "dashboard_of",
    "error_message",
    "error_status",
    "log_refusal",
    "mount_prefix",
    "require",
    "user_of",
]

logger = logging.getLogger("tickerq.dashboard")

TEMPLATES = Path(__file__).parent / "templates"

MAX_BODY = 2_000_000
"""The largest request body the dashboard reads, in bytes."""


class DashboardError(Exception):
    """An error answered with ``status`` and a message naming the bad value."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Dashboard:
    """One dashboard over one app: its settings, service, live feed and templates."""

    app: TickerQ
    auth: AuthCallable | None = None
    permissions: PermissionsSpec = None
    base_path: str = ""
    title: str = "tickerq"
    allowed_origins: Collection[str] = ()
    metrics: PrometheusMiddleware | None = None
    """Serves ``/metrics`` when set (``app.dashboard(metrics=True)``)."""
    service: Service = field(init=False)
    live: LiveFeed = field(init=False)
    health: HealthChecks = field(init=False)
    """The readiness check of ``/api/readyz`` (the engine counts where it runs)."""
    templates: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.base_path = self.base_path.rstrip("/")
        if self.base_path and not self.base_path.startswith("/"):
            raise ValueError(f"base_path must start with '/', got {self.base_path!r}")
        check_permissions_spec(self.permissions)
        self.health = HealthChecks(self.app, engine=None, open_store=self.ensure_open)
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
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
        return mount_prefix(scope)[0]

    async def ensure_open(self) -> None:
        """Open the app's store if nobody did yet (a mounted dashboard gets no lifespan)."""
        if not self.app._opened:
            await self.app.open()


def mount_prefix(scope: Scope) -> tuple[str, str | None]:
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


# -- who is asking ---------------------------------------------------------------------


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


# -- errors ----------------------------------------------------------------------------


def error_status(exc: BaseException) -> int:
    """The HTTP status for a tickerq error."""
    if isinstance(exc, DashboardError):
        return exc.status
    if isinstance(exc, FunctionNotFoundError):
        return 422
    if isinstance(exc, TickerNotFoundError):
        return 404
    if isinstance(exc, TickerStateError | DuplicateJobError):
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

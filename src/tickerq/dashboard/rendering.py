"""Rendering the dashboard's HTML: a template with what every page needs, the
timezone times are shown in, and errors as pages.

Shared by the pages (``pages.py``) and the form actions (``forms.py``), which
show a form again with its message when the input is bad.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tickerq.cron import parse_timezone
from tickerq.dashboard.context import DashboardError, dashboard_of, user_of
from tickerq.enums import Status
from tickerq.errors import CronError
from tickerq.urls import mask_url

__all__ = ["display_zone", "error_page", "path_id", "pretty", "relative", "render"]

TZ_COOKIE = "tickerq_tz"
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "Europe/Moscow",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
)
STATUS_CLASS = {
    Status.IDLE: "bg-slate-100 text-slate-700",
    Status.QUEUED: "bg-cyan-100 text-cyan-800",
    Status.IN_PROGRESS: "bg-amber-100 text-amber-800",
    Status.DONE: "bg-emerald-100 text-emerald-800",
    Status.DUE_DONE: "bg-lime-100 text-lime-800",
    Status.FAILED: "bg-red-100 text-red-800",
    Status.CANCELLED: "bg-fuchsia-100 text-fuchsia-800",
    Status.SKIPPED: "bg-zinc-200 text-zinc-600",
}


def display_zone(request: Request) -> tuple[ZoneInfo, bool]:
    """The timezone to show times in (query ``tz``, then cookie, then the app's);
    True when the query set it (so the cookie is updated)."""
    raw = request.query_params.get("tz")
    if raw:
        try:
            return parse_timezone(raw), True
        except CronError:
            pass
    cookie = request.cookies.get(TZ_COOKIE)
    if cookie:
        try:
            return parse_timezone(cookie), False
        except CronError:
            pass
    return parse_timezone(dashboard_of(request).app.timezone), False


def relative(value: datetime | None, now: datetime) -> str:
    """``value`` relative to ``now``: "in 5 s", "3 min ago"."""
    if value is None:
        return ""
    delta = (value - now).total_seconds()
    size = abs(delta)
    if size < 1:
        return "now"
    if size < 60:
        text = f"{size:.0f} s"
    elif size < 3600:
        text = f"{size / 60:.0f} min"
    elif size < 86400:
        text = f"{size / 3600:.1f} h"
    else:
        text = f"{size / 86400:.1f} d"
    return f"in {text}" if delta > 0 else f"{text} ago"


def _formatters(zone: ZoneInfo, now: datetime) -> dict[str, Callable[..., str]]:
    def dt(value: datetime | None, seconds: bool = True) -> str:
        if value is None:
            return "–"
        local = value.astimezone(zone)
        return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def dt_in(value: datetime | None, tz: str) -> str:
        if value is None:
            return "–"
        return value.astimezone(parse_timezone(tz)).strftime("%a %Y-%m-%d %H:%M:%S %Z")

    def ago(value: datetime | None) -> str:
        return relative(value, now)

    def ms(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"

    def local_input(value: datetime | None) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") if value else ""

    return {"dt": dt, "dt_in": dt_in, "ago": ago, "ms": ms, "local_input": local_input}


def pretty(payload: Any) -> str:
    """A payload as indented JSON text (escaped by the template, never marked safe)."""
    try:
        return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False)
    except (TypeError, ValueError):
        return repr(payload)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/``, with what every page needs."""
    dash = dashboard_of(request)
    user = user_of(request)
    zone, from_query = display_zone(request)
    prefix = dash.prefix(request.scope)
    route_path = str(request.scope.get("tickerq.route_path", "/"))
    now = dash.service.now()

    def url(path: str = "/", **query: Any) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "", False)}
        return prefix + path + ("?" + urlencode(q, doseq=True) if q else "")

    query = [(k, v) for k, v in request.query_params.multi_items() if k != "tz"]
    zones = list(COMMON_ZONES)
    for extra in (dash.app.timezone, zone.key):
        if extra not in zones:
            zones.insert(0, extra)
    html = dash.templates.get_template(template).render(
        request=request,
        title=dash.title,
        prefix=prefix,
        url=url,
        static=lambda name: f"{prefix}/static/{name}",
        route_path=route_path,
        self_query=query,
        user=user,
        can=user.can,
        zone=zone.key,
        zones=zones,
        engine=dash.service.engine_out(),
        app_tz=dash.app.timezone,
        store=mask_url(dash.app.store_url),
        status_class=STATUS_CLASS,
        statuses=list(Status),
        pretty=pretty,
        now=now,
        **_formatters(zone, now),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["cache-control"] = "no-store"
    if from_query:
        response.set_cookie(
            TZ_COOKIE,
            zone.key,
            max_age=365 * 86400,
            samesite="lax",
            httponly=True,
            path=prefix or "/",
        )
    return response


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a page (or, for htmx, as text shown in the page's banner)."""
    if request.headers.get("hx-request") or "tickerq.user" not in request.scope:
        return Response(message, status_code=status, media_type="text/plain; charset=utf-8")
    return render(request, "error.html", status=status, status_code=status, message=message)


def path_id(request: Request) -> UUID:
    """The ``{id}`` of the page's path; 404 when it is not a UUID."""
    raw = request.path_params["id"]
    try:
        return UUID(str(raw))
    except ValueError:
        raise DashboardError(404, f"{raw!r} is not a ticker id") from None

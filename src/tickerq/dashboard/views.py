"""Server-rendered pages (Jinja2, autoescaped) and the form actions behind their buttons.

Pages work without JavaScript (forms post and redirect); with it, htmx boosts
links and forms, and live events re-fetch the parts of a page that changed.
Form actions answer ``303 See Other`` (or ``HX-Location`` for htmx) to the
page to show next; a form with bad input is shown again with the message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tickerq.cron import parse_timezone
from tickerq.dashboard.app import (
    DashboardError,
    dashboard_of,
    error_message,
    error_status,
    require,
    user_of,
)
from tickerq.dashboard.auth import Permission
from tickerq.dashboard.schemas import (
    CronTickerIn,
    CronTickerUpdate,
    TimeTickerIn,
    TimeTickerUpdate,
)
from tickerq.enums import MisfirePolicy, Status, TickerKind
from tickerq.errors import CronError, TickerQError
from tickerq.urls import mask_url

__all__ = ["error_page", "routes"]

PAGE_SIZE = 25
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


# -- rendering -------------------------------------------------------------------------


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


def go(request: Request, path: str, **query: Any) -> Response:
    """Send the browser to ``path`` under the dashboard (303, or HX-Location for htmx)."""
    dash = dashboard_of(request)
    q = {k: v for k, v in query.items() if v not in (None, "")}
    target = dash.prefix(request.scope) + path + ("?" + urlencode(q) if q else "")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": target})
    return RedirectResponse(target, status_code=303)


def _id(request: Request) -> UUID:
    raw = request.path_params["id"]
    try:
        return UUID(str(raw))
    except ValueError:
        raise DashboardError(404, f"{raw!r} is not a ticker id") from None


# -- pages -----------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    """The overview page."""
    service = dashboard_of(request).service
    data = await service.overview()
    counts = data.status_counts
    totals = {s.value: sum(counts[k].get(s.value, 0) for k in counts) for s in Status}
    crons = [c for c in await service.app.cron_tickers.query() if c.enabled and c.next_fire_at]
    next_cron = min(crons, key=lambda c: c.next_fire_at or data.now, default=None)
    return render(
        request, "overview.html", nav="overview", o=data, totals=totals, next_cron=next_cron
    )


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    try:
        return max(1, min(int(raw), 1_000_000))
    except ValueError:
        return 1


async def time_tickers(request: Request) -> Response:
    """Time tickers: filters, paging, chains as trees, batch delete."""
    service = dashboard_of(request).service
    params = request.query_params
    status_raw = params.get("status", "")
    status = Status(status_raw) if status_raw in Status.__members__ else None
    function = params.get("function") or None
    text = (params.get("q") or "").strip()[:200] or None
    filtered = bool(status or function or text)
    view = params.get("view") or ("flat" if filtered else "tree")
    page = _page_number(request)
    roots_only = view == "tree"
    found = await service.time_ticker_page(
        statuses=[status] if status else None,
        function=function,
        text=text,
        roots_only=roots_only,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    rows, total = found.items, found.total
    trees = await service.chain_trees([r.id for r in rows]) if roots_only else {}
    items: list[tuple[int, Any]] = []
    for row in rows:
        items.append((0, row))
        items.extend(trees.get(row.id, ()))
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return render(
        request,
        "time_tickers.html",
        nav="time",
        items=items,
        total=total,
        page=page,
        pages=pages,
        f_status=status.value if status else "",
        f_function=function or "",
        f_q=text or "",
        searched=found.searched,
        view=view,
        functions=await service.functions(),
        redact=service.redact,
    )


async def time_ticker(request: Request) -> Response:
    """One time ticker: payload, chain, attempts."""
    service = dashboard_of(request).service
    ticker_id = _id(request)
    ticker = await service.app.time_tickers.get(ticker_id)
    parent = await service.app.time_tickers.get(ticker.parent_id) if ticker.parent_id else None
    return render(
        request,
        "time_ticker.html",
        nav="time",
        t=ticker,
        parent=parent,
        payload=pretty(service.redact(ticker.function, ticker.request)),
        tree=await service.children_tree(ticker.id),
        attempts=await service.app.time_tickers.attempts(ticker_id),
    )


async def time_ticker_form(request: Request) -> Response:
    """The form to add a time ticker (or edit one, or start from a copy)."""
    require(request, Permission.EDIT)
    service = dashboard_of(request).service
    ticker = None
    if "id" in request.path_params:
        ticker = await service.app.time_tickers.get(_id(request))
    return await _time_form(request, ticker=ticker, values=None, message=None)


async def _time_form(
    request: Request,
    *,
    ticker: Any,
    values: dict[str, Any] | None,
    message: str | None,
    status: int = 200,
) -> Response:
    service = dashboard_of(request).service
    redacted = False
    if values is None:
        values = {"function": request.query_params.get("function", "")}
        if ticker is not None:
            shown = service.redact(ticker.function, ticker.request)
            redacted = shown != ticker.request
            values = {
                "function": ticker.function,
                "request": "" if redacted or ticker.request is None else pretty(ticker.request),
                "execution_time": ticker.execution_time,
                "description": ticker.description,
                "retries": ticker.retries,
                "retry_intervals": ", ".join(f"{x:g}" for x in ticker.retry_intervals or ()),
                "timeout": "" if ticker.timeout is None else f"{ticker.timeout:g}",
            }
    return render(
        request,
        "time_form.html",
        status=status,
        nav="time",
        ticker=ticker,
        v=values,
        message=message,
        redacted=redacted,
        functions=await service.functions(),
    )


async def cron_tickers(request: Request) -> Response:
    """Cron tickers with their expression in words and next fires."""
    service = dashboard_of(request).service
    crons = [service.cron_out(c, 3) for c in await service.app.cron_tickers.query()]
    return render(request, "cron_tickers.html", nav="cron", crons=crons)


async def cron_ticker(request: Request) -> Response:
    """One cron ticker: next fires, occurrences and their chart."""
    service = dashboard_of(request).service
    cron_id = _id(request)
    cron = service.cron_out(await service.app.cron_tickers.get(cron_id), 10)
    page = _page_number(request)
    occurrences = await service.app.cron_tickers.occurrences(
        cron_id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    more = len(occurrences) > PAGE_SIZE
    return render(
        request,
        "cron_ticker.html",
        nav="cron",
        c=cron,
        payload=pretty(cron.request),
        occurrences=occurrences[:PAGE_SIZE],
        page=page,
        more=more,
    )


async def cron_form(request: Request) -> Response:
    """The form to add or edit a cron ticker."""
    require(request, Permission.EDIT)
    service = dashboard_of(request).service
    cron = None
    if "id" in request.path_params:
        cron = await service.app.cron_tickers.get(_id(request))
    return await _cron_form(request, cron=cron, values=None, message=None)


async def _cron_form(
    request: Request,
    *,
    cron: Any,
    values: dict[str, Any] | None,
    message: str | None,
    status: int = 200,
) -> Response:
    service = dashboard_of(request).service
    redacted = False
    if values is None:
        values = {
            "function": request.query_params.get("function", ""),
            "expression": "",
            "timezone": service.app.timezone,
            "misfire": MisfirePolicy.RUN_ONCE.value,
            "enabled": True,
        }
        if cron is not None:
            shown = service.redact(cron.function, cron.request)
            redacted = shown != cron.request
            values = {
                "function": cron.function,
                "expression": cron.expression,
                "timezone": cron.timezone,
                "request": "" if redacted or cron.request is None else pretty(cron.request),
                "retries": cron.retries,
                "retry_intervals": ", ".join(f"{x:g}" for x in cron.retry_intervals or ()),
                "misfire": cron.misfire.value,
                "description": cron.description,
                "enabled": cron.enabled,
            }
    preview = None
    if values.get("expression"):
        try:
            preview = service.cron_preview(
                str(values["expression"]), str(values.get("timezone") or "") or None, 5
            )
        except (TickerQError, ValueError):
            preview = None
    return render(
        request,
        "cron_form.html",
        status=status,
        nav="cron",
        cron=cron,
        v=values,
        message=message,
        redacted=redacted,
        preview=preview,
        misfires=[m.value for m in MisfirePolicy],
        functions=await service.functions(),
    )


async def cron_preview_fragment(request: Request) -> Response:
    """The cron form's live preview (an HTML fragment)."""
    service = dashboard_of(request).service
    expression = (request.query_params.get("expression") or "").strip()[:200]
    timezone = (request.query_params.get("timezone") or "").strip()[:64] or None
    preview, problem = None, None
    if expression:
        try:
            preview = service.cron_preview(expression, timezone, 5)
        except (TickerQError, ValueError) as exc:
            problem = str(exc)
    return render(request, "_cron_preview.html", preview=preview, problem=problem)


async def occurrence(request: Request) -> Response:
    """One cron occurrence with its attempts."""
    service = dashboard_of(request).service
    occurrence_id = _id(request)
    found = await service.app.cron_tickers.get_occurrence(occurrence_id)
    cron = await service.app.store.get_cron_ticker(found.cron_ticker_id)
    return render(
        request,
        "occurrence.html",
        nav="cron",
        o=found,
        cron=cron,
        attempts=await service.app.cron_tickers.attempts(occurrence_id),
    )


async def nodes(request: Request) -> Response:
    """Every node: heartbeat, load, locks."""
    service = dashboard_of(request).service
    return render(request, "nodes.html", nav="nodes", nodes=await service.nodes())


async def events(request: Request) -> Response:
    """Server-Sent Events: ``change`` events naming the topics that changed."""
    dash = dashboard_of(request)
    return StreamingResponse(
        dash.live.stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# -- form actions ------------------------------------------------------------------------


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _json_field(form: FormData, name: str) -> tuple[bool, Any]:
    raw = _text(form, name)
    if not raw:
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DashboardError(422, f"{name}: not valid JSON ({exc})") from None


def _local_time(request: Request, raw: str) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise DashboardError(422, f"execution time {raw!r} is not a date and time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=display_zone(request)[0])
    return value


def _intervals(raw: str) -> list[float] | None:
    if not raw:
        return None
    try:
        return [float(x) for x in raw.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise DashboardError(
            422, f"retry intervals {raw!r}: give seconds separated by commas, e.g. 10, 60, 300"
        ) from None


def _number(raw: str, what: str) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise DashboardError(422, f"{what} {raw!r} is not a number") from None


def _time_data(request: Request, form: FormData, editing: bool) -> tuple[dict[str, Any], Any]:
    values = {k: _text(form, k) for k in form}
    data: dict[str, Any] = {}
    if not editing:
        data["function"] = values.get("function", "")
    has_request, request_payload = _json_field(form, "request")
    if has_request:
        data["request"] = request_payload
    when = _local_time(request, values.get("execution_time", ""))
    if when is not None or not editing:
        data["execution_time"] = when
    data["description"] = values.get("description", "")
    if values.get("retries"):
        data["retries"] = _number(values["retries"], "retries")
    data["retry_intervals"] = _intervals(values.get("retry_intervals", ""))
    data["timeout"] = _number(values.get("timeout", ""), "timeout")
    model: type[BaseModel] = TimeTickerUpdate if editing else TimeTickerIn
    return values, model.model_validate(data)


async def add_time_ticker(request: Request) -> Response:
    """Form action: add a time ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    form = await request.form()
    values = {k: _text(form, k) for k in form}
    try:
        _, data = _time_data(request, form, editing=False)
        ticker = await service.add_time_ticker(user, data)
    except (DashboardError, ValidationError, TickerQError, ValueError) as exc:
        return await _time_form(
            request, ticker=None, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/time-tickers/{ticker.id}")


async def edit_time_ticker(request: Request) -> Response:
    """Form action: change a waiting time ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    ticker_id = _id(request)
    current = await service.app.time_tickers.get(ticker_id)
    form = await request.form()
    values = {k: _text(form, k) for k in form}
    values["function"] = current.function
    try:
        _, data = _time_data(request, form, editing=True)
        await service.update_time_ticker(user, ticker_id, data)
    except (DashboardError, ValidationError, TickerQError, ValueError) as exc:
        return await _time_form(
            request, ticker=current, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/time-tickers/{ticker_id}")


def _message(exc: BaseException) -> str:
    return error_message(exc)[0]


def _status(exc: BaseException) -> int:
    status = error_status(exc)
    return status if 400 <= status < 500 else 422


async def time_action(request: Request) -> Response:
    """Form action: cancel, retry, duplicate or delete a time ticker."""
    service = dashboard_of(request).service
    action = request.path_params["action"]
    ticker_id = _id(request)
    if action == "cancel":
        await service.cancel(require(request, Permission.OPERATE), TickerKind.TIME, ticker_id)
    elif action == "retry":
        await service.retry(require(request, Permission.OPERATE), TickerKind.TIME, ticker_id)
    elif action == "duplicate":
        copy = await service.duplicate(require(request, Permission.EDIT), ticker_id)
        return go(request, f"/time-tickers/{copy.id}")
    elif action == "delete":
        await service.delete(require(request, Permission.DELETE), ticker_id)
        return go(request, "/time-tickers")
    else:
        raise DashboardError(404, f"unknown action {action!r}")
    return go(request, f"/time-tickers/{ticker_id}")


async def batch_delete(request: Request) -> Response:
    """Form action: delete the checked time tickers."""
    user = require(request, Permission.DELETE)
    service = dashboard_of(request).service
    form = await request.form()
    ids = []
    for raw in form.getlist("ids"):
        try:
            ids.append(UUID(str(raw)))
        except ValueError:
            raise DashboardError(422, f"{raw!r} is not a ticker id") from None
    if not ids:
        raise DashboardError(422, "select at least one ticker to delete")
    count = await service.delete_many(user, ids)
    return go(request, "/time-tickers", deleted=count)


def _cron_data(form: FormData, editing: bool) -> tuple[dict[str, Any], BaseModel]:
    values: dict[str, Any] = {k: _text(form, k) for k in form}
    values["enabled"] = "enabled" in form
    data: dict[str, Any] = {
        "expression": values.get("expression", ""),
        "timezone": values.get("timezone") or None,
        "misfire": values.get("misfire") or MisfirePolicy.RUN_ONCE.value,
        "description": values.get("description", ""),
        "retry_intervals": _intervals(values.get("retry_intervals", "")),
    }
    has_request, request_payload = _json_field(form, "request")
    if has_request:
        data["request"] = request_payload
    if values.get("retries"):
        data["retries"] = _number(values["retries"], "retries")
    if not editing:
        data["function"] = values.get("function", "")
        data["enabled"] = values["enabled"]
        return values, CronTickerIn.model_validate(data)
    return values, CronTickerUpdate.model_validate(data)


async def add_cron(request: Request) -> Response:
    """Form action: add a cron ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    form = await request.form()
    values: dict[str, Any] = {k: _text(form, k) for k in form}
    try:
        values, data = _cron_data(form, editing=False)
        assert isinstance(data, CronTickerIn)
        cron = await service.add_cron(user, data)
    except (DashboardError, ValidationError, TickerQError, ValueError) as exc:
        return await _cron_form(
            request, cron=None, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/cron-tickers/{cron.id}")


async def edit_cron(request: Request) -> Response:
    """Form action: change a cron ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    cron_id = _id(request)
    current = await service.app.cron_tickers.get(cron_id)
    form = await request.form()
    values: dict[str, Any] = {k: _text(form, k) for k in form}
    try:
        values, data = _cron_data(form, editing=True)
        values["function"] = current.function
        assert isinstance(data, CronTickerUpdate)
        toggled = values["enabled"] != current.enabled
        # all or nothing: enabling or disabling needs "operate", checked before any change
        operator = require(request, Permission.OPERATE) if toggled else user
        await service.update_cron(user, cron_id, data)
        if toggled:
            await service.set_enabled(operator, cron_id, bool(values["enabled"]))
    except (DashboardError, ValidationError, TickerQError, ValueError) as exc:
        values["function"] = current.function
        return await _cron_form(
            request, cron=current, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/cron-tickers/{cron_id}")


async def cron_action(request: Request) -> Response:
    """Form action: enable, disable, run now or delete a cron ticker."""
    service = dashboard_of(request).service
    action = request.path_params["action"]
    cron_id = _id(request)
    if action in ("enable", "disable"):
        await service.set_enabled(require(request, Permission.OPERATE), cron_id, action == "enable")
    elif action == "run":
        await service.run_cron_now(require(request, Permission.OPERATE), cron_id)
    elif action == "delete":
        await service.delete_cron(require(request, Permission.DELETE), cron_id)
        return go(request, "/cron-tickers")
    else:
        raise DashboardError(404, f"unknown action {action!r}")
    next_page = _text(await request.form(), "next")
    if next_page == "list":
        return go(request, "/cron-tickers")
    return go(request, f"/cron-tickers/{cron_id}")


async def occurrence_action(request: Request) -> Response:
    """Form action: cancel or retry an occurrence."""
    service = dashboard_of(request).service
    action = request.path_params["action"]
    occurrence_id = _id(request)
    user = require(request, Permission.OPERATE)
    if action == "cancel":
        await service.cancel(user, TickerKind.CRON_OCCURRENCE, occurrence_id)
    elif action == "retry":
        await service.retry(user, TickerKind.CRON_OCCURRENCE, occurrence_id)
    else:
        raise DashboardError(404, f"unknown action {action!r}")
    return go(request, f"/occurrences/{occurrence_id}")


async def engine_action(request: Request) -> Response:
    """Form action: pause or resume this process's engine."""
    user = require(request, Permission.OPERATE)
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise DashboardError(404, f"unknown action {action!r}")
    dashboard_of(request).service.set_paused(user, action == "pause")
    return go(request, "/")


def routes() -> list[Route]:
    """The pages and form actions."""
    return [
        Route("/", overview, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/nodes", nodes, methods=["GET"]),
        Route("/time-tickers", time_tickers, methods=["GET"]),
        Route("/time-tickers", add_time_ticker, methods=["POST"]),
        Route("/time-tickers/new", time_ticker_form, methods=["GET"]),
        Route("/time-tickers/delete", batch_delete, methods=["POST"]),
        Route("/time-tickers/{id}", time_ticker, methods=["GET"]),
        Route("/time-tickers/{id}", edit_time_ticker, methods=["POST"]),
        Route("/time-tickers/{id}/edit", time_ticker_form, methods=["GET"]),
        Route("/time-tickers/{id}/{action}", time_action, methods=["POST"]),
        Route("/cron-tickers", cron_tickers, methods=["GET"]),
        Route("/cron-tickers", add_cron, methods=["POST"]),
        Route("/cron-tickers/new", cron_form, methods=["GET"]),
        Route("/cron-tickers/{id}", cron_ticker, methods=["GET"]),
        Route("/cron-tickers/{id}", edit_cron, methods=["POST"]),
        Route("/cron-tickers/{id}/edit", cron_form, methods=["GET"]),
        Route("/cron-tickers/{id}/{action}", cron_action, methods=["POST"]),
        Route("/cron-preview", cron_preview_fragment, methods=["GET"]),
        Route("/occurrences/{id}", occurrence, methods=["GET"]),
        Route("/occurrences/{id}/{action}", occurrence_action, methods=["POST"]),
        Route("/engine/{action}", engine_action, methods=["POST"]),
    ]

"""The dashboard's pages: GET handlers that render a template.

Pages work without JavaScript; with it, htmx boosts links and forms, and live
events re-fetch the parts of a page that changed. The forms' actions are in
``forms.py``, which shows a form again (``show_time_form``, ``show_cron_form``)
with the message when its input is bad.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tickerq.dashboard.auth import Permission
from tickerq.dashboard.bulk import notice_of
from tickerq.dashboard.context import dashboard_of, require
from tickerq.dashboard.rendering import path_id, pretty, render
from tickerq.dashboard.service import shown_headers
from tickerq.enums import MisfirePolicy, Status, TickerKind
from tickerq.errors import TickerQError
from tickerq.models import CLUSTER

__all__ = [
    "cron_form",
    "cron_preview_fragment",
    "cron_ticker",
    "cron_tickers",
    "events",
    "functions",
    "nodes",
    "occurrence",
    "overview",
    "show_cron_form",
    "show_time_form",
    "time_ticker",
    "time_ticker_form",
    "time_tickers",
]

PAGE_SIZE = 25


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


async def functions(request: Request) -> Response:
    """Functions: each one's settings and stored pause, with pause/resume buttons;
    the pause of the whole cluster."""
    service = dashboard_of(request).service
    pauses = await service.pauses.read()
    return render(
        request,
        "functions.html",
        nav="functions",
        functions=await service.functions(pauses=pauses),
        cluster=pauses.get(CLUSTER),
    )


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    try:
        return max(1, min(int(raw), 1_000_000))
    except ValueError:
        return 1


async def time_tickers(request: Request) -> Response:
    """Time tickers: filters, paging, chains as trees, bulk cancel, retry and delete."""
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
        back=urlencode(
            {k: v for k, v in params.items() if k in ("status", "function", "q", "view", "page")}
        ),
        bulk=notice_of(params),
    )


async def time_ticker(request: Request) -> Response:
    """One time ticker: payload, chain, attempts."""
    service = dashboard_of(request).service
    ticker_id = path_id(request)
    ticker = await service.app.time_tickers.get(ticker_id)
    parent = await service.app.time_tickers.get(ticker.parent_id) if ticker.parent_id else None
    return render(
        request,
        "time_ticker.html",
        nav="time",
        t=ticker,
        parent=parent,
        payload=pretty(service.redact(ticker.function, ticker.request)),
        result=None
        if ticker.result is None
        else pretty(service.redact(ticker.function, ticker.result)),
        headers=shown_headers(ticker.headers),
        tree=await service.children_tree(ticker.id),
        attempts=await service.app.time_tickers.attempts(ticker_id),
    )


async def time_ticker_form(request: Request) -> Response:
    """The form to add a time ticker (or edit one, or start from a copy)."""
    require(request, Permission.EDIT)
    service = dashboard_of(request).service
    ticker = None
    if "id" in request.path_params:
        ticker = await service.app.time_tickers.get(path_id(request))
    return await show_time_form(request, ticker=ticker, values=None, message=None)


async def show_time_form(
    request: Request,
    *,
    ticker: Any,
    values: dict[str, Any] | None,
    message: str | None,
    status: int = 200,
) -> Response:
    """The time ticker form: for ``ticker`` (None: a new one), filled from it or
    from ``values`` (what was posted), with ``message`` saying what was wrong."""
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
                "unique_key": ticker.unique_key or "",
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
    cron_id = path_id(request)
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
        bulk=notice_of(request.query_params, TickerKind.CRON_OCCURRENCE),
    )


async def cron_form(request: Request) -> Response:
    """The form to add or edit a cron ticker."""
    require(request, Permission.EDIT)
    service = dashboard_of(request).service
    cron = None
    if "id" in request.path_params:
        cron = await service.app.cron_tickers.get(path_id(request))
    return await show_cron_form(request, cron=cron, values=None, message=None)


async def show_cron_form(
    request: Request,
    *,
    cron: Any,
    values: dict[str, Any] | None,
    message: str | None,
    status: int = 200,
) -> Response:
    """The cron ticker form: for ``cron`` (None: a new one), filled from it or
    from ``values`` (what was posted), with ``message`` saying what was wrong."""
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
    occurrence_id = path_id(request)
    found = await service.app.cron_tickers.get_occurrence(occurrence_id)
    cron = await service.app.store.get_cron_ticker(found.cron_ticker_id)
    return render(
        request,
        "occurrence.html",
        nav="cron",
        o=found,
        cron=cron,
        result=None
        if found.result is None
        else pretty(service.redact(found.function, found.result)),
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
        dash.live.stream(request.headers.get("last-event-id")),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )

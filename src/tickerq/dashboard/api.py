"""The JSON API under ``<dashboard>/api``: everything the pages do.

Reads need the ``view`` permission; cancel, retry, run now, enable/disable and
pause/resume (of this process's engine, of a function or of the whole cluster)
need ``operate``; add, change and duplicate need ``edit``; deletes
need ``delete``. The bulk operations (``POST time-tickers/cancel``, ``retry``,
``update``, ``delete``; ``POST occurrences/cancel``, ``retry``) take up to 1,000
ids and answer what happened to each id. Bad input gets a 4xx answer ``{"error": "..."}`` naming the
bad value. ``GET <dashboard>/api/openapi.json`` describes it all.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickerq.dashboard.auth import Permission
from tickerq.dashboard.context import MAX_BODY, DashboardError, dashboard_of, require
from tickerq.dashboard.schemas import (
    BatchDeleteIn,
    BulkIdsIn,
    BulkResultOut,
    BulkUpdateIn,
    CronTickerIn,
    CronTickerUpdate,
    DeletedOut,
    OccurrenceDetailOut,
    OccurrencePage,
    PauseIn,
    TimeTickerDetailOut,
    TimeTickerIn,
    TimeTickerPage,
    TimeTickerUpdate,
)
from tickerq.enums import Status, TickerKind
from tickerq.health import liveness

__all__ = ["PUBLIC_PATHS", "routes"]

M = TypeVar("M", bound=BaseModel)

PUBLIC_PATHS = frozenset({"/api/healthz", "/api/readyz"})
"""Probes answered to anyone, without credentials (they tell states, nothing else)."""


# -- parameters ------------------------------------------------------------------------


def q_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi]; 422 naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DashboardError(422, f"query parameter {name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise DashboardError(422, f"query parameter {name}={value} is not in {lo}..{hi}")
    return value


def q_bool(request: Request, name: str) -> bool:
    """A boolean query parameter (true/false/1/0/yes/no/on/off)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise DashboardError(422, f"query parameter {name}={raw!r} is not a boolean")


def q_str(request: Request, name: str, max_length: int = 200) -> str | None:
    """A text query parameter (None when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise DashboardError(
            422, f"query parameter {name} is {len(raw)} characters long, over {max_length}"
        )
    if "\x00" in raw:
        raise DashboardError(422, f"query parameter {name}={raw!r} contains a NUL character")
    return raw.strip()


def q_statuses(request: Request) -> list[Status] | None:
    """``status=IDLE&status=FAILED`` or ``status=IDLE,FAILED``."""
    values = [v for raw in request.query_params.getlist("status") for v in raw.split(",")]
    values = [v.strip() for v in values if v.strip()]
    if not values:
        return None
    out = []
    for value in values:
        try:
            out.append(Status(value.upper()))
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise DashboardError(
                422, f"unknown status {value!r}; expected one of {allowed}"
            ) from None
    return out


def path_id(request: Request, name: str = "id") -> UUID:
    """The UUID in the path; 422 naming it if it is not one."""
    raw = request.path_params[name]
    try:
        return UUID(str(raw))
    except ValueError:
        raise DashboardError(422, f"{raw!r} is not a ticker id (a UUID)") from None


async def read_json(request: Request) -> Any:
    """The request body as JSON; 4xx naming the problem otherwise."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise DashboardError(413, f"the body is {len(body):,} bytes, over {MAX_BODY:,}")
    if not body.strip():
        raise DashboardError(422, "the body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DashboardError(400, f"the body is not valid JSON: {exc}") from None


async def read_model(request: Request, model: type[M]) -> M:
    """The request body validated as ``model`` (pydantic errors answer 422)."""
    return model.model_validate(await read_json(request))


def send(value: BaseModel | dict[str, Any] | list[Any], status: int = 200) -> Response:
    """A JSON answer."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return JSONResponse(value, status_code=status)


# -- reads -----------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    """Numbers of the overview page."""
    return send(await dashboard_of(request).service.overview())


async def throughput(request: Request) -> Response:
    """Ended rows per bucket, for the chart."""
    hours = q_int(request, "hours", 24, 1, 24 * 31)
    bucket = q_int(request, "bucket", 0, 0, 86400)
    if bucket == 0:
        bucket = 300 if hours <= 6 else 3600 if hours <= 72 else 86400
    if hours * 3600 // bucket > 2000:
        raise DashboardError(
            422, f"hours={hours} with bucket={bucket} s makes over 2000 buckets; use larger buckets"
        )
    return send(await dashboard_of(request).service.throughput(hours, bucket))


async def nodes(request: Request) -> Response:
    """Every node."""
    return send(await dashboard_of(request).service.nodes())


async def functions(request: Request) -> Response:
    """Registered functions."""
    return send(await dashboard_of(request).service.functions())


async def engine(request: Request) -> Response:
    """This process's engine state."""
    return send(dashboard_of(request).service.engine_out())


async def healthz(request: Request) -> Response:
    """Liveness: answered by the event loop (no credentials needed)."""
    return send(liveness())


async def readyz(request: Request) -> Response:
    """Readiness: 200 or 503 with the reason (no credentials needed)."""
    readiness = await dashboard_of(request).health.ready()
    return send(readiness.body(), readiness.status_code)


async def list_time_tickers(request: Request) -> Response:
    """A filtered page of time tickers."""
    service = dashboard_of(request).service
    limit = q_int(request, "limit", 50, 1, 500)
    offset = q_int(request, "offset", 0, 0, 10_000_000)
    statuses = q_statuses(request)
    function = q_str(request, "function")
    text = q_str(request, "q")
    roots_only = q_bool(request, "roots_only")
    page = await service.time_ticker_page(
        statuses=statuses,
        function=function,
        text=text,
        roots_only=roots_only,
        limit=limit,
        offset=offset,
    )
    return send(
        TimeTickerPage(
            items=[service.ticker_out(t) for t in page.items],
            total=page.total,
            limit=limit,
            offset=offset,
            searched=page.searched,
        )
    )


async def get_time_ticker(request: Request) -> Response:
    """One time ticker with its children and attempts."""
    service = dashboard_of(request).service
    ticker_id = path_id(request)
    ticker = await service.app.time_tickers.get(ticker_id)
    children = await service.app.time_tickers.query(parent_id=ticker_id, limit=500)
    attempts = await service.app.time_tickers.attempts(ticker_id)
    return send(
        TimeTickerDetailOut(
            ticker=service.ticker_out(ticker),
            children=[service.ticker_out(c) for c in children],
            attempts=[service.attempt_out(a, ticker.function) for a in attempts],
        )
    )


async def list_crons(request: Request) -> Response:
    """Every cron ticker, with its next fires."""
    service = dashboard_of(request).service
    function = q_str(request, "function")
    n = q_int(request, "next", 3, 0, 50)
    crons = await service.app.cron_tickers.query(function=function)
    return send([service.cron_out(c, n) for c in crons])


async def get_cron(request: Request) -> Response:
    """One cron ticker, with its next fires."""
    service = dashboard_of(request).service
    n = q_int(request, "next", 5, 0, 50)
    return send(service.cron_out(await service.app.cron_tickers.get(path_id(request)), n))


async def cron_occurrences(request: Request) -> Response:
    """A page of a cron ticker's occurrences, newest first."""
    service = dashboard_of(request).service
    limit = q_int(request, "limit", 50, 1, 500)
    offset = q_int(request, "offset", 0, 0, 10_000_000)
    items = await service.app.cron_tickers.occurrences(path_id(request), limit=limit, offset=offset)
    return send(
        OccurrencePage(items=[service.occurrence_out(o) for o in items], limit=limit, offset=offset)
    )


async def get_occurrence(request: Request) -> Response:
    """One occurrence with its attempts."""
    service = dashboard_of(request).service
    occurrence_id = path_id(request)
    occurrence = await service.app.cron_tickers.get_occurrence(occurrence_id)
    attempts = await service.app.cron_tickers.attempts(occurrence_id)
    return send(
        OccurrenceDetailOut(
            occurrence=service.occurrence_out(occurrence),
            attempts=[service.attempt_out(a, occurrence.function) for a in attempts],
        )
    )


async def cron_preview(request: Request) -> Response:
    """Check a cron expression in a timezone and list its next fires."""
    service = dashboard_of(request).service
    expression = q_str(request, "expression")
    if expression is None:
        raise DashboardError(422, "query parameter expression is required")
    timezone = q_str(request, "timezone", 64)
    n = q_int(request, "n", 5, 1, 50)
    return send(service.cron_preview(expression, timezone, n))


# -- operations --------------------------------------------------------------------------


async def add_time_ticker(request: Request) -> Response:
    """Add a time ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    data = await read_model(request, TimeTickerIn)
    return send(service.ticker_out(await service.add_time_ticker(user, data)), 201)


async def update_time_ticker(request: Request) -> Response:
    """Change a waiting time ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    ticker_id = path_id(request)
    data = await read_model(request, TimeTickerUpdate)
    return send(service.ticker_out(await service.update_time_ticker(user, ticker_id, data)))


async def duplicate_time_ticker(request: Request) -> Response:
    """A copy of a time ticker, due now."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    return send(service.ticker_out(await service.duplicate(user, path_id(request))), 201)


async def delete_time_ticker(request: Request) -> Response:
    """Delete a time ticker and its chain."""
    user = require(request, Permission.DELETE)
    await dashboard_of(request).service.delete(user, path_id(request))
    return Response(status_code=204)


async def batch_delete(request: Request) -> Response:
    """Delete several time tickers."""
    user = require(request, Permission.DELETE)
    data = await read_model(request, BatchDeleteIn)
    count = await dashboard_of(request).service.delete_many(user, data.ids)
    return send(DeletedOut(deleted=count))


async def bulk_cancel(request: Request) -> Response:
    """Cancel several time tickers or occurrences; each id is reported."""
    user = require(request, Permission.OPERATE)
    data = await read_model(request, BulkIdsIn)
    result = await dashboard_of(request).service.cancel_many(user, _kind(request), data.ids)
    return send(BulkResultOut.of(result))


async def bulk_retry(request: Request) -> Response:
    """Run several time tickers or occurrences again now; each id is reported."""
    user = require(request, Permission.OPERATE)
    data = await read_model(request, BulkIdsIn)
    result = await dashboard_of(request).service.retry_many(user, _kind(request), data.ids)
    return send(BulkResultOut.of(result))


async def bulk_update(request: Request) -> Response:
    """Change several waiting time tickers the same way; each id is reported."""
    user = require(request, Permission.EDIT)
    data = await read_model(request, BulkUpdateIn)
    result = await dashboard_of(request).service.update_many(user, data.ids, data.changes)
    return send(BulkResultOut.of(result))


def _kind(request: Request) -> TickerKind:
    path = str(request.scope.get("tickerq.route_path", ""))
    return TickerKind.CRON_OCCURRENCE if "/occurrences/" in path else TickerKind.TIME


async def cancel(request: Request) -> Response:
    """Cancel a time ticker or occurrence."""
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    kind = _kind(request)
    ticker_id = path_id(request)
    await service.cancel(user, kind, ticker_id)
    return await _after_operation(request, kind, ticker_id)


async def retry(request: Request) -> Response:
    """Run a time ticker or occurrence again now."""
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    kind = _kind(request)
    ticker_id = path_id(request)
    await service.retry(user, kind, ticker_id)
    return await _after_operation(request, kind, ticker_id)


async def _after_operation(request: Request, kind: TickerKind, ticker_id: UUID) -> Response:
    service = dashboard_of(request).service
    if kind is TickerKind.TIME:
        return send(service.ticker_out(await service.app.time_tickers.get(ticker_id)))
    return send(service.occurrence_out(await service.app.cron_tickers.get_occurrence(ticker_id)))


async def add_cron(request: Request) -> Response:
    """Add a cron ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    data = await read_model(request, CronTickerIn)
    return send(service.cron_out(await service.add_cron(user, data), 5), 201)


async def update_cron(request: Request) -> Response:
    """Change a cron ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    cron_id = path_id(request)
    data = await read_model(request, CronTickerUpdate)
    return send(service.cron_out(await service.update_cron(user, cron_id, data), 5))


async def delete_cron(request: Request) -> Response:
    """Delete a cron ticker."""
    user = require(request, Permission.DELETE)
    await dashboard_of(request).service.delete_cron(user, path_id(request))
    return Response(status_code=204)


async def enable_cron(request: Request) -> Response:
    """Enable a cron ticker."""
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    return send(service.cron_out(await service.set_enabled(user, path_id(request), True), 5))


async def disable_cron(request: Request) -> Response:
    """Disable a cron ticker."""
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    return send(service.cron_out(await service.set_enabled(user, path_id(request), False), 5))


async def run_cron(request: Request) -> Response:
    """Make an extra occurrence due now."""
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    occurrence = await service.run_cron_now(user, path_id(request))
    return send(service.occurrence_out(occurrence), 201)


async def pause(request: Request) -> Response:
    """Pause this process's engine."""
    user = require(request, Permission.OPERATE)
    return send(dashboard_of(request).service.set_paused(user, True))


async def resume(request: Request) -> Response:
    """Resume this process's engine."""
    user = require(request, Permission.OPERATE)
    return send(dashboard_of(request).service.set_paused(user, False))


async def pauses(request: Request) -> Response:
    """Every stored pause (of functions, of the cluster)."""
    return send(await dashboard_of(request).service.pauses.listing())


async def pause_function(request: Request) -> Response:
    """Pause a function on every node."""
    user = require(request, Permission.OPERATE)
    data = await read_model(request, PauseIn)
    return send(await dashboard_of(request).service.pauses.pause(user, data.function))


async def resume_function(request: Request) -> Response:
    """Resume a function on every node."""
    user = require(request, Permission.OPERATE)
    data = await read_model(request, PauseIn)
    return send(await dashboard_of(request).service.pauses.resume(user, data.function))


async def pause_cluster(request: Request) -> Response:
    """Pause all work on every node."""
    user = require(request, Permission.OPERATE)
    return send(await dashboard_of(request).service.pauses.pause_cluster(user))


async def resume_cluster(request: Request) -> Response:
    """End the cluster's pause."""
    user = require(request, Permission.OPERATE)
    return send(await dashboard_of(request).service.pauses.resume_cluster(user))


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of this API."""
    from tickerq.dashboard.openapi import openapi_document

    dash = dashboard_of(request)
    names = tuple(f.name for f in await dash.service.functions())
    return JSONResponse(openapi_document(dash.prefix(request.scope) + "/api", dash.title, names))


def routes() -> list[Route]:
    """The API's routes (mounted at /api)."""
    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/overview", overview, methods=["GET"]),
        Route("/throughput", throughput, methods=["GET"]),
        Route("/nodes", nodes, methods=["GET"]),
        Route("/functions", functions, methods=["GET"]),
        Route("/engine", engine, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/engine/pause", pause, methods=["POST"]),
        Route("/engine/resume", resume, methods=["POST"]),
        Route("/pauses", pauses, methods=["GET"]),
        Route("/functions/pause", pause_function, methods=["POST"]),
        Route("/functions/resume", resume_function, methods=["POST"]),
        Route("/cluster/pause", pause_cluster, methods=["POST"]),
        Route("/cluster/resume", resume_cluster, methods=["POST"]),
        Route("/time-tickers", list_time_tickers, methods=["GET"]),
        Route("/time-tickers", add_time_ticker, methods=["POST"]),
        Route("/time-tickers/delete", batch_delete, methods=["POST"]),
        Route("/time-tickers/cancel", bulk_cancel, methods=["POST"]),
        Route("/time-tickers/retry", bulk_retry, methods=["POST"]),
        Route("/time-tickers/update", bulk_update, methods=["POST"]),
        Route("/time-tickers/{id}", get_time_ticker, methods=["GET"]),
        Route("/time-tickers/{id}", update_time_ticker, methods=["PUT"]),
        Route("/time-tickers/{id}", delete_time_ticker, methods=["DELETE"]),
        Route("/time-tickers/{id}/cancel", cancel, methods=["POST"]),
        Route("/time-tickers/{id}/retry", retry, methods=["POST"]),
        Route("/time-tickers/{id}/duplicate", duplicate_time_ticker, methods=["POST"]),
        Route("/cron-tickers", list_crons, methods=["GET"]),
        Route("/cron-tickers", add_cron, methods=["POST"]),
        Route("/cron-tickers/{id}", get_cron, methods=["GET"]),
        Route("/cron-tickers/{id}", update_cron, methods=["PUT"]),
        Route("/cron-tickers/{id}", delete_cron, methods=["DELETE"]),
        Route("/cron-tickers/{id}/enable", enable_cron, methods=["POST"]),
        Route("/cron-tickers/{id}/disable", disable_cron, methods=["POST"]),
        Route("/cron-tickers/{id}/run", run_cron, methods=["POST"]),
        Route("/cron-tickers/{id}/occurrences", cron_occurrences, methods=["GET"]),
        Route("/occurrences/cancel", bulk_cancel, methods=["POST"]),
        Route("/occurrences/retry", bulk_retry, methods=["POST"]),
        Route("/occurrences/{id}", get_occurrence, methods=["GET"]),
        Route("/occurrences/{id}/cancel", cancel, methods=["POST"]),
        Route("/occurrences/{id}/retry", retry, methods=["POST"]),
        Route("/cron/preview", cron_preview, methods=["GET"]),
    ]

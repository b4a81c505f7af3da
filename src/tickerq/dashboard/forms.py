"""The actions behind the pages' forms: POST handlers that change something and
send the browser on.

Each answers ``303 See Other`` (or ``HX-Location`` for htmx) to the page to show
next; a form with bad input is shown again with the message (and a 4xx status).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tickerq.dashboard.auth import Permission
from tickerq.dashboard.bulk import back_query, result_query, selected
from tickerq.dashboard.context import (
    DashboardError,
    dashboard_of,
    error_message,
    error_status,
    require,
)
from tickerq.dashboard.pages import show_cron_form, show_time_form
from tickerq.dashboard.rendering import display_zone, path_id
from tickerq.dashboard.schemas import (
    CronTickerIn,
    CronTickerUpdate,
    TimeTickerIn,
    TimeTickerUpdate,
)
from tickerq.enums import MisfirePolicy, TickerKind
from tickerq.errors import TickerQError

__all__ = [
    "add_cron",
    "add_time_ticker",
    "batch_delete",
    "bulk_occurrence_action",
    "bulk_time_action",
    "cluster_action",
    "cron_action",
    "edit_cron",
    "edit_time_ticker",
    "engine_action",
    "function_action",
    "go",
    "occurrence_action",
    "time_action",
]


def go(request: Request, path: str, **query: Any) -> Response:
    """Send the browser to ``path`` under the dashboard (303, or HX-Location for htmx)."""
    dash = dashboard_of(request)
    q = {k: v for k, v in query.items() if v not in (None, "")}
    target = dash.prefix(request.scope) + path + ("?" + urlencode(q) if q else "")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": target})
    return RedirectResponse(target, status_code=303)


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
    if "unique_key" in values:
        data["unique_key"] = values["unique_key"] or None
    if not editing:  # the form refuses a held key unless told otherwise
        data["on_conflict"] = values.get("on_conflict") or "error"
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
        return await show_time_form(
            request, ticker=None, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/time-tickers/{ticker.id}")


async def edit_time_ticker(request: Request) -> Response:
    """Form action: change a waiting time ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    ticker_id = path_id(request)
    current = await service.app.time_tickers.get(ticker_id)
    form = await request.form()
    values = {k: _text(form, k) for k in form}
    values["function"] = current.function
    try:
        _, data = _time_data(request, form, editing=True)
        await service.update_time_ticker(user, ticker_id, data)
    except (DashboardError, ValidationError, TickerQError, ValueError) as exc:
        return await show_time_form(
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
    ticker_id = path_id(request)
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
    """Form action: delete the checked time tickers (back to the list as it was)."""
    user = require(request, Permission.DELETE)
    service = dashboard_of(request).service
    form = await request.form()
    ids = selected(form)
    count = await service.delete_many(user, ids)
    return go(request, "/time-tickers", **back_query(form), deleted=count)


async def bulk_time_action(request: Request) -> Response:
    """Form action: cancel or retry the checked time tickers; back to the list as it
    was, with what happened to each."""
    return await _bulk(request, TickerKind.TIME, "/time-tickers", back_query)


async def bulk_occurrence_action(request: Request) -> Response:
    """Form action: cancel or retry the checked occurrences of a cron ticker; back to
    its page, with what happened to each."""
    require(request, Permission.OPERATE)
    form = await request.form()
    raw = _text(form, "cron")
    try:
        cron_id = UUID(raw)
    except ValueError:
        raise DashboardError(422, f"cron {raw!r} is not a cron ticker id") from None

    def page_only(form: FormData) -> dict[str, str]:
        return {k: v for k, v in back_query(form).items() if k == "page"}

    return await _bulk(request, TickerKind.CRON_OCCURRENCE, f"/cron-tickers/{cron_id}", page_only)


async def _bulk(
    request: Request,
    kind: TickerKind,
    path: str,
    back: Callable[[FormData], dict[str, str]],
) -> Response:
    user = require(request, Permission.OPERATE)
    service = dashboard_of(request).service
    action = str(request.scope.get("tickerq.route_path", "")).rsplit("/", 1)[-1]
    form = await request.form()
    ids = selected(form)
    if action == "cancel":
        result = await service.cancel_many(user, kind, ids)
    elif action == "retry":
        result = await service.retry_many(user, kind, ids)
    else:
        raise DashboardError(404, f"unknown action {action!r}")
    return go(request, path, **back(form), **result_query(result))


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
        return await show_cron_form(
            request, cron=None, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/cron-tickers/{cron.id}")


async def edit_cron(request: Request) -> Response:
    """Form action: change a cron ticker."""
    user = require(request, Permission.EDIT)
    service = dashboard_of(request).service
    cron_id = path_id(request)
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
        return await show_cron_form(
            request, cron=current, values=values, message=_message(exc), status=_status(exc)
        )
    return go(request, f"/cron-tickers/{cron_id}")


async def cron_action(request: Request) -> Response:
    """Form action: enable, disable, run now or delete a cron ticker."""
    service = dashboard_of(request).service
    action = request.path_params["action"]
    cron_id = path_id(request)
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
    occurrence_id = path_id(request)
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


def _back(request: Request, form: FormData) -> Response:
    """To the page the pause form was on: the overview or the functions page."""
    return go(request, "/" if _text(form, "next") == "overview" else "/functions")


async def function_action(request: Request) -> Response:
    """Form action: pause or resume a function on every node."""
    user = require(request, Permission.OPERATE)
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise DashboardError(404, f"unknown action {action!r}")
    form = await request.form()
    function = form.get("function")  # as given: a name may hold spaces
    if not isinstance(function, str) or not function:
        raise DashboardError(422, "function: which function to pause or resume is missing")
    pauses = dashboard_of(request).service.pauses
    if action == "pause":
        await pauses.pause(user, function)
    else:
        await pauses.resume(user, function)
    return _back(request, form)


async def cluster_action(request: Request) -> Response:
    """Form action: pause or resume all work on every node."""
    user = require(request, Permission.OPERATE)
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise DashboardError(404, f"unknown action {action!r}")
    pauses = dashboard_of(request).service.pauses
    if action == "pause":
        await pauses.pause_cluster(user)
    else:
        await pauses.resume_cluster(user)
    return _back(request, await request.form())

"""The OpenAPI 3.1 document of the dashboard's JSON API (schemas from the pydantic models)."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tickerq import __version__
from tickerq.dashboard import schemas as s
from tickerq.enums import Status

__all__ = ["openapi_document"]

_MODELS: list[type[BaseModel]] = [
    s.TimeTickerIn,
    s.TimeTickerUpdate,
    s.CronTickerIn,
    s.CronTickerUpdate,
    s.BatchDeleteIn,
    s.BulkIdsIn,
    s.BulkUpdateIn,
    s.BulkResultOut,
    s.TimeTickerOut,
    s.TimeTickerPage,
    s.TimeTickerDetailOut,
    s.CronTickerOut,
    s.OccurrenceOut,
    s.OccurrencePage,
    s.OccurrenceDetailOut,
    s.NodeOut,
    s.FunctionOut,
    s.EngineOut,
    s.PauseIn,
    s.PauseOut,
    s.PausesOut,
    s.ResumedOut,
    s.ThroughputOut,
    s.OverviewOut,
    s.CronPreviewOut,
    s.DeletedOut,
    s.HealthOut,
    s.ReadyOut,
    s.ErrorOut,
]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("ErrorOut"), "The body is not valid JSON"),
    "413": _json(_ref("ErrorOut"), "The body is too large"),
    "401": _json(_ref("ErrorOut"), "Authentication required"),
    "403": _json(_ref("ErrorOut"), "Not allowed (permission, loopback-only or cross-site)"),
    "404": _json(_ref("ErrorOut"), "No such ticker"),
    "409": _json(
        _ref("ErrorOut"),
        "Not possible in the ticker's current state, or its unique key is held by another",
    ),
    "422": _json(_ref("ErrorOut"), "Invalid input; the message names the bad value"),
}

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _int(name: str, lo: int, hi: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": lo, "maximum": hi},
    }


def _str(name: str, description: str, max_length: int = 200) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "maxLength": max_length},
    }


def _op(
    summary: str,
    response: dict[str, Any] | None,
    *,
    status: str = "200",
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    op_id: str,
    errors: tuple[str, ...] = ("401", "403", "422"),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "responses": {
            status: _json(response) if response is not None else {"description": "Done"},
            **{code: _ERRORS[code] for code in errors},
        },
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["responses"].update({code: _ERRORS[code] for code in ("400", "413")})
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


@lru_cache(maxsize=8)
def _paths() -> dict[str, Any]:
    page = [_int("limit", 1, 500, "Page size"), _int("offset", 0, 10_000_000, "Rows to skip")]
    by_id = ("401", "403", "404", "422")
    state = ("401", "403", "404", "409", "422")
    status_param = {
        "name": "status",
        "in": "query",
        "required": False,
        "description": "Only these statuses (repeat the parameter, or comma-separate)",
        "schema": {"type": "array", "items": {"type": "string", "enum": [x.value for x in Status]}},
        "style": "form",
        "explode": True,
    }
    return {
        "/overview": {"get": _op("Overview numbers", _ref("OverviewOut"), op_id="overview")},
        "/throughput": {
            "get": _op(
                "Ended rows per time bucket",
                _ref("ThroughputOut"),
                op_id="throughput",
                params=[
                    _int("hours", 1, 744, "How far back"),
                    _int("bucket", 0, 86400, "Bucket size in seconds (0: automatic)"),
                ],
            )
        },
        "/nodes": {"get": _op("Nodes", {"type": "array", "items": _ref("NodeOut")}, op_id="nodes")},
        "/functions": {
            "get": _op(
                "Functions", {"type": "array", "items": _ref("FunctionOut")}, op_id="functions"
            )
        },
        "/engine": {"get": _op("This process's engine", _ref("EngineOut"), op_id="engine")},
        "/pauses": {
            "get": _op(
                "Stored pauses (of functions, of the whole cluster), obeyed by every node",
                _ref("PausesOut"),
                op_id="pauses",
            )
        },
        "/functions/pause": {
            "post": _op(
                "Pause a function on every node (its running jobs go on)",
                _ref("PauseOut"),
                body="PauseIn",
                op_id="pauseFunction",
            )
        },
        "/functions/resume": {
            "post": _op(
                "Resume a function on every node",
                _ref("ResumedOut"),
                body="PauseIn",
                op_id="resumeFunction",
            )
        },
        "/cluster/pause": {
            "post": _op(
                "Pause all work on every node (running jobs go on)",
                _ref("PauseOut"),
                op_id="pauseCluster",
                errors=("401", "403"),
            )
        },
        "/cluster/resume": {
            "post": _op(
                "End the pause of the whole cluster",
                _ref("ResumedOut"),
                op_id="resumeCluster",
                errors=("401", "403"),
            )
        },
        "/engine/pause": {
            "post": _op(
                "Pause this process's engine (this node only, not stored)",
                _ref("EngineOut"),
                op_id="pauseEngine",
                errors=("401", "403", "409"),
            )
        },
        "/engine/resume": {
            "post": _op(
                "Resume this process's engine",
                _ref("EngineOut"),
                op_id="resumeEngine",
                errors=("401", "403", "409"),
            )
        },
        "/time-tickers": {
            "get": _op(
                "Time tickers, filtered and paged (latest execution time first)",
                _ref("TimeTickerPage"),
                op_id="listTimeTickers",
                params=[
                    status_param,
                    _str("function", "Only this function"),
                    _str("q", "Text in function, description or id"),
                    {
                        "name": "roots_only",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    },
                    *page,
                ],
            ),
            "post": _op(
                "Add a time ticker",
                _ref("TimeTickerOut"),
                status="201",
                body="TimeTickerIn",
                op_id="addTimeTicker",
                errors=("401", "403", "409", "422"),
            ),
        },
        "/time-tickers/delete": {
            "post": _op(
                "Delete several time tickers (with their chains)",
                _ref("DeletedOut"),
                body="BatchDeleteIn",
                op_id="deleteTimeTickers",
                errors=("401", "403", "409", "422"),
            )
        },
        "/time-tickers/cancel": {
            "post": _op(
                "Cancel several time tickers (waiting ones at once, running ones on their "
                "node); what happened to each id",
                _ref("BulkResultOut"),
                body="BulkIdsIn",
                op_id="cancelTimeTickers",
            )
        },
        "/time-tickers/retry": {
            "post": _op(
                "Run several ended time tickers again now; what happened to each id",
                _ref("BulkResultOut"),
                body="BulkIdsIn",
                op_id="retryTimeTickers",
            )
        },
        "/time-tickers/update": {
            "post": _op(
                "Change several waiting time tickers the same way; what happened to each id",
                _ref("BulkResultOut"),
                body="BulkUpdateIn",
                op_id="updateTimeTickers",
            )
        },
        "/time-tickers/{id}": {
            "get": _op(
                "A time ticker with its children and attempts",
                _ref("TimeTickerDetailOut"),
                params=[_ID],
                op_id="getTimeTicker",
                errors=by_id,
            ),
            "put": _op(
                "Change a waiting time ticker (only the fields given)",
                _ref("TimeTickerOut"),
                params=[_ID],
                body="TimeTickerUpdate",
                op_id="updateTimeTicker",
                errors=state,
            ),
            "delete": _op(
                "Delete a time ticker and its chain",
                None,
                status="204",
                params=[_ID],
                op_id="deleteTimeTicker",
                errors=state,
            ),
        },
        "/time-tickers/{id}/cancel": {
            "post": _op(
                "Cancel",
                _ref("TimeTickerOut"),
                params=[_ID],
                op_id="cancelTimeTicker",
                errors=state,
            )
        },
        "/time-tickers/{id}/retry": {
            "post": _op(
                "Run again now",
                _ref("TimeTickerOut"),
                params=[_ID],
                op_id="retryTimeTicker",
                errors=state,
            )
        },
        "/time-tickers/{id}/duplicate": {
            "post": _op(
                "Copy, due now",
                _ref("TimeTickerOut"),
                status="201",
                params=[_ID],
                op_id="duplicateTimeTicker",
                errors=state,
            )
        },
        "/cron-tickers": {
            "get": _op(
                "Cron tickers with their next fires",
                {"type": "array", "items": _ref("CronTickerOut")},
                op_id="listCronTickers",
                params=[_str("function", "Only this function"), _int("next", 0, 50, "Previews")],
            ),
            "post": _op(
                "Add a cron ticker",
                _ref("CronTickerOut"),
                status="201",
                body="CronTickerIn",
                op_id="addCronTicker",
            ),
        },
        "/cron-tickers/{id}": {
            "get": _op(
                "A cron ticker",
                _ref("CronTickerOut"),
                params=[_ID, _int("next", 0, 50, "Previews")],
                op_id="getCronTicker",
                errors=by_id,
            ),
            "put": _op(
                "Change a cron ticker (only the fields given)",
                _ref("CronTickerOut"),
                params=[_ID],
                body="CronTickerUpdate",
                op_id="updateCronTicker",
                errors=by_id,
            ),
            "delete": _op(
                "Delete a cron ticker",
                None,
                status="204",
                params=[_ID],
                op_id="deleteCronTicker",
                errors=by_id,
            ),
        },
        "/cron-tickers/{id}/enable": {
            "post": _op(
                "Enable", _ref("CronTickerOut"), params=[_ID], op_id="enableCron", errors=by_id
            )
        },
        "/cron-tickers/{id}/disable": {
            "post": _op(
                "Disable", _ref("CronTickerOut"), params=[_ID], op_id="disableCron", errors=by_id
            )
        },
        "/cron-tickers/{id}/run": {
            "post": _op(
                "Run now (an extra occurrence)",
                _ref("OccurrenceOut"),
                status="201",
                params=[_ID],
                op_id="runCron",
                errors=state,
            )
        },
        "/cron-tickers/{id}/occurrences": {
            "get": _op(
                "Occurrences, newest first",
                _ref("OccurrencePage"),
                params=[_ID, *page],
                op_id="cronOccurrences",
                errors=by_id,
            )
        },
        "/occurrences/cancel": {
            "post": _op(
                "Cancel several occurrences; what happened to each id",
                _ref("BulkResultOut"),
                body="BulkIdsIn",
                op_id="cancelOccurrences",
            )
        },
        "/occurrences/retry": {
            "post": _op(
                "Run several ended occurrences again now; what happened to each id",
                _ref("BulkResultOut"),
                body="BulkIdsIn",
                op_id="retryOccurrences",
            )
        },
        "/occurrences/{id}": {
            "get": _op(
                "An occurrence with its attempts",
                _ref("OccurrenceDetailOut"),
                params=[_ID],
                op_id="getOccurrence",
                errors=by_id,
            )
        },
        "/occurrences/{id}/cancel": {
            "post": _op(
                "Cancel an occurrence",
                _ref("OccurrenceOut"),
                params=[_ID],
                op_id="cancelOccurrence",
                errors=state,
            )
        },
        "/occurrences/{id}/retry": {
            "post": _op(
                "Run an occurrence again now",
                _ref("OccurrenceOut"),
                params=[_ID],
                op_id="retryOccurrence",
                errors=state,
            )
        },
        "/cron/preview": {
            "get": _op(
                "Check a cron expression and list its next fires",
                _ref("CronPreviewOut"),
                op_id="cronPreview",
                params=[
                    {
                        "name": "expression",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    _str("timezone", "IANA timezone (default: the app's)", 64),
                    _int("n", 1, 50, "How many fires"),
                ],
            )
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the event loop answers (no credentials needed)",
                "operationId": "healthz",
                "security": [{}],
                "responses": {"200": _json(_ref("HealthOut"))},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the store answers, the engine (if here) runs and "
                "heartbeats (no credentials needed)",
                "operationId": "readyz",
                "security": [{}],
                "responses": {
                    "200": _json(_ref("ReadyOut"), "Ready"),
                    "503": _json(_ref("ReadyOut"), "Not ready; the reason says why"),
                },
            }
        },
    }


@lru_cache(maxsize=8)
def _components() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            (m, "validation" if m.__name__.endswith(("In", "Update")) else "serialization")
            for m in _MODELS
        ],
        ref_template="#/components/schemas/{model}",
    )
    return dict(top.get("$defs", {}))


def openapi_document(
    server_url: str, title: str = "tickerq", functions: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The OpenAPI document, with ``server_url`` (the API's base path) as its server;
    ``functions`` (the known function names) become the enum of ``function`` fields."""
    schemas = copy.deepcopy(_components())
    if functions:
        for name in ("TimeTickerIn", "CronTickerIn", "PauseIn"):
            schemas[name]["properties"]["function"]["enum"] = list(functions)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{title} dashboard API",
            "version": __version__,
            "description": (
                "Observe and operate tickerq. Changes need POST/PUT/DELETE from the same "
                "origin (or a non-browser client) and the matching permission."
            ),
        },
        "servers": [{"url": server_url or "/"}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{}, {"basic": []}, {"bearer": []}],
    }

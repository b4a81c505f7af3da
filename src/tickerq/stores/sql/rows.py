"""Converting between SQL rows and tickerq's value objects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from tickerq.enums import MisfirePolicy, Priority, RunCondition, Status, TickerKind
from tickerq.models import (
    Attempt,
    CronOccurrence,
    CronTicker,
    Node,
    TimeTicker,
    run_state,
)
from tickerq.stores.base import Job

__all__ = [
    "DECODED",
    "JOB_COLUMN_NAMES",
    "Decode",
    "attempt_from_row",
    "cron_from_row",
    "cron_values",
    "job_from_row",
    "node_from_row",
    "node_values",
    "occurrence_from_row",
    "ticker_from_row",
    "ticker_values",
]


def _intervals(value: Any) -> tuple[float, ...] | None:
    return tuple(float(v) for v in value) if value is not None else None


def ticker_values(
    t: TimeTicker, awaiting_parent: bool, has_children: bool = False
) -> dict[str, Any]:
    """Column values of a new time ticker row."""
    return {
        "id": t.id,
        "kind": TickerKind.TIME.value,
        "function": t.function,
        "status": t.status.value,
        "priority": int(t.priority),
        "execution_time": t.execution_time,
        "request": t.request,
        "retries": t.retries,
        "retry_intervals": list(t.retry_intervals) if t.retry_intervals is not None else None,
        "retry_count": t.retry_count,
        "timeout": t.timeout,
        "description": t.description,
        "parent_id": t.parent_id,
        "run_condition": t.run_condition.value if t.run_condition else None,
        "awaiting_parent": awaiting_parent,
        "has_children": has_children,
        "cancel_requested": False,
        "headers": t.headers or None,
        "concurrency_key": t.concurrency_key,
        "unique_key": t.unique_key,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def ticker_from_row(r: Any) -> TimeTicker:
    """A TimeTicker from a ``tickerq_tickers`` row."""
    return TimeTicker(
        id=r.id,
        function=r.function,
        execution_time=r.execution_time,
        request=r.request,
        status=Status(r.status),
        priority=Priority(r.priority),
        retries=r.retries,
        retry_intervals=_intervals(r.retry_intervals),
        retry_count=r.retry_count,
        timeout=r.timeout,
        description=r.description,
        parent_id=r.parent_id,
        run_condition=RunCondition(r.run_condition) if r.run_condition else None,
        headers=r.headers or {},
        result=r.result,
        concurrency_key=r.concurrency_key,
        unique_key=r.unique_key,
        **run_state(r),
    )


def occurrence_from_row(r: Any) -> CronOccurrence:
    """A CronOccurrence from a ``tickerq_tickers`` row of kind CRON_OCCURRENCE."""
    return CronOccurrence(
        id=r.id,
        cron_ticker_id=r.cron_ticker_id,
        function=r.function,
        execution_time=r.fire_time,
        status=Status(r.status),
        retry_count=r.retry_count,
        result=r.result,
        **run_state(r),
    )


JOB_COLUMN_NAMES = (
    "id", "kind", "function", "priority", "request", "execution_time", "retries",
    "retry_intervals", "retry_count", "timeout", "cron_ticker_id", "parent_id", "claims",
    "stale_restarts", "has_children", "headers",
)  # fmt: skip
"""The columns of a claimed row the engine needs: every claim path returns these."""


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Decode:
    """How a driver hands over column values that SQLAlchemy's column types would
    have decoded: JSON, timestamps and UUIDs (identity where the driver did it)."""

    json: Callable[[Any], Any] = _same
    moment: Callable[[Any], datetime | None] = _same
    uuid: Callable[[Any], UUID | None] = _same


DECODED = Decode()
"""Values already decoded (SQLAlchemy rows)."""


def job_from_row(r: Mapping[str, Any], decode: Decode = DECODED) -> Job:
    """The engine's view of a claimed row, from its :data:`JOB_COLUMN_NAMES`: the one
    mapping of every claim path (SQLAlchemy, PostgreSQL's and SQLite's hot paths)."""
    return Job(
        kind=TickerKind(r["kind"]),
        id=cast(UUID, decode.uuid(r["id"])),
        function=r["function"],
        priority=Priority(r["priority"]),
        request=decode.json(r["request"]),
        execution_time=decode.moment(r["execution_time"]),
        retries=r["retries"],
        retry_intervals=_intervals(decode.json(r["retry_intervals"])),
        retry_count=r["retry_count"],
        timeout=r["timeout"],
        cron_ticker_id=decode.uuid(r["cron_ticker_id"]),
        parent_id=decode.uuid(r["parent_id"]),
        has_children=bool(r["has_children"]),
        claim=r["claims"],
        stale_restarts=r["stale_restarts"],
        headers=decode.json(r["headers"]),
    )


def cron_values(c: CronTicker) -> dict[str, Any]:
    """Column values of a cron ticker row."""
    return {
        "id": c.id,
        "function": c.function,
        "expression": c.expression,
        "timezone": c.timezone,
        "request": c.request,
        "retries": c.retries,
        "retry_intervals": list(c.retry_intervals) if c.retry_intervals is not None else None,
        "enabled": c.enabled,
        "misfire": c.misfire.value,
        "description": c.description,
        "seed_key": c.function if c.seeded else None,  # one seeded cron per function
        "next_fire_at": c.next_fire_at,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def cron_from_row(r: Any) -> CronTicker:
    """A CronTicker from a ``tickerq_cron_tickers`` row."""
    return CronTicker(
        id=r.id,
        function=r.function,
        expression=r.expression,
        timezone=r.timezone,
        request=r.request,
        retries=r.retries,
        retry_intervals=_intervals(r.retry_intervals),
        enabled=r.enabled,
        misfire=MisfirePolicy(r.misfire),
        description=r.description,
        seeded=r.seed_key is not None,
        next_fire_at=r.next_fire_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def attempt_from_row(r: Any) -> Attempt:
    """An Attempt from a ``tickerq_attempts`` row."""
    return Attempt(
        ticker_id=r.ticker_id,
        kind=TickerKind(r.kind),
        number=r.number,
        node=r.node,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status=Status(r.status),
        elapsed_ms=r.elapsed_ms,
        error_type=r.error_type,
        error_message=r.error_message,
        traceback=r.traceback,
        result=r.result,
    )


def node_values(n: Node) -> dict[str, Any]:
    """Column values of a node row."""
    return {
        "id": n.id,
        "started_at": n.started_at,
        "last_heartbeat": n.last_heartbeat,
        "version": n.version,
        "max_concurrency": n.max_concurrency,
        "active": n.active,
        "functions": list(n.functions),
    }


def node_from_row(r: Any) -> Node:
    """A Node from a ``tickerq_nodes`` row."""
    return Node(
        id=r.id,
        started_at=r.started_at,
        last_heartbeat=r.last_heartbeat,
        version=r.version,
        max_concurrency=r.max_concurrency,
        active=r.active,
        functions=tuple(r.functions or ()),
    )

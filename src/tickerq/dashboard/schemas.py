"""The JSON API's bodies and answers, as pydantic models (they also make the OpenAPI schemas)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from tickerq.enums import EnqueueOutcome, MisfirePolicy, Priority, RunCondition, Status, TickerKind
from tickerq.operations import MAX_BULK_IDS, BulkOutcome, BulkResult

__all__ = [
    "AttemptOut",
    "BatchDeleteIn",
    "BulkIdsIn",
    "BulkItemOut",
    "BulkResultOut",
    "BulkUpdateIn",
    "CronPreviewOut",
    "CronTickerIn",
    "CronTickerOut",
    "CronTickerUpdate",
    "DeletedOut",
    "EngineOut",
    "ErrorOut",
    "FunctionOut",
    "NodeOut",
    "OccurrenceDetailOut",
    "OccurrenceOut",
    "OccurrencePage",
    "OverviewOut",
    "PauseIn",
    "PauseOut",
    "PausesOut",
    "ResumedOut",
    "ThroughputOut",
    "TimeTickerDetailOut",
    "TimeTickerIn",
    "TimeTickerOut",
    "TimeTickerPage",
    "TimeTickerUpdate",
]

_MAX_RETRIES = 1000
Retries = Annotated[int, Field(ge=0, le=_MAX_RETRIES)]
Seconds = Annotated[float, Field(ge=0, le=10 * 365 * 24 * 3600)]
Timeout = Annotated[float, Field(gt=0, le=10 * 365 * 24 * 3600)]
Description = Annotated[str, Field(max_length=2000)]
FunctionName = Annotated[str, Field(min_length=1, max_length=200)]
UniqueKey = Annotated[str, Field(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("retry_intervals", check_fields=False)
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            for v in value:
                if not math.isfinite(v):
                    raise ValueError(f"retry interval {v!r} is not a finite number of seconds")
        return value


class TimeTickerIn(_In):
    """A time ticker to add."""

    function: FunctionName
    request: Any = None
    """The request payload (JSON); validated against the function's request type."""
    execution_time: AwareDatetime | None = None
    """When to run it, with a timezone offset; omitted or null: now."""
    description: Description = ""
    retries: Retries | None = None
    """Retries after a failure (default: the function's)."""
    retry_intervals: Annotated[list[Seconds], Field(max_length=100)] | None = None
    timeout: Timeout | None = None
    headers: Annotated[dict[str, str], Field(max_length=64)] | None = None
    """Text key/values stored with the ticker (the job sees them as ``ctx.headers``)."""
    unique_key: UniqueKey | None = None
    """While a ticker of this function with this key waits or runs, no second one is
    stored (see ``on_conflict``)."""
    on_conflict: Literal["keep", "replace", "error"] = "keep"
    """With ``unique_key``, when a ticker holds it: ``keep`` it (answered with it),
    ``replace`` its request, time and options (or run after it, when it runs),
    or refuse with 409."""


class TimeTickerUpdate(_In):
    """Changes to a waiting time ticker: only the fields given change."""

    execution_time: AwareDatetime | None = None
    request: Any = None
    description: Description | None = None
    retries: Retries | None = None
    retry_intervals: Annotated[list[Seconds], Field(max_length=100)] | None = None
    timeout: Timeout | None = None
    unique_key: UniqueKey | None = None
    """A new unique key (null: none); one another ticker of its function holds: 409."""


class CronTickerIn(_In):
    """A cron ticker to add."""

    function: FunctionName
    expression: Annotated[str, Field(min_length=1, max_length=200)]
    """5 fields, or 6 with seconds first; names, L, W and # allowed."""
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """IANA timezone (default: the app's)."""
    request: Any = None
    retries: Retries = 0
    retry_intervals: Annotated[list[Seconds], Field(max_length=100)] | None = None
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    description: Description = ""
    enabled: bool = True


class CronTickerUpdate(_In):
    """Changes to a cron ticker: only the fields given change."""

    expression: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    request: Any = None
    retries: Retries | None = None
    retry_intervals: Annotated[list[Seconds], Field(max_length=100)] | None = None
    misfire: MisfirePolicy | None = None
    description: Description | None = None


class BatchDeleteIn(_In):
    """Time tickers to delete (with their chain children)."""

    ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_BULK_IDS)]


class BulkIdsIn(_In):
    """The tickers a bulk cancel or retry acts on (time tickers or occurrences, as
    the path says); an id given twice counts once."""

    ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_BULK_IDS)]


class BulkUpdateIn(_In):
    """Waiting time tickers to change the same way: only the fields given change."""

    ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_BULK_IDS)]
    changes: TimeTickerUpdate


class BulkItemOut(BaseModel):
    """What a bulk operation did with one id."""

    id: UUID
    outcome: BulkOutcome
    """``done``; ``requested`` (a running ticker: its node was asked to cancel it);
    ``not_found``; ``not_allowed`` (its status does not allow it: see ``reason``)."""
    status: Status | None
    """Its status when the operation looked (null when not found)."""
    function: str | None
    reason: str | None
    """Why it was skipped, e.g. ``is DONE; it has already ended``."""
    held_by: UUID | None = None
    """Skipped because its unique key is held: the time ticker that holds it."""


class BulkResultOut(BaseModel):
    """What a bulk operation did, per id in the order given."""

    action: str
    """``cancel``, ``retry`` or ``update``."""
    done: int
    requested: int
    skipped: int
    items: list[BulkItemOut]

    @classmethod
    def of(cls, result: BulkResult) -> BulkResultOut:
        """The answer for ``result``."""
        return cls(
            action=result.action,
            done=len(result.done),
            requested=len(result.requested),
            skipped=len(result.skipped),
            items=[
                BulkItemOut(
                    id=i.id,
                    outcome=i.outcome,
                    status=i.status,
                    function=i.function,
                    reason=i.reason,
                    held_by=i.held_by,
                )
                for i in result
            ],
        )


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TimeTickerOut(_Out):
    """A time ticker as stored (request redacted if the dashboard redacts)."""

    id: UUID
    function: str
    execution_time: datetime | None
    request: Any = None
    status: Status
    priority: Priority
    retries: int
    retry_intervals: list[float] | None
    retry_count: int
    timeout: float | None
    description: str
    parent_id: UUID | None
    run_condition: RunCondition | None
    lock_holder: str | None
    locked_at: datetime | None
    lease_until: datetime | None
    executed_at: datetime | None
    finished_at: datetime | None
    elapsed_ms: float | None
    error_type: str | None
    error_message: str | None
    skipped_reason: str | None
    unique_key: str | None = None
    enqueued: EnqueueOutcome | None = Field(
        default=None,
        description="In the answer to an add: ADDED, or with a unique key KEPT (the "
        "ticker that holds it), REPLACED (that ticker, changed) or CHAINED (a new "
        "ticker that runs after the one that holds it). Null elsewhere.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Stored with the ticker (trace context, tenant...); values of names "
        "that look secret (authorization, token, password, cookie, key) are masked.",
    )
    result: Any = Field(default=None, description="What the last attempt returned (redacted).")
    created_at: datetime
    updated_at: datetime


class TimeTickerPage(BaseModel):
    """One page of time tickers."""

    items: list[TimeTickerOut]
    total: int = Field(
        description="How many match. On big tables (counting takes over 50 ms) counted "
        "at most a few seconds ago."
    )
    limit: int
    offset: int
    searched: int | None = Field(
        default=None,
        description="Set when the text (not an id) was searched only among this many "
        "latest tickers matching the other filters; narrow them to search further back.",
    )


class AttemptOut(_Out):
    """One attempt of a ticker."""

    ticker_id: UUID
    kind: TickerKind
    number: int
    node: str
    started_at: datetime
    finished_at: datetime | None
    status: Status
    elapsed_ms: float | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    result: Any = Field(default=None, description="What this attempt returned (redacted).")


class TimeTickerDetailOut(BaseModel):
    """A time ticker with its chain children and attempts."""

    ticker: TimeTickerOut
    children: list[TimeTickerOut]
    attempts: list[AttemptOut]


class CronTickerOut(_Out):
    """A cron ticker, with its expression in words and its next fires."""

    id: UUID
    function: str
    expression: str
    description_of_expression: str = ""
    timezone: str
    request: Any = None
    retries: int
    retry_intervals: list[float] | None
    enabled: bool
    misfire: MisfirePolicy
    description: str
    seeded: bool
    next_fire_at: datetime | None
    next_fires: list[datetime] = []
    created_at: datetime
    updated_at: datetime


class OccurrenceOut(_Out):
    """One fire of a cron ticker."""

    id: UUID
    cron_ticker_id: UUID
    function: str
    execution_time: datetime
    status: Status
    retry_count: int
    lock_holder: str | None
    executed_at: datetime | None
    finished_at: datetime | None
    elapsed_ms: float | None
    error_type: str | None
    error_message: str | None
    skipped_reason: str | None
    result: Any = Field(default=None, description="What the last attempt returned (redacted).")
    created_at: datetime
    updated_at: datetime


class OccurrencePage(BaseModel):
    """One page of a cron ticker's occurrences, newest first."""

    items: list[OccurrenceOut]
    limit: int
    offset: int


class OccurrenceDetailOut(BaseModel):
    """An occurrence with its attempts."""

    occurrence: OccurrenceOut
    attempts: list[AttemptOut]


class NodeOut(BaseModel):
    """A node (a running engine) and the rows it holds."""

    id: str
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_s: float
    stale: bool
    version: str
    max_concurrency: int
    active: int
    locks_held: int
    functions: list[str]


class PauseOut(BaseModel):
    """A stored pause of a function, or (``cluster``, function ``"*"``) of all work."""

    function: str
    cluster: bool
    paused_at: datetime
    paused_by: str | None


class PausesOut(BaseModel):
    """Every stored pause: the cluster's (or null) and the functions'."""

    cluster: PauseOut | None
    functions: list[PauseOut]


class PauseIn(_In):
    """The function to pause or resume."""

    function: FunctionName


class ResumedOut(BaseModel):
    """A resume: ``resumed`` is false when it was not paused."""

    function: str
    resumed: bool


class RateLimitOut(BaseModel):
    """A rate limit and how full its window is now."""

    name: str
    """``own``, ``app``, or the name of one of the app's ``limits``."""
    limit: str
    """As written: ``100/m``."""
    used: int
    """Starts within the current window, across every node."""
    full: bool


class FunctionOut(BaseModel):
    """A function this app has registered (or that a node reported)."""

    name: str
    registered: bool
    request_type: str | None
    priority: Priority | None
    max_concurrency: int | None
    retries: int | None
    timeout: float | None
    cron: str | None
    paused: PauseOut | None = None
    """Its own stored pause (the cluster's is in :class:`PausesOut`)."""
    paused_due: int = 0
    """Its jobs due now that wait because it or the whole cluster is paused."""
    rate_limits: list[RateLimitOut] = []
    """The rate limits its starts count against (its own or a named one, the app's)."""
    max_per_key: int | None = None
    """At most this many runs at once per concurrency key (None: no per-key limit)."""
    throttled_due: int = 0
    """Its jobs due now that wait because one of its rate limits is full."""


class EngineOut(BaseModel):
    """This process's engine."""

    node: str
    running: bool
    paused: bool


class ThroughputOut(BaseModel):
    """Rows that ended per time bucket (unix seconds), for a chart."""

    bucket_seconds: int
    t: list[int]
    succeeded: list[int]
    failed: list[int]
    other: list[int]


class DueOut(BaseModel):
    """A waiting row due soon."""

    kind: TickerKind
    id: UUID
    function: str
    execution_time: datetime


class OverviewOut(BaseModel):
    """The overview page's numbers."""

    now: datetime
    engine: EngineOut
    next_due: list[DueOut]
    status_counts: dict[str, dict[str, int]]
    success_rate_24h: float | None
    finished_24h: int
    active: int
    slots: int
    nodes: list[NodeOut]
    functions: list[FunctionOut]
    cluster_pause: PauseOut | None = None
    """The pause of the whole cluster, if one is stored."""


class CronPreviewOut(BaseModel):
    """A cron expression checked in a timezone, with its next fires."""

    expression: str
    timezone: str
    description: str
    next_fires: list[datetime]
    next_fires_local: list[str]


class DeletedOut(BaseModel):
    """How many rows a delete removed."""

    deleted: int


class HealthOut(BaseModel):
    """The event loop answered (liveness)."""

    status: str


class ReadyOut(BaseModel):
    """Whether this process can work (readiness): the store answers and, where the
    engine runs here, it runs and its heartbeat is recent. No credentials needed:
    it tells states and ages only."""

    status: str
    """``ready`` or ``not ready``."""
    reason: str | None = None
    """Why not ready (``store unreachable``, ``store timeout``, ``heartbeat stale``...)."""
    checks: dict[str, str | float]
    """``store``: ok, timeout, unreachable or closed; ``engine``: running, paused,
    not running or not here; ``heartbeat``: fresh, stale or none, with
    ``heartbeat_age_seconds``."""


class ErrorOut(BaseModel):
    """An error: what went wrong, naming the bad value."""

    error: str
    detail: list[dict[str, Any]] | None = None

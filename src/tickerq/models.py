"""Value objects returned to users: frozen snapshots of stored rows.

Stores keep their own row representation; these are what the managers hand
out (``app.time_tickers.get(id)`` and friends). Each has ``evolve()`` to get
a changed copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from tickerq.enums import EnqueueOutcome, MisfirePolicy, Priority, RunCondition, Status, TickerKind

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CLUSTER",
    "RUN_STATE_FIELDS",
    "Attempt",
    "CronOccurrence",
    "CronTicker",
    "Node",
    "Pause",
    "TimeTicker",
    "run_state",
]

RUN_STATE_FIELDS = (
    "lock_holder",
    "locked_at",
    "lease_until",
    "executed_at",
    "finished_at",
    "elapsed_ms",
    "error_type",
    "error_message",
    "skipped_reason",
    "stale_restarts",
    "created_at",
    "updated_at",
)
"""Fields that TimeTicker and CronOccurrence share: where their latest run stands."""


def run_state(row: Any) -> dict[str, Any]:
    """The :data:`RUN_STATE_FIELDS` read off a stored row (any object with those attributes)."""
    return {name: getattr(row, name) for name in RUN_STATE_FIELDS}


JSONValue = Any
"""A value that ``json.dumps`` accepts (dict, list, str, int, float, bool, None)."""


class _Evolve:
    def evolve(self, **changes: Any) -> Self:
        """A copy with the given fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeTicker(_Evolve):
    """One run of a function at a time (``execution_time``), with its state."""

    id: UUID
    function: str
    execution_time: datetime | None
    """When it is due (UTC); None for a chain child that runs right after its parent."""
    request: JSONValue = None
    """The request payload, as JSON-compatible data."""
    status: Status = Status.IDLE
    priority: Priority = Priority.NORMAL
    retries: int = 0
    retry_intervals: tuple[float, ...] | None = None
    retry_count: int = 0
    timeout: float | None = None
    description: str = ""
    parent_id: UUID | None = None
    run_condition: RunCondition | None = None
    lock_holder: str | None = None
    locked_at: datetime | None = None
    lease_until: datetime | None = None
    executed_at: datetime | None = None
    """When the last attempt started."""
    finished_at: datetime | None = None
    elapsed_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    skipped_reason: str | None = None
    stale_restarts: int = 0
    """Runs lost so far (their node stopped heartbeating while they ran)."""
    headers: dict[str, str] = field(default_factory=dict, hash=False)
    """Text key/values stored with the ticker (trace context, tenant, correlation id),
    set by the caller or by middleware; the job sees them as ``ctx.headers``."""
    result: JSONValue = field(default=None, hash=False)
    """What the last attempt returned (JSON); None while none has succeeded."""
    concurrency_key: str | None = None
    """The key its function's per-key concurrency limit counts it under (computed
    from the request at enqueue by the function's ``concurrency_key``)."""
    unique_key: str | None = None
    """While this ticker waits or runs, no other ticker of its function with this key
    does (see ``enqueue(..., unique_key=...)``); None: it has none."""
    created_at: datetime
    updated_at: datetime
    enqueued: EnqueueOutcome | None = field(default=None, compare=False)
    """What the enqueue that returned this ticker did (ADDED; with a unique key also
    KEPT, REPLACED or CHAINED). None on tickers read back from the store. Not
    stored, and not compared."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CronTicker(_Evolve):
    """A recurring schedule of a function."""

    id: UUID
    function: str
    expression: str
    timezone: str
    request: JSONValue = None
    retries: int = 0
    retry_intervals: tuple[float, ...] | None = None
    enabled: bool = True
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    description: str = ""
    seeded: bool = False
    """True when it was created from a ``@app.function(cron=...)`` decorator."""
    next_fire_at: datetime | None = None
    """The next fire not yet turned into an occurrence (UTC)."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CronOccurrence(_Evolve):
    """One fire of a cron ticker: unique by (cron_ticker_id, execution_time)."""

    id: UUID
    cron_ticker_id: UUID
    function: str
    execution_time: datetime
    status: Status = Status.IDLE
    retry_count: int = 0
    lock_holder: str | None = None
    locked_at: datetime | None = None
    lease_until: datetime | None = None
    executed_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    skipped_reason: str | None = None
    stale_restarts: int = 0
    """Runs lost so far (their node stopped heartbeating while they ran)."""
    result: JSONValue = field(default=None, hash=False)
    """What the last attempt returned (JSON); None while none has succeeded."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt(_Evolve):
    """One execution attempt of a time ticker or cron occurrence."""

    ticker_id: UUID
    kind: TickerKind
    number: int
    """0 for the first run, 1 for the first retry, ..."""
    node: str
    started_at: datetime
    finished_at: datetime | None = None
    status: Status = Status.IN_PROGRESS
    elapsed_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    result: JSONValue = field(default=None, hash=False)
    """What this attempt returned (JSON), when it succeeded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Node(_Evolve):
    """A running engine."""

    id: str
    started_at: datetime
    last_heartbeat: datetime
    version: str
    max_concurrency: int
    active: int = 0
    functions: Sequence[str] = field(default_factory=tuple)


CLUSTER = "*"
"""The function name a pause of the whole cluster is stored under."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause(_Evolve):
    """A stored pause: no node starts a job of ``function`` (of any function, for
    :data:`CLUSTER`) until it is resumed. Jobs already running go on."""

    function: str
    """The paused function's name, or :data:`CLUSTER` (``"*"``) for the whole cluster."""
    paused_at: datetime
    paused_by: str | None = None
    """Who paused it (a dashboard user, or the node id of the process that did)."""

    @property
    def cluster(self) -> bool:
        """True for the pause of the whole cluster."""
        return self.function == CLUSTER

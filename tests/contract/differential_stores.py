"""The apps of the differential test (test_differential.py) and what it compares.

One :class:`Side` per store: an app with its own ManualClock, the same job
functions (which record what they get), and the ids the store gave to each
logical ticker. :meth:`Side.observe` reads back everything a user can see and
turns it into plain, comparable data: a JSON value typed exactly (``1``, ``1.0``,
``True``, ``-0.0`` and ``"1"`` all differ), a datetime as its UTC instant plus the
offset it was returned with, ids replaced by logical keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from contract.conftest import (
    QUIET,
    _assert_no_connections,
    _create_database,
    _drop_database,
    _files_open_under,
    _server_dsn,
)
from contract.differential_inputs import KNOWN_BUGS
from tickerq import (
    Attempt,
    CronOccurrence,
    CronTicker,
    Priority,
    RetryPolicy,
    Status,
    TerminateExecution,
    TickerContext,
    TickerKind,
    TickerQ,
    TickerQError,
    TimeTicker,
)
from tickerq.testing import ManualClock

OPTIONS = dataclasses.replace(
    QUIET,
    poll_interval=30 * 86400.0,
    heartbeat_interval=30 * 86400.0,
    lease=60 * 86400.0,
    retention=None,
    retry=RetryPolicy(jitter=0.0),
)
"""Engines that wake only for due work (no polls or heartbeats within an example, so a
store that misses due work shows), leases that never run out (jobs end at once), no
purge, and backoff without random jitter (which would differ between the apps)."""

JSON_FUNCTIONS = ("ok", "flaky", "sync_flaky", "verdict", "long")
"""Registered functions that take any JSON request; ``measure`` takes a float."""

CALL_TIMEOUT = 10.0
"""Seconds one call (or reaching idle) may take on one store."""

# -- typed views ----------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """``value`` as data that keeps JSON types apart: 1, 1.0, True, -0.0, "1" all differ."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(typed(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((typed(k), typed(v)) for k, v in value.items()))
    return (type(value).__name__, repr(value))


def instant(value: datetime | None) -> Any:
    """A datetime as (UTC instant, offset it was returned with): tickerq returns UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        return ("not an aware datetime", repr(value))
    return (value.astimezone(UTC).isoformat(), str(value.utcoffset()))


def time_ticker_view(t: TimeTicker, key_of: dict[UUID, int]) -> dict[str, Any]:
    """Everything a user can read off a time ticker, its parent's id as a key."""
    finished_at = instant(t.finished_at)
    if t.status is Status.IDLE and "memory-stale-finished-at" in KNOWN_BUGS:
        finished_at = "not compared while IDLE (guard memory-stale-finished-at)"
    return {
        "function": t.function,
        "status": t.status.name,
        "retry_count": t.retry_count,
        "retries": t.retries,
        "retry_intervals": typed(t.retry_intervals),
        "timeout": typed(t.timeout),
        "description": t.description,
        "request": typed(t.request),
        "execution_time": instant(t.execution_time),
        "priority": t.priority.name,
        "parent": None if t.parent_id is None else key_of.get(t.parent_id, "?"),
        "run_condition": t.run_condition,
        "lock_holder": t.lock_holder,
        "locked_at": instant(t.locked_at),
        "lease_until": instant(t.lease_until),
        "executed_at": instant(t.executed_at),
        "finished_at": finished_at,
        "elapsed_ms": typed(t.elapsed_ms),
        "error_type": t.error_type,
        "error_message": t.error_message,
        "skipped_reason": t.skipped_reason,
        "created_at": instant(t.created_at),
        "updated_at": instant(t.updated_at),
    }


def cron_view(c: CronTicker) -> dict[str, Any]:
    """Everything a user can read off a cron ticker (its id aside)."""
    return {
        "function": c.function,
        "expression": c.expression,
        "timezone": c.timezone,
        "request": typed(c.request),
        "retries": c.retries,
        "retry_intervals": typed(c.retry_intervals),
        "enabled": c.enabled,
        "misfire": c.misfire.name,
        "description": c.description,
        "seeded": c.seeded,
        "next_fire_at": instant(c.next_fire_at),
        "created_at": instant(c.created_at),
        "updated_at": instant(c.updated_at),
    }


def occurrence_view(o: CronOccurrence) -> dict[str, Any]:
    """Everything a user can read off a cron occurrence (its ids aside)."""
    return {
        "function": o.function,
        "execution_time": instant(o.execution_time),
        "status": o.status.name,
        "retry_count": o.retry_count,
        "lock_holder": o.lock_holder,
        "locked_at": instant(o.locked_at),
        "lease_until": instant(o.lease_until),
        "executed_at": instant(o.executed_at),
        "finished_at": instant(o.finished_at),
        "elapsed_ms": typed(o.elapsed_ms),
        "error_type": o.error_type,
        "error_message": o.error_message,
        "skipped_reason": o.skipped_reason,
        "created_at": instant(o.created_at),
        "updated_at": instant(o.updated_at),
    }


def attempt_view(a: Attempt) -> tuple[Any, ...]:
    """An attempt (its ticker's id aside)."""
    return (
        a.kind.name,
        a.number,
        a.status.name,
        a.node,
        instant(a.started_at),
        instant(a.finished_at),
        typed(a.elapsed_ms),
        a.error_type,
        a.error_message,
        a.traceback,
    )


# -- the job functions ------------------------------------------------------------------


class JobFailed(Exception):
    """Raised by the failing jobs."""


def failures(request: Any) -> int:
    """How often the failing jobs fail for ``request`` before they succeed: 0 to 3."""
    return len(json.dumps(request, sort_keys=True)) % 4


def register(app: TickerQ, side: Side) -> None:
    """The same job functions on every app; each records what it got."""

    @app.function("ok")
    async def ok(ctx: TickerContext[Any]) -> None:
        side.record(ctx)

    @app.function("flaky")
    async def flaky(ctx: TickerContext[Any]) -> None:
        side.record(ctx)
        if ctx.retry_count < failures(ctx.request):
            raise JobFailed(f"attempt {ctx.retry_count} of {failures(ctx.request)} fails")

    @app.function("sync_flaky", priority=Priority.HIGH, retries=1, retry_intervals=[45])
    def sync_flaky(ctx: TickerContext[Any]) -> None:  # runs in a thread
        side.record(ctx)
        if ctx.retry_count < failures(ctx.request):
            raise JobFailed(f"sync attempt {ctx.retry_count} fails")

    @app.function("verdict", priority=Priority.LOW)
    async def verdict(ctx: TickerContext[Any]) -> None:
        side.record(ctx)
        status = (Status.DONE, Status.SKIPPED, Status.CANCELLED, Status.FAILED)[
            failures(ctx.request)
        ]
        if status is not Status.DONE:
            raise TerminateExecution(status, f"verdict {status.name}")

    @app.function("long", priority=Priority.LONG_RUNNING, max_concurrency=1)
    async def long(ctx: TickerContext[Any]) -> None:  # own thread, own event loop
        side.record(ctx)

    @app.function("measure", retries=2)
    async def measure(ctx: TickerContext[float]) -> None:
        side.record(ctx)
        if ctx.request < 0:
            raise JobFailed(f"negative: {ctx.request!r}")

    @app.function("sweep", cron="0 */4 * * *", cron_timezone="America/New_York")
    async def sweep(ctx: TickerContext[Any]) -> None:
        side.record(ctx)


def _ignore(ctx: TickerContext[Any], error: BaseException) -> None:
    """Exception handler: failed jobs are expected here (and must not log errors)."""


# -- one store --------------------------------------------------------------------------


@dataclass(eq=False)
class Side:
    """One app on one store, with the ids it gave to each logical ticker."""

    kind: str
    app: TickerQ
    clock: ManualClock
    time_ids: dict[int, UUID] = field(default_factory=dict)
    cron_ids: dict[int, UUID] = field(default_factory=dict)
    received: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _attempts: dict[UUID, tuple[Any, Any]] = field(default_factory=dict)
    _gone: dict[UUID, str] = field(default_factory=dict)

    def time_keys(self) -> dict[UUID, int]:
        """Logical key of each time ticker id."""
        return {v: k for k, v in self.time_ids.items()}

    def cron_keys(self) -> dict[UUID, int]:
        """Logical key of each cron ticker id."""
        return {v: k for k, v in self.cron_ids.items()}

    def record(self, ctx: TickerContext[Any]) -> None:
        """What a job got (ids become keys when compared)."""
        self.received.append(
            (
                ctx.kind.name,
                ctx.id,
                ctx.cron_ticker_id,
                instant(ctx.scheduled_for),
                ctx.function,
                ctx.retry_count,
                ctx.is_due,
                typed(ctx.request),
            )
        )

    async def ticker_view(self, key: int) -> Any:
        """The view of one time ticker, or "gone"."""
        listed = await self.app.time_tickers.query(limit=100_000)
        found = [t for t in listed if t.id == self.time_ids[key]]
        return time_ticker_view(found[0], self.time_keys()) if found else "gone"

    async def observe(self) -> dict[str, Any]:
        """Everything a user can see, once the engine is idle."""
        app = self.app
        await asyncio.wait_for(app.engine.wait_idle(), CALL_TIMEOUT)
        keys = self.time_keys()
        obs: dict[str, Any] = {}
        listed = {t.id: t for t in await app.time_tickers.query(limit=100_000)}
        obs["time tickers: count"] = await app.time_tickers.count()
        obs["time tickers: unknown rows"] = len(set(listed) - set(keys))
        for key, tid in self.time_ids.items():
            ticker = listed.get(tid)
            obs[f"t{key}"] = "gone" if ticker is None else time_ticker_view(ticker, keys)
            if ticker is not None:
                obs[f"t{key} attempts"] = await self._attempts_of(TickerKind.TIME, ticker)
        all_crons = {c.id: c for c in await app.cron_tickers.query()}
        obs["cron tickers: unknown rows"] = len(set(all_crons) - set(self.cron_ids.values()))
        fired: dict[UUID, str] = {}
        for key, cid in self.cron_ids.items():
            cron = all_crons.get(cid)
            obs[f"c{key}"] = "gone" if cron is None else cron_view(cron)
            if cid in self._gone:  # a deleted cron ticker does not come back
                obs[f"c{key} occurrences"] = self._gone[cid]
                continue
            try:
                occurrences = await app.cron_tickers.occurrences(cid, limit=100_000)
            except TickerQError as exc:
                self._gone[cid] = obs[f"c{key} occurrences"] = f"raised {type(exc).__name__}"
                continue
            for occ in occurrences:
                name = f"c{key} @ {instant(occ.execution_time)[0]}"
                fired[occ.id] = name
                obs[name] = occurrence_view(occ)
                obs[f"{name} attempts"] = await self._attempts_of(TickerKind.CRON_OCCURRENCE, occ)
        got = Counter(self._received_key(r, keys, fired) for r in self.received)
        obs["jobs received"] = sorted(got.items(), key=repr)
        obs["errors logged"] = list(self.errors)
        return obs

    async def _attempts_of(self, kind: TickerKind, row: TimeTicker | CronOccurrence) -> Any:
        """The attempts of a row; read again only when the row changed."""
        stamp = (row.status, row.retry_count, row.updated_at)
        cached = self._attempts.get(row.id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if kind is TickerKind.TIME:
            attempts = await self.app.time_tickers.attempts(row.id)
        else:
            attempts = await self.app.cron_tickers.attempts(row.id)
        view = [attempt_view(a) for a in attempts]
        self._attempts[row.id] = (stamp, view)
        return view

    def _received_key(
        self, record: tuple[Any, ...], keys: dict[UUID, int], fired: dict[UUID, str]
    ) -> tuple[Any, ...]:
        kind, ticker_id, cron_id, scheduled, *rest = record
        if kind == TickerKind.TIME.name:
            who = f"t{keys.get(ticker_id, '?')}"
        else:
            who = fired.get(ticker_id, f"c{self.cron_keys().get(cron_id, '?')} @ ?")
        return (who, scheduled, *rest)


class ErrorLog(logging.Handler):
    """Collects ERROR records (of tickerq, and asyncio's "Task exception was never
    retrieved") for the side being driven."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.side: Side | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.side is not None:
            self.side.errors.append(f"{record.name}: {record.getMessage()}")


# -- the stores of one example ----------------------------------------------------------


@dataclass
class Stores:
    """Fresh stores for one example: memory, SQLite (a file) and PostgreSQL (a database
    copied from the contract suite's template), when ``admin`` is given."""

    tmp: Path
    admin: Any
    template: str | None
    sides: list[Side] = field(default_factory=list)
    sqlite_path: Path | None = None
    database: str | None = None

    async def open(self, start: datetime) -> list[Side]:
        """Start one app per store, every clock at ``start``."""
        name = uuid.uuid4().hex[:12]
        self.sqlite_path = self.tmp / f"diff-{name}.db"
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{self.sqlite_path}"}
        if self.template is not None:
            self.database = f"tickerq_diff_{name}"
            await _create_database(self.admin, self.database, self.template)
            urls["postgresql"] = _server_dsn(self.database)
        for kind, url in urls.items():
            clock = ManualClock(start)
            app = TickerQ(
                url,
                clock=clock,
                node_id="node-a",
                max_concurrency=3,
                options=OPTIONS,
                exception_handler=_ignore,
            )
            side = Side(kind, app, clock)
            register(app, side)
            self.sides.append(side)
            await app.start()
        return self.sides

    async def close(self) -> None:
        """Stop the apps, check that no connection is left, drop the stores."""
        for side in self.sides:
            await asyncio.wait_for(side.app.stop(), CALL_TIMEOUT)
        self.sides.clear()  # an example's rows must not outlive it
        if self.sqlite_path is not None:
            left = _files_open_under(str(self.sqlite_path))
            assert left == [], f"SQLite connections leaked: {left}"
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240
        if self.database is not None:
            try:
                await _assert_no_connections(self.admin, self.database)
            finally:
                await _drop_database(self.admin, self.database)

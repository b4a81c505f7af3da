"""``app.time_tickers`` and ``app.cron_tickers``: add, change and inspect tickers.

Every input is checked before anything is stored; a bad value raises an error
that names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from tickerq.enums import MisfirePolicy, RunCondition, Status, TickerKind
from tickerq.errors import InvalidArgumentError, TickerNotFoundError, TickerStateError
from tickerq.firing import first_fire_after, parse_cached
from tickerq.models import CronOccurrence, CronTicker, TimeTicker
from tickerq.stores.base import TickerQuery
from tickerq.validation import check_enum, check_retries, check_time, check_timeout

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.models import Attempt

__all__ = ["CronTickerManager", "TimeTickerManager", "TimeTickerSpec"]

_UNSET: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeTickerSpec:
    """A time ticker to add with :meth:`TimeTickerManager.add_many`, with its chain.

    ``children`` run after this ticker ends, each when its ``run_condition``
    matches (default: any completed status); a child with its own
    ``execution_time`` also waits for that time.
    """

    function: str
    request: Any = None
    execution_time: datetime | None = None
    description: str = ""
    retries: int | None = None
    retry_intervals: Sequence[float] | None = None
    timeout: float | None = None
    run_condition: RunCondition | None = None
    children: Sequence[TimeTickerSpec] = field(default_factory=tuple)


class TimeTickerManager:
    """Adds, changes and inspects time tickers: ``app.time_tickers``."""

    def __init__(self, app: TickerQ) -> None:
        self._app = app

    def _build(
        self,
        spec: TimeTickerSpec,
        now: datetime,
        parent_id: UUID | None,
        after: timedelta | float | None = None,
    ) -> TimeTicker:
        fn = self._app.get_function(spec.function)
        payload = self._app.encode_request(fn.name, spec.request)
        when = check_time(spec.execution_time, "execution_time")
        if after is not None:
            if when is not None:
                raise InvalidArgumentError(
                    f"pass either at/execution_time ({when.isoformat()}) or after ({after!r}), "
                    "not both"
                )
            seconds = after.total_seconds() if isinstance(after, timedelta) else after
            if not isinstance(seconds, int | float) or not math.isfinite(seconds):
                raise InvalidArgumentError(f"after must be a timedelta or seconds, got {after!r}")
            when = now + timedelta(seconds=seconds)
        if when is None and parent_id is None:
            when = now
        retries = fn.options.retries if spec.retries is None else spec.retries
        intervals = spec.retry_intervals
        if intervals is None:
            intervals = fn.options.retry_intervals
        return TimeTicker(
            id=uuid4(),
            function=fn.name,
            execution_time=when,
            request=payload,
            priority=fn.options.priority,
            retries=retries,
            retry_intervals=check_retries(retries, intervals),
            timeout=check_timeout(spec.timeout),
            description=spec.description,
            parent_id=parent_id,
            run_condition=check_enum(RunCondition, spec.run_condition, "run condition")
            if spec.run_condition is not None
            else None,
            created_at=now,
            updated_at=now,
        )

    async def add(
        self,
        function: str,
        *,
        request: Any = None,
        execution_time: datetime | None = None,
        after: timedelta | float | None = None,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        parent_id: UUID | None = None,
        run_condition: RunCondition | None = None,
    ) -> TimeTicker:
        """Add one time ticker (due now when no time is given) and return it."""
        now = self._app.clock.now()
        spec = TimeTickerSpec(
            function=function,
            request=request,
            execution_time=execution_time,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            run_condition=run_condition,
        )
        ticker = self._build(spec, now, parent_id, after)
        await self._app.store.add_time_tickers((ticker,))
        self._app.wake_engine(ticker.execution_time)
        return ticker

    async def add_many(self, specs: Sequence[TimeTickerSpec]) -> list[TimeTicker]:
        """Add many tickers (with their chains) atomically; returns them parents first."""
        now = self._app.clock.now()
        out: list[TimeTicker] = []

        def walk(spec: TimeTickerSpec, parent: UUID | None) -> None:
            ticker = self._build(spec, now, parent)
            out.append(ticker)
            for child in spec.children:
                walk(child, ticker.id)

        for spec in specs:
            walk(spec, None)
        await self._app.store.add_time_tickers(out)
        self._app.wake_engine(
            min((t.execution_time for t in out if t.execution_time), default=None)
        )
        return out

    async def get(self, ticker_id: UUID) -> TimeTicker:
        """One time ticker; raises TickerNotFoundError."""
        ticker = await self._app.store.get_time_ticker(_uuid(ticker_id))
        if ticker is None:
            raise TickerNotFoundError("time ticker", ticker_id)
        return ticker

    async def update(
        self,
        ticker_id: UUID,
        *,
        execution_time: datetime = _UNSET,
        request: Any = _UNSET,
        description: str = _UNSET,
        retries: int = _UNSET,
        retry_intervals: Sequence[float] | None = _UNSET,
        timeout: float | None = _UNSET,
    ) -> TimeTicker:
        """Change a waiting (IDLE) ticker. Only the given fields change."""
        current = await self.get(ticker_id)
        changes: dict[str, Any] = {"updated_at": self._app.clock.now()}
        if execution_time is not _UNSET:
            when = check_time(execution_time, "execution_time")
            changes["execution_time"] = when or changes["updated_at"]  # None: now
        if request is not _UNSET:
            changes["request"] = self._app.encode_request(current.function, request)
        if description is not _UNSET:
            changes["description"] = str(description)
        if retries is not _UNSET or retry_intervals is not _UNSET:
            r = current.retries if retries is _UNSET else retries
            ri = current.retry_intervals if retry_intervals is _UNSET else retry_intervals
            changes["retries"] = r
            changes["retry_intervals"] = check_retries(r, ri)
        if timeout is not _UNSET:
            changes["timeout"] = check_timeout(timeout)
        ticker = await self._app.store.update_time_ticker(
            current.id, changes, frozenset({Status.IDLE})
        )
        self._app.wake_engine(ticker.execution_time)
        return ticker

    async def delete(self, ticker_id: UUID) -> None:
        """Delete a ticker and its chain children; raises if unknown or running."""
        if await self._app.store.delete_time_tickers([_uuid(ticker_id)]) == 0:
            raise TickerNotFoundError("time ticker", ticker_id)

    async def delete_many(self, ids: Sequence[UUID]) -> int:
        """Delete several tickers; returns how many rows went (unknown ids are ignored)."""
        return await self._app.store.delete_time_tickers([_uuid(i) for i in ids])

    async def cancel(self, ticker_id: UUID) -> TimeTicker:
        """Cancel a waiting ticker, or ask the node running it to cancel it."""
        await _cancel(self._app, TickerKind.TIME, _uuid(ticker_id))
        return await self.get(ticker_id)

    async def retry(self, ticker_id: UUID) -> TimeTicker:
        """Run an ended (or waiting) ticker again now."""
        now = self._app.clock.now()
        await self._app.store.retry_now(TickerKind.TIME, _uuid(ticker_id), now)
        self._app.wake_engine(now)
        return await self.get(ticker_id)

    async def query(
        self,
        *,
        status: Status | str | Sequence[Status | str] | None = None,
        function: str | None = None,
        text: str | None = None,
        parent_id: UUID | None = None,
        roots_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TimeTicker]:
        """Tickers matching the filters, latest execution time first."""
        return await self._app.store.query_time_tickers(
            _query(
                status=status,
                function=function,
                text=text,
                parent_id=parent_id,
                roots_only=roots_only,
                limit=limit,
                offset=offset,
            )
        )

    async def count(
        self,
        *,
        status: Status | str | Sequence[Status | str] | None = None,
        function: str | None = None,
        text: str | None = None,
    ) -> int:
        """How many tickers match the filters."""
        return await self._app.store.count_time_tickers(
            _query(
                status=status,
                function=function,
                text=text,
                parent_id=None,
                roots_only=False,
                limit=1,
                offset=0,
            )
        )

    async def attempts(self, ticker_id: UUID) -> list[Attempt]:
        """Every attempt of a ticker, oldest first."""
        return await self._app.store.attempts(TickerKind.TIME, _uuid(ticker_id))


class CronTickerManager:
    """Adds, changes and inspects cron tickers: ``app.cron_tickers``."""

    def __init__(self, app: TickerQ) -> None:
        self._app = app

    async def add(
        self,
        function: str,
        expression: str,
        *,
        timezone: str | None = None,
        request: Any = None,
        retries: int = 0,
        retry_intervals: Sequence[float] | None = None,
        misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        description: str = "",
        enabled: bool = True,
    ) -> CronTicker:
        """Add a cron ticker; the expression is checked in its timezone first."""
        cron = self.build(
            function,
            expression,
            timezone=timezone,
            request=request,
            retries=retries,
            retry_intervals=retry_intervals,
            misfire=misfire,
            description=description,
            enabled=enabled,
        )
        cron = await self._app.store.add_cron_ticker(cron)
        self._app.wake_engine(cron.next_fire_at)
        return cron

    def build(
        self,
        function: str,
        expression: str,
        *,
        timezone: str | None = None,
        request: Any = None,
        retries: int = 0,
        retry_intervals: Sequence[float] | None = None,
        misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        description: str = "",
        enabled: bool = True,
        seeded: bool = False,
    ) -> CronTicker:
        """A checked cron ticker, not stored yet."""
        fn = self._app.get_function(function)
        tz = timezone or self._app.timezone
        expr = parse_cached(" ".join(str(expression).split()), str(tz))
        now = self._app.clock.now()
        return CronTicker(
            id=uuid4(),
            function=fn.name,
            expression=expr.expression,
            timezone=str(tz),
            request=self._app.encode_request(fn.name, request),
            retries=retries,
            retry_intervals=check_retries(retries, retry_intervals),
            enabled=enabled,
            misfire=check_enum(MisfirePolicy, misfire, "misfire policy"),
            description=description,
            seeded=seeded,
            next_fire_at=expr.next_after(now),
            created_at=now,
            updated_at=now,
        )

    async def get(self, cron_id: UUID) -> CronTicker:
        """One cron ticker; raises TickerNotFoundError."""
        cron = await self._app.store.get_cron_ticker(_uuid(cron_id))
        if cron is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        return cron

    async def update(
        self,
        cron_id: UUID,
        *,
        expression: str = _UNSET,
        timezone: str = _UNSET,
        request: Any = _UNSET,
        retries: int = _UNSET,
        retry_intervals: Sequence[float] | None = _UNSET,
        misfire: MisfirePolicy = _UNSET,
        description: str = _UNSET,
    ) -> CronTicker:
        """Change a cron ticker; a new expression or timezone reschedules its next fire."""
        current = await self.get(cron_id)
        now = self._app.clock.now()
        changes: dict[str, Any] = {"updated_at": now}
        if expression is not _UNSET or timezone is not _UNSET:
            expr_text = current.expression if expression is _UNSET else expression
            tz = current.timezone if timezone is _UNSET else timezone
            expr = parse_cached(" ".join(str(expr_text).split()), str(tz))
            changes.update(expression=expr.expression, timezone=str(tz))
            changes["next_fire_at"] = expr.next_after(now)
        if request is not _UNSET:
            changes["request"] = self._app.encode_request(current.function, request)
        if retries is not _UNSET or retry_intervals is not _UNSET:
            r = current.retries if retries is _UNSET else retries
            ri = current.retry_intervals if retry_intervals is _UNSET else retry_intervals
            changes["retries"] = r
            changes["retry_intervals"] = check_retries(r, ri)
        if misfire is not _UNSET:
            changes["misfire"] = check_enum(MisfirePolicy, misfire, "misfire policy")
        if description is not _UNSET:
            changes["description"] = str(description)
        cron = await self._app.store.update_cron_ticker(current.id, changes)
        self._app.wake_engine(cron.next_fire_at)
        return cron

    async def delete(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that have not started."""
        await self._app.store.delete_cron_ticker(_uuid(cron_id))

    async def enable(self, cron_id: UUID) -> CronTicker:
        """Fire again, from the next fire after now (fires while disabled are not made up)."""
        current = await self.get(cron_id)
        now = self._app.clock.now()
        cron = await self._app.store.update_cron_ticker(
            current.id,
            {"enabled": True, "updated_at": now, "next_fire_at": first_fire_after(current, now)},
        )
        self._app.wake_engine(cron.next_fire_at)
        return cron

    async def disable(self, cron_id: UUID) -> CronTicker:
        """Stop firing until enabled again."""
        current = await self.get(cron_id)
        return await self._app.store.update_cron_ticker(
            current.id, {"enabled": False, "updated_at": self._app.clock.now()}
        )

    async def run_now(self, cron_id: UUID) -> CronOccurrence:
        """Make an extra occurrence due now (the schedule itself is unchanged)."""
        cron = await self.get(cron_id)
        now = self._app.clock.now()
        fn = self._app.get_function(cron.function)
        store = self._app.store
        await store.advance_cron_ticker(
            cron.id,
            expected_next=cron.next_fire_at,
            new_next=cron.next_fire_at,
            fires=[now],
            priority=fn.options.priority,
            now=now,
        )
        self._app.wake_engine(now)
        for occurrence in await store.occurrences(cron.id, limit=5):
            if occurrence.execution_time == now:
                return occurrence
        raise TickerStateError(f"cron ticker {cron.id} changed while running it now; try again")

    async def occurrences(
        self, cron_id: UUID, *, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """A cron ticker's occurrences (its run history), newest first."""
        return await self._app.store.occurrences(_uuid(cron_id), limit, offset)

    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """One occurrence; raises TickerNotFoundError."""
        found = await self._app.store.get_occurrence(_uuid(occurrence_id))
        if found is None:
            raise TickerNotFoundError("cron occurrence", occurrence_id)
        return found

    async def cancel_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """Cancel a waiting occurrence, or ask its node to cancel the running one."""
        await _cancel(self._app, TickerKind.CRON_OCCURRENCE, _uuid(occurrence_id))
        return await self.get_occurrence(occurrence_id)

    async def query(self, *, function: str | None = None) -> list[CronTicker]:
        """Every cron ticker (of one function), oldest first."""
        return await self._app.store.query_cron_tickers(function)

    async def attempts(self, occurrence_id: UUID) -> list[Attempt]:
        """Every attempt of an occurrence, oldest first."""
        return await self._app.store.attempts(TickerKind.CRON_OCCURRENCE, _uuid(occurrence_id))


async def _cancel(app: TickerQ, kind: TickerKind, ticker_id: UUID) -> None:
    before = await app.store.cancel(kind, ticker_id, app.clock.now())
    if before in (Status.IN_PROGRESS, Status.QUEUED) and app.engine.running:
        app.engine.cancel_local(ticker_id, claimed=before is Status.QUEUED)


def _uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"not a ticker id: {value!r}") from None


def _query(
    *,
    status: Status | str | Sequence[Status | str] | None,
    function: str | None,
    text: str | None,
    parent_id: UUID | None,
    roots_only: bool,
    limit: int,
    offset: int,
) -> TickerQuery:
    if limit < 0 or offset < 0:
        raise InvalidArgumentError(f"limit and offset must be >= 0, got {limit}, {offset}")
    statuses = [status] if isinstance(status, str) else status
    return TickerQuery(
        statuses=[check_enum(Status, s, "status") for s in statuses] if statuses else None,
        function=function,
        text=text,
        parent_id=parent_id,
        roots_only=roots_only,
        limit=limit,
        offset=offset,
    )

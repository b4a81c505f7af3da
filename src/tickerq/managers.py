"""``app.time_tickers`` and ``app.cron_tickers``: add, change and inspect tickers.

Every input is checked before anything is stored; a bad value raises an error
that names it.

A function must be registered in this process, unless the caller passes
``allow_unregistered=True`` (the dashboard does: it may serve a cluster whose job
code runs elsewhere). Then a function the cluster knows (see
:mod:`tickerq.known_functions`) is accepted too: its request is stored as plain
JSON, with the same bounds and size limit, and the node that runs it validates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from tickerq.cron import parse_timezone
from tickerq.enums import MisfirePolicy, RunCondition, Status, TickerKind
from tickerq.errors import CronError, InvalidArgumentError, TickerNotFoundError, TickerStateError
from tickerq.firing import first_fire_after, parse_cached
from tickerq.functions import FunctionOptions, encode_json_request
from tickerq.known_functions import check_known
from tickerq.models import CronOccurrence, CronTicker, TimeTicker
from tickerq.stores.base import TickerQuery
from tickerq.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_TIME,
    check_after,
    check_bool,
    check_count,
    check_cron_text,
    check_enum,
    check_payload,
    check_payload_size,
    check_retries,
    check_text,
    check_time,
    check_timeout,
    check_timezone,
    short_repr,
)

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.models import Attempt

__all__ = ["CronTickerManager", "TimeTickerManager", "TimeTickerSpec"]

_UNSET: Any = object()

_UNREGISTERED = FunctionOptions()
"""The options of a function not registered here: NORMAL priority, no retries."""


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
        *,
        allow_unregistered: bool = False,
    ) -> TimeTicker:
        if not isinstance(spec, TimeTickerSpec):
            raise InvalidArgumentError(f"expected a TimeTickerSpec, got {short_repr(spec)}")
        name, options = _function(self._app, spec.function, allow_unregistered)
        payload = _encode(self._app, name, spec.request, allow_unregistered)
        when = check_time(spec.execution_time, "execution_time")
        if after is not None:
            if when is not None:
                raise InvalidArgumentError(
                    f"pass either at/execution_time ({when.isoformat()}) or after "
                    f"({short_repr(after)}), not both"
                )
            when = check_after(after, now)
        if when is None and parent_id is None:
            when = now
        retries = options.retries if spec.retries is None else spec.retries
        intervals = spec.retry_intervals
        if intervals is None:
            intervals = options.retry_intervals
        return TimeTicker(
            id=uuid4(),
            function=name,
            execution_time=when,
            request=payload,
            priority=options.priority,
            retries=retries,
            retry_intervals=check_retries(retries, intervals),
            timeout=check_timeout(spec.timeout),
            description=_description(spec.description),
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
        allow_unregistered: bool = False,
    ) -> TimeTicker:
        """Add one time ticker (due now when no time is given) and return it.

        ``allow_unregistered=True`` also accepts a function not registered in this
        process that the cluster knows (see :mod:`tickerq.known_functions`): its
        request is stored as plain JSON, checked against the same bounds and size
        limit, and it runs with NORMAL priority and no retries unless given. An
        unknown name raises FunctionNotFoundError either way."""
        if allow_unregistered:
            await check_known(self._app, _function_name(function))
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
        parent = None if parent_id is None else _uuid(parent_id)
        ticker = self._build(spec, now, parent, after, allow_unregistered=allow_unregistered)
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
            if isinstance(spec.children, str | bytes) or not isinstance(spec.children, Sequence):
                raise InvalidArgumentError(
                    f"children must be a list of TimeTickerSpec, got {short_repr(spec.children)}"
                )
            for child in spec.children:
                walk(child, ticker.id)

        if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
            raise InvalidArgumentError(
                f"add_many takes a list of TimeTickerSpec, got {short_repr(specs)}"
            )

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
        allow_unregistered: bool = False,
    ) -> TimeTicker:
        """Change a waiting (IDLE) ticker. Only the given fields change.

        ``allow_unregistered=True`` stores a new request of a function not
        registered in this process as plain JSON."""
        current = await self.get(ticker_id)
        changes: dict[str, Any] = {"updated_at": self._app.clock.now()}
        if execution_time is not _UNSET:
            when = check_time(execution_time, "execution_time")
            changes["execution_time"] = when or changes["updated_at"]  # None: now
        if request is not _UNSET:
            changes["request"] = _encode(self._app, current.function, request, allow_unregistered)
        if description is not _UNSET:
            changes["description"] = _description(description)
        if retries is not _UNSET or retry_intervals is not _UNSET:
            r = current.retries if retries is _UNSET else retries
            ri = current.retry_intervals if retry_intervals is _UNSET else retry_intervals
            changes["retry_intervals"] = check_retries(r, ri)
            changes["retries"] = r
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
        allow_unregistered: bool = False,
    ) -> CronTicker:
        """Add a cron ticker; the expression is checked in its timezone first.

        ``allow_unregistered=True`` also accepts a function not registered in this
        process that the cluster knows (see :mod:`tickerq.known_functions`), its
        request stored as plain JSON. An unknown name raises FunctionNotFoundError
        either way."""
        if allow_unregistered:
            await check_known(self._app, _function_name(function))
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
            allow_unregistered=allow_unregistered,
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
        allow_unregistered: bool = False,
    ) -> CronTicker:
        """A checked cron ticker, not stored yet.

        ``allow_unregistered=True`` builds one for a function not registered in
        this process too, its request as plain JSON; :meth:`add` first checks that
        the cluster knows the function, this method does not."""
        name, _ = _function(self._app, function, allow_unregistered)
        tz = _timezone_name(self._app.timezone if timezone is None else timezone)
        expr = parse_cached(check_cron_text(expression), tz)
        now = self._app.clock.now()
        return CronTicker(
            id=uuid4(),
            function=name,
            expression=expr.expression,
            timezone=tz,
            request=_encode(self._app, name, request, allow_unregistered),
            retries=retries,
            retry_intervals=check_retries(retries, retry_intervals),
            enabled=check_bool(enabled, "enabled"),
            misfire=check_enum(MisfirePolicy, misfire, "misfire policy"),
            description=_description(description),
            seeded=seeded,
            next_fire_at=_next_fire(expr.expression, tz, now),
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
        allow_unregistered: bool = False,
    ) -> CronTicker:
        """Change a cron ticker; a new expression or timezone reschedules its next fire.

        ``allow_unregistered=True`` stores a new request of a function not
        registered in this process as plain JSON."""
        current = await self.get(cron_id)
        now = self._app.clock.now()
        changes: dict[str, Any] = {"updated_at": now}
        if expression is not _UNSET or timezone is not _UNSET:
            expr_text = current.expression if expression is _UNSET else expression
            tz = current.timezone if timezone is _UNSET else _timezone_name(timezone)
            expr = parse_cached(check_cron_text(expr_text), tz)
            changes.update(expression=expr.expression, timezone=tz)
            changes["next_fire_at"] = _next_fire(expr.expression, tz, now)
        if request is not _UNSET:
            changes["request"] = _encode(self._app, current.function, request, allow_unregistered)
        if retries is not _UNSET or retry_intervals is not _UNSET:
            r = current.retries if retries is _UNSET else retries
            ri = current.retry_intervals if retry_intervals is _UNSET else retry_intervals
            changes["retry_intervals"] = check_retries(r, ri)
            changes["retries"] = r
        if misfire is not _UNSET:
            changes["misfire"] = check_enum(MisfirePolicy, misfire, "misfire policy")
        if description is not _UNSET:
            changes["description"] = _description(description)
        # Occurrences made ahead (EngineOptions.cron_lead) are made again from the change.
        cron = await self._app.store.update_cron_ticker(current.id, changes, take_back_after=now)
        self._app.wake_engine(cron.next_fire_at)
        return cron

    async def delete(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that have not started."""
        await self._app.store.delete_cron_ticker(_uuid(cron_id))

    async def enable(self, cron_id: UUID) -> CronTicker:
        """Fire again, from the next fire after now (fires while disabled are not made up)."""
        current = await self.get(cron_id)
        now = self._app.clock.now()
        following = first_fire_after(current, now)
        if following is not None and following > MAX_TIME:
            following = None  # past the supported range: it does not fire again
        cron = await self._app.store.update_cron_ticker(
            current.id, {"enabled": True, "updated_at": now, "next_fire_at": following}
        )
        self._app.wake_engine(cron.next_fire_at)
        return cron

    async def disable(self, cron_id: UUID) -> CronTicker:
        """Stop firing until enabled again."""
        current = await self.get(cron_id)
        now = self._app.clock.now()
        return await self._app.store.update_cron_ticker(
            current.id, {"enabled": False, "updated_at": now}, take_back_after=now
        )

    async def run_now(self, cron_id: UUID, *, allow_unregistered: bool = False) -> CronOccurrence:
        """Make an extra occurrence due now (the schedule itself is unchanged).

        ``allow_unregistered=True`` runs a cron ticker of a function not registered
        in this process too (its occurrence has NORMAL priority)."""
        cron = await self.get(cron_id)
        now = self._app.clock.now()
        _, options = _function(self._app, cron.function, allow_unregistered)
        store = self._app.store
        await store.advance_cron_ticker(
            cron.id,
            expected_next=cron.next_fire_at,
            new_next=cron.next_fire_at,
            fires=[now],
            priority=options.priority,
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

    async def retry_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """Run an ended (or waiting) occurrence again now."""
        now = self._app.clock.now()
        await self._app.store.retry_now(TickerKind.CRON_OCCURRENCE, _uuid(occurrence_id), now)
        self._app.wake_engine(now)
        return await self.get_occurrence(occurrence_id)

    async def query(self, *, function: str | None = None) -> list[CronTicker]:
        """Every cron ticker (of one function), oldest first."""
        if function is not None:
            function = check_text(function, "function")
        return await self._app.store.query_cron_tickers(function)

    async def attempts(self, occurrence_id: UUID) -> list[Attempt]:
        """Every attempt of an occurrence, oldest first."""
        return await self._app.store.attempts(TickerKind.CRON_OCCURRENCE, _uuid(occurrence_id))


async def _cancel(app: TickerQ, kind: TickerKind, ticker_id: UUID) -> None:
    before = await app.store.cancel(kind, ticker_id, app.clock.now())
    if before is Status.IN_PROGRESS and app.engine.running:
        app.engine.cancel_local(ticker_id)


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
    statuses = [status] if isinstance(status, str) else status
    return TickerQuery(
        statuses=[check_enum(Status, s, "status") for s in statuses] if statuses else None,
        function=None if function is None else check_text(function, "function"),
        text=None if text is None else check_text(text, "text"),
        parent_id=None if parent_id is None else _uuid(parent_id),
        roots_only=check_bool(roots_only, "roots_only"),
        limit=check_count(limit, "limit"),
        offset=check_count(offset, "offset"),
    )


def _function_name(name: Any) -> str:
    """A function name to look up (unknown names raise FunctionNotFoundError there)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a function name must be a string, got {short_repr(name)}")
    return name


def _function(app: TickerQ, function: Any, allow_unregistered: bool) -> tuple[str, FunctionOptions]:
    """The name and options of ``function``: those it was registered with, or the
    defaults for a name not registered here when ``allow_unregistered``."""
    name = _function_name(function)
    if allow_unregistered and name not in app.functions:
        return name, _UNREGISTERED
    fn = app.get_function(name)
    return fn.name, fn.options


def _encode(app: TickerQ, function: str, request: Any, allow_unregistered: bool = False) -> Any:
    """The request validated for ``function`` (plain JSON for a function not
    registered here, when allowed), within the size limit and storable on every store."""
    if allow_unregistered and function not in app.functions:
        payload = encode_json_request(function, request)
        check_payload_size(payload, function, app.max_payload_bytes)
    else:
        payload = app.encode_request(function, request)
    return check_payload(payload, function)


def _description(value: Any) -> str:
    return check_text(value, "description", max_length=MAX_DESCRIPTION_LENGTH)


def _timezone_name(value: Any) -> str:
    """The IANA name of a timezone (name or tzinfo), checked; raises CronError."""
    zone = check_timezone(value)
    return str(parse_timezone(zone)) if isinstance(zone, tzinfo) else zone


def _next_fire(expression: str, timezone: str, now: datetime) -> datetime:
    """The first fire after ``now``, refused when it lies past the supported time range."""
    following = parse_cached(expression, timezone).next_after(now)
    if following > MAX_TIME:
        raise CronError(
            expression,
            f"its next fire after {now.isoformat()} is {following.isoformat()}, "
            f"past the last supported time {MAX_TIME.isoformat()}",
        )
    return following

"""``app.cron_tickers``: add, change, enable, run now and inspect cron tickers and
their occurrences."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.cron import parse_timezone
from tickerq.enums import MisfirePolicy, TickerKind
from tickerq.errors import CronError, TickerNotFoundError, TickerStateError
from tickerq.firing import first_fire_after, parse_cached
from tickerq.hooks import Cancellation, Hooks
from tickerq.ids import new_id
from tickerq.known_functions import check_known
from tickerq.managers._common import (
    UNSET,
    UsesStore,
    cancel_ticker,
    cancel_tickers,
    description_of,
    function_name,
    function_options,
    retry_tickers,
    uuid_of,
)
from tickerq.models import CronOccurrence, CronTicker
from tickerq.operations import BulkResult
from tickerq.validation import (
    MAX_TIME,
    check_bool,
    check_cron_text,
    check_enum,
    check_retries,
    check_text,
    check_timezone,
)

if TYPE_CHECKING:
    from tickerq.clock import Clock
    from tickerq.functions import FunctionRegistry
    from tickerq.local import LocalEngine
    from tickerq.models import Attempt
    from tickerq.stores.base import Store

__all__ = ["CronTickerManager"]


class CronTickerManager(UsesStore):
    """Adds, changes and inspects cron tickers: ``app.cron_tickers``."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        functions: FunctionRegistry,
        engine: LocalEngine,
        *,
        timezone: str,
        hooks: Hooks | None = None,
    ) -> None:
        self._store = store
        self._hooks = hooks if hooks is not None else Hooks()
        self._clock = clock
        self._functions = functions
        self._engine = engine
        self._timezone = timezone
        """The timezone of cron tickers added without one (the app's)."""

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
            await check_known(self._functions, self._store, function_name(function))
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
        cron = await self._store.add_cron_ticker(cron)
        self._engine.wake(cron.next_fire_at)
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
        name, _ = function_options(self._functions, function, allow_unregistered)
        tz = _timezone_name(self._timezone if timezone is None else timezone)
        expr = parse_cached(check_cron_text(expression), tz)
        now = self._clock.now()
        return CronTicker(
            id=new_id(),
            function=name,
            expression=expr.expression,
            timezone=tz,
            request=self._functions.payload(name, request, allow_unregistered),
            retries=retries,
            retry_intervals=check_retries(retries, retry_intervals),
            enabled=check_bool(enabled, "enabled"),
            misfire=check_enum(MisfirePolicy, misfire, "misfire policy"),
            description=description_of(description),
            seeded=seeded,
            next_fire_at=_next_fire(expr.expression, tz, now),
            created_at=now,
            updated_at=now,
        )

    async def get(self, cron_id: UUID) -> CronTicker:
        """One cron ticker; raises TickerNotFoundError."""
        cron = await self._store.get_cron_ticker(uuid_of(cron_id))
        if cron is None:
            raise TickerNotFoundError("cron ticker", cron_id)
        return cron

    async def update(
        self,
        cron_id: UUID,
        *,
        expression: str = UNSET,
        timezone: str = UNSET,
        request: Any = UNSET,
        retries: int = UNSET,
        retry_intervals: Sequence[float] | None = UNSET,
        misfire: MisfirePolicy = UNSET,
        description: str = UNSET,
        allow_unregistered: bool = False,
    ) -> CronTicker:
        """Change a cron ticker; a new expression or timezone reschedules its next fire.

        ``allow_unregistered=True`` stores a new request of a function not
        registered in this process as plain JSON."""
        current = await self.get(cron_id)
        now = self._clock.now()
        changes: dict[str, Any] = {"updated_at": now}
        if expression is not UNSET or timezone is not UNSET:
            expr_text = current.expression if expression is UNSET else expression
            tz = current.timezone if timezone is UNSET else _timezone_name(timezone)
            expr = parse_cached(check_cron_text(expr_text), tz)
            changes.update(expression=expr.expression, timezone=tz)
            changes["next_fire_at"] = _next_fire(expr.expression, tz, now)
        if request is not UNSET:
            changes["request"] = self._functions.payload(
                current.function, request, allow_unregistered
            )
        if retries is not UNSET or retry_intervals is not UNSET:
            r = current.retries if retries is UNSET else retries
            ri = current.retry_intervals if retry_intervals is UNSET else retry_intervals
            changes["retry_intervals"] = check_retries(r, ri)
            changes["retries"] = r
        if misfire is not UNSET:
            changes["misfire"] = check_enum(MisfirePolicy, misfire, "misfire policy")
        if description is not UNSET:
            changes["description"] = description_of(description)
        # Occurrences made ahead (EngineOptions.cron_lead) are made again from the change.
        cron = await self._store.update_cron_ticker(current.id, changes, take_back_after=now)
        self._engine.wake(cron.next_fire_at)
        return cron

    async def delete(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its occurrences that have not started."""
        await self._store.delete_cron_ticker(uuid_of(cron_id))

    async def enable(self, cron_id: UUID) -> CronTicker:
        """Fire again, from the next fire after now (fires while disabled are not made up)."""
        current = await self.get(cron_id)
        now = self._clock.now()
        following = first_fire_after(current, now)
        if following is not None and following > MAX_TIME:
            following = None  # past the supported range: it does not fire again
        cron = await self._store.update_cron_ticker(
            current.id, {"enabled": True, "updated_at": now, "next_fire_at": following}
        )
        self._engine.wake(cron.next_fire_at)
        return cron

    async def disable(self, cron_id: UUID) -> CronTicker:
        """Stop firing until enabled again."""
        current = await self.get(cron_id)
        now = self._clock.now()
        return await self._store.update_cron_ticker(
            current.id, {"enabled": False, "updated_at": now}, take_back_after=now
        )

    async def run_now(self, cron_id: UUID, *, allow_unregistered: bool = False) -> CronOccurrence:
        """Make an extra occurrence due now (the schedule itself is unchanged).

        ``allow_unregistered=True`` runs a cron ticker of a function not registered
        in this process too (its occurrence has NORMAL priority)."""
        cron = await self.get(cron_id)
        now = self._clock.now()
        _, options = function_options(self._functions, cron.function, allow_unregistered)
        store = self._store
        await store.advance_cron_ticker(
            cron.id,
            expected_next=cron.next_fire_at,
            new_next=cron.next_fire_at,
            fires=[now],
            priority=options.priority,
            now=now,
        )
        self._engine.wake(now)
        for occurrence in await store.occurrences(cron.id, limit=5):
            if occurrence.execution_time == now:
                return occurrence
        raise TickerStateError(f"cron ticker {cron.id} changed while running it now; try again")

    async def occurrences(
        self, cron_id: UUID, *, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """A cron ticker's occurrences (its run history), newest first."""
        return await self._store.occurrences(uuid_of(cron_id), limit, offset)

    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """One occurrence; raises TickerNotFoundError."""
        found = await self._store.get_occurrence(uuid_of(occurrence_id))
        if found is None:
            raise TickerNotFoundError("cron occurrence", occurrence_id)
        return found

    async def cancel_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """Cancel a waiting occurrence, or ask its node to cancel the running one."""
        waiting = await cancel_ticker(
            self._store,
            self._engine,
            self._clock,
            TickerKind.CRON_OCCURRENCE,
            uuid_of(occurrence_id),
        )
        occurrence = await self.get_occurrence(occurrence_id)
        if waiting:
            await self._hooks.cancelled(
                Cancellation(occurrence.id, TickerKind.CRON_OCCURRENCE, occurrence.function, False)
            )
        return occurrence

    async def retry_occurrence(self, occurrence_id: UUID) -> CronOccurrence:
        """Run an ended (or waiting) occurrence again now."""
        now = self._clock.now()
        await self._store.retry_now(TickerKind.CRON_OCCURRENCE, uuid_of(occurrence_id), now)
        self._engine.wake(now)
        return await self.get_occurrence(occurrence_id)

    async def cancel_occurrences(self, ids: Sequence[UUID]) -> BulkResult:
        """Cancel several occurrences in one transaction, as :meth:`cancel_occurrence`
        does each: waiting ones end CANCELLED (DONE), running ones are asked to stop
        on their node (REQUESTED), ended ones are NOT_ALLOWED, unknown ids NOT_FOUND.
        At most :data:`~tickerq.operations.MAX_BULK_IDS` ids."""
        return await cancel_tickers(
            self._store,
            self._engine,
            self._clock,
            self._hooks,
            TickerKind.CRON_OCCURRENCE,
            ids=ids,
        )

    async def retry_occurrences(self, ids: Sequence[UUID]) -> BulkResult:
        """Run several ended (or waiting) occurrences again now, in one transaction,
        as :meth:`retry_occurrence` does each; running ones are NOT_ALLOWED, unknown
        ids NOT_FOUND. At most :data:`~tickerq.operations.MAX_BULK_IDS` ids."""
        return await retry_tickers(
            self._store, self._engine, self._clock, TickerKind.CRON_OCCURRENCE, ids
        )

    async def query(self, *, function: str | None = None) -> list[CronTicker]:
        """Every cron ticker (of one function), oldest first."""
        if function is not None:
            function = check_text(function, "function")
        return await self._store.query_cron_tickers(function)

    async def attempts(self, occurrence_id: UUID) -> list[Attempt]:
        """Every attempt of an occurrence, oldest first."""
        return await self._store.attempts(TickerKind.CRON_OCCURRENCE, uuid_of(occurrence_id))


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

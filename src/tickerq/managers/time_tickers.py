"""``app.time_tickers``: add, change, cancel, retry and inspect time tickers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.enums import EnqueueOutcome, RunCondition, Status, TickerKind
from tickerq.errors import InvalidArgumentError, TickerNotFoundError
from tickerq.events import Event, EventBus, TickerChanged, TickerDeleted
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
    query_of,
    retry_tickers,
    uuid_of,
)
from tickerq.middleware import Pipeline, run_chain
from tickerq.models import TimeTicker
from tickerq.operations import UPDATE, BulkResult, build_result, check_ids
from tickerq.unique import KeyHeld, OnConflict, check_on_conflict, check_unique_key
from tickerq.validation import (
    MAX_RETRIES,
    check_after,
    check_count,
    check_enum,
    check_headers,
    check_retries,
    check_time,
    check_timeout,
    check_wait_timeout,
    short_repr,
)

if TYPE_CHECKING:
    from tickerq.clock import Clock
    from tickerq.functions import FunctionRegistry
    from tickerq.local import LocalEngine
    from tickerq.models import Attempt
    from tickerq.stores.base import Store

__all__ = ["TimeTickerManager", "TimeTickerSpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeTickerSpec:
    """A time ticker to add with :meth:`TimeTickerManager.add_many`, with its chain.

    ``children`` run after this ticker ends, each when its ``run_condition``
    matches (default: any completed status); a child with its own
    ``execution_time`` also waits for that time.

    ``unique_key``: see :mod:`tickerq.unique`. :meth:`TimeTickerManager.add_many`
    stores all or nothing, so a key that is held makes it raise DuplicateJobError
    (as ``on_conflict="error"`` would).
    """

    function: str
    request: Any = None
    execution_time: datetime | None = None
    description: str = ""
    retries: int | None = None
    retry_intervals: Sequence[float] | None = None
    timeout: float | None = None
    run_condition: RunCondition | None = None
    headers: Mapping[str, str] | None = None
    unique_key: str | None = None
    children: Sequence[TimeTickerSpec] = field(default_factory=tuple)


class TimeTickerManager(UsesStore):
    """Adds, changes and inspects time tickers: ``app.time_tickers``."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        functions: FunctionRegistry,
        engine: LocalEngine,
        *,
        pipeline: Pipeline | None = None,
        hooks: Hooks | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._functions = functions
        self._engine = engine
        self._pipeline = pipeline if pipeline is not None else Pipeline()
        self._hooks = hooks if hooks is not None else Hooks()
        self._bus = bus

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
        name, options = function_options(self._functions, spec.function, allow_unregistered)
        payload = self._functions.payload(name, spec.request, allow_unregistered)
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
            id=new_id(),
            function=name,
            execution_time=when,
            request=payload,
            priority=options.priority,
            retries=retries,
            retry_intervals=check_retries(retries, intervals),
            timeout=check_timeout(spec.timeout),
            description=description_of(spec.description),
            parent_id=parent_id,
            run_condition=check_enum(RunCondition, spec.run_condition, "run condition")
            if spec.run_condition is not None
            else None,
            headers=check_headers(spec.headers),
            concurrency_key=self._functions.concurrency_key(name, payload),
            unique_key=check_unique_key(spec.unique_key),
            created_at=now,
            updated_at=now,
            enqueued=EnqueueOutcome.ADDED,
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
        headers: Mapping[str, str] | None = None,
        allow_unregistered: bool = False,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """Add one time ticker (due now when no time is given) and return it.

        ``headers`` (text to text) are stored with it and seen by the job as
        ``ctx.headers``; the app's ``on_enqueue`` middleware sees the ticker first.

        ``unique_key`` (1 to 200 characters): while a ticker of this function with
        this key waits or runs, no second one is stored; ``on_conflict`` says what
        happens instead: ``"keep"`` returns that ticker, ``"error"`` raises
        DuplicateJobError, ``"replace"`` gives a waiting one the new request, time
        and options (debounce), or chains the new ticker after a running one (see
        :mod:`tickerq.unique`). The returned ticker's ``enqueued`` says which
        (ADDED, KEPT, REPLACED or CHAINED).

        ``allow_unregistered=True`` also accepts a function not registered in this
        process that the cluster knows (see :mod:`tickerq.known_functions`): its
        request is stored as plain JSON, checked against the same bounds and size
        limit, and it runs with NORMAL priority and no retries unless given. An
        unknown name raises FunctionNotFoundError either way."""
        conflict = check_on_conflict(on_conflict)
        if allow_unregistered:
            await check_known(self._functions, self._store, function_name(function), cached=True)
        now = self._clock.now()
        spec = TimeTickerSpec(
            function=function,
            request=request,
            execution_time=execution_time,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            run_condition=run_condition,
            headers=headers,
            unique_key=unique_key,
        )
        parent = None if parent_id is None else uuid_of(parent_id)
        ticker = self._build(spec, now, parent, after, allow_unregistered=allow_unregistered)
        store = functools.partial(self._store_one, on_conflict=conflict)
        hooks = self._pipeline.enqueue_hooks(ticker.function)
        if not hooks:
            return await store(ticker)
        stored: TimeTicker = await run_chain(hooks, ticker, _as_built(ticker, store))
        return stored

    async def _store_one(self, ticker: TimeTicker, on_conflict: OnConflict = "keep") -> TimeTicker:
        if ticker.unique_key is None:
            await self._store.add_time_tickers((ticker,))
        else:
            ticker = await self._store.add_unique(ticker, on_conflict)
            if ticker.enqueued is EnqueueOutcome.KEPT:
                return ticker
        self._engine.wake(ticker.execution_time)
        return ticker

    async def add_many(self, specs: Sequence[TimeTickerSpec]) -> list[TimeTicker]:
        """Add many tickers (with their chains) atomically; returns them parents first."""
        now = self._clock.now()
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
        for i, ticker in enumerate(out):
            # Middleware sees each ticker; the batch is stored once all went through.
            hooks = self._pipeline.enqueue_hooks(ticker.function)
            if hooks:
                out[i] = await run_chain(hooks, ticker, _as_built(ticker, _passed))
        await self._store.add_time_tickers(out)
        self._engine.wake(min((t.execution_time for t in out if t.execution_time), default=None))
        return out

    async def get(self, ticker_id: UUID) -> TimeTicker:
        """One time ticker; raises TickerNotFoundError."""
        ticker = await self._store.get_time_ticker(uuid_of(ticker_id))
        if ticker is None:
            raise TickerNotFoundError("time ticker", ticker_id)
        return ticker

    async def update(
        self,
        ticker_id: UUID,
        *,
        execution_time: datetime = UNSET,
        request: Any = UNSET,
        description: str = UNSET,
        retries: int = UNSET,
        retry_intervals: Sequence[float] | None = UNSET,
        timeout: float | None = UNSET,
        headers: Mapping[str, str] = UNSET,
        allow_unregistered: bool = False,
        unique_key: str | None = UNSET,
    ) -> TimeTicker:
        """Change a waiting (IDLE) ticker. Only the given fields change.

        ``unique_key`` gives it a key (None: takes its key away); a key another
        ticker of its function holds raises DuplicateJobError naming that ticker.
        ``allow_unregistered=True`` stores a new request of a function not
        registered in this process as plain JSON."""
        tid = uuid_of(ticker_id)
        changes = self._changes(
            execution_time=execution_time,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
        )
        if request is not UNSET:
            current = await self.get(tid)
            changes["request"] = self._functions.payload(
                current.function, request, allow_unregistered
            )
            changes["concurrency_key"] = self._functions.concurrency_key(
                current.function, changes["request"]
            )
        ticker = await self._store.update_time_ticker(tid, changes, UPDATE.allowed)
        self._engine.wake(ticker.execution_time)
        return ticker

    async def update_many(
        self,
        ids: Sequence[UUID],
        *,
        execution_time: datetime = UNSET,
        request: Any = UNSET,
        description: str = UNSET,
        retries: int = UNSET,
        retry_intervals: Sequence[float] | None = UNSET,
        timeout: float | None = UNSET,
        headers: Mapping[str, str] = UNSET,
        allow_unregistered: bool = False,
        unique_key: str | None = UNSET,
    ) -> BulkResult:
        """Change several waiting (IDLE) tickers the same way, in one transaction.

        Takes the fields :meth:`update` takes; they are checked once, before
        anything is written (a new ``request`` against each function among the
        tickers: one that does not fit raises and nothing changes). Each id is
        reported: DONE, NOT_ALLOWED (not IDLE, or a ``unique_key`` another ticker
        of its function holds or one of these, earlier by id, takes: with the
        reason and ``held_by``) or NOT_FOUND. At most
        :data:`~tickerq.operations.MAX_BULK_IDS` ids (given twice: once).
        """
        wanted = check_ids(ids)
        changes = self._changes(
            execution_time=execution_time,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
        )
        per_id: dict[UUID, Mapping[str, Any]] = dict.fromkeys(wanted, changes)
        if request is not UNSET and wanted:
            functions = {
                t.id: t.function for t in (await self._store.get_time_tickers(wanted)).values()
            }
            by_function = {}
            for name in sorted(set(functions.values())):
                payload = self._functions.payload(name, request, allow_unregistered)
                by_function[name] = {
                    **changes,
                    "request": payload,
                    "concurrency_key": self._functions.concurrency_key(name, payload),
                }
            per_id = {i: by_function[functions[i]] for i in wanted if i in functions}
        held: dict[UUID, KeyHeld] = {}
        found = (
            await self._store.update_time_tickers(per_id, UPDATE.allowed, held_by=held)
            if per_id
            else {}
        )
        result = build_result(UPDATE, TickerKind.TIME, wanted, found, held)
        if result.done:
            self._engine.wake(changes.get("execution_time"))
        return result

    def _changes(
        self,
        *,
        execution_time: Any,
        description: Any,
        retries: Any,
        retry_intervals: Any,
        timeout: Any,
        headers: Any,
        unique_key: Any = UNSET,
    ) -> dict[str, Any]:
        """The checked changes of :meth:`update` (all but the request, which is checked
        against the ticker's function); UNSET fields are left out."""
        changes: dict[str, Any] = {"updated_at": self._clock.now()}
        if execution_time is not UNSET:
            when = check_time(execution_time, "execution_time")
            changes["execution_time"] = when or changes["updated_at"]  # None: now
        if description is not UNSET:
            changes["description"] = description_of(description)
        if retries is not UNSET:
            changes["retries"] = check_count(retries, "retries", MAX_RETRIES)
        if retry_intervals is not UNSET:
            changes["retry_intervals"] = check_retries(0, retry_intervals)
        if timeout is not UNSET:
            changes["timeout"] = check_timeout(timeout)
        if headers is not UNSET:
            changes["headers"] = check_headers(headers)
        if unique_key is not UNSET:
            changes["unique_key"] = check_unique_key(unique_key)
        return changes

    async def delete(self, ticker_id: UUID) -> None:
        """Delete a ticker and its chain children; raises if unknown or running."""
        if await self._store.delete_time_tickers([uuid_of(ticker_id)]) == 0:
            raise TickerNotFoundError("time ticker", ticker_id)

    async def delete_many(self, ids: Sequence[UUID]) -> int:
        """Delete several tickers with their chains, all or none; returns how many rows
        went (unknown ids are ignored). Raises TickerStateError, deleting nothing, if
        one of them (or of their chain children) runs. At most
        :data:`~tickerq.operations.MAX_BULK_IDS` ids."""
        return await self._store.delete_time_tickers(check_ids(ids))

    async def cancel(self, ticker_id: UUID) -> TimeTicker:
        """Cancel a waiting ticker, or ask the node running it to cancel it."""
        waiting = await cancel_ticker(
            self._store, self._engine, self._clock, TickerKind.TIME, uuid_of(ticker_id)
        )
        ticker = await self.get(ticker_id)
        if waiting:
            await self._hooks.cancelled(
                Cancellation(ticker.id, TickerKind.TIME, ticker.function, False)
            )
        return ticker

    async def cancel_many(self, ids: Sequence[UUID]) -> BulkResult:
        """Cancel several tickers in one transaction, as :meth:`cancel` does each.

        A waiting ticker ends CANCELLED at once (DONE in the result); a running one
        is flagged and its node cancels it (REQUESTED: this node at once, others
        when told, at the latest at their next heartbeat); one that has ended is
        NOT_ALLOWED, an unknown id NOT_FOUND. At most
        :data:`~tickerq.operations.MAX_BULK_IDS` ids; a bad id raises before
        anything changes.
        """
        return await cancel_tickers(
            self._store, self._engine, self._clock, self._hooks, TickerKind.TIME, ids=ids
        )

    async def wait(self, ticker_id: UUID, *, timeout: float | None = None) -> TimeTicker:
        """The ticker once it has ended (DONE, FAILED, CANCELLED, ...), with its result.

        Wakes at once for an end recorded in this process; an end on another node
        is seen by polling the store (every 50 ms at first, at most every second).
        Raises TimeoutError after ``timeout`` seconds, TickerNotFoundError if there
        is no such ticker (or it is deleted meanwhile).
        """
        tid = uuid_of(ticker_id)
        if timeout is not None:
            timeout = check_wait_timeout(timeout)
        ended = asyncio.Event()

        def on_event(event: Event) -> None:
            if isinstance(event, TickerChanged | TickerDeleted) and event.id == tid:
                ended.set()

        unsubscribe = self._bus.subscribe(on_event) if self._bus is not None else None
        try:
            async with asyncio.timeout(timeout):
                pause = 0.05
                while True:
                    ended.clear()  # before the read: an end after it still wakes us
                    ticker = await self.get(tid)
                    if ticker.status.is_final:
                        return ticker
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), pause)
                    pause = min(pause * 2, 1.0)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    async def retry(self, ticker_id: UUID) -> TimeTicker:
        """Run an ended (or waiting) ticker again now. Raises DuplicateJobError when
        another ticker holds its unique key now."""
        now = self._clock.now()
        await self._store.retry_now(TickerKind.TIME, uuid_of(ticker_id), now)
        self._engine.wake(now)
        return await self.get(ticker_id)

    async def retry_many(self, ids: Sequence[UUID]) -> BulkResult:
        """Run several ended (or waiting) tickers again now, in one transaction, as
        :meth:`retry` does each; running ones are NOT_ALLOWED, so is an ended one
        whose unique key another ticker holds now (``held_by`` names it; of several
        ended ones with one key, the first by id runs), unknown ids NOT_FOUND.
        At most :data:`~tickerq.operations.MAX_BULK_IDS` ids."""
        return await retry_tickers(self._store, self._engine, self._clock, TickerKind.TIME, ids)

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
        return await self._store.query_time_tickers(
            query_of(
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
        return await self._store.count_time_tickers(
            query_of(
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
        return await self._store.attempts(TickerKind.TIME, uuid_of(ticker_id))


async def _passed(ticker: TimeTicker) -> TimeTicker:
    """The end of ``add_many``'s chain: the ticker goes into the batch."""
    return ticker


def _as_built(
    built: TimeTicker, then: Callable[[TimeTicker], Awaitable[TimeTicker]]
) -> Callable[[TimeTicker], Awaitable[TimeTicker]]:
    """``then``, refusing what middleware may not change (id, function, chain),
    and checking the headers it may have set."""

    async def check(ticker: TimeTicker) -> TimeTicker:
        if not isinstance(ticker, TimeTicker):
            raise InvalidArgumentError(
                f"on_enqueue middleware passed on {short_repr(ticker)}, not a TimeTicker"
            )
        if (ticker.id, ticker.function, ticker.parent_id) != (
            built.id,
            built.function,
            built.parent_id,
        ):
            raise InvalidArgumentError(
                "on_enqueue middleware may not change a ticker's id, function or parent "
                f"(ticker {built.id} of {built.function!r})"
            )
        if ticker.headers is not built.headers:
            ticker = ticker.evolve(headers=check_headers(ticker.headers))
        if ticker.unique_key != built.unique_key:
            ticker = ticker.evolve(unique_key=check_unique_key(ticker.unique_key))
        return await then(ticker)

    return check

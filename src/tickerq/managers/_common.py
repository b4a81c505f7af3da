"""What both managers share: checks of ids, names, queries and descriptions, cancel
and the bulk cancel and retry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.errors import InvalidArgumentError, TickerStateError
from tickerq.hooks import Cancellation
from tickerq.operations import CANCEL, RETRY, BulkOutcome, BulkResult, build_result, check_ids
from tickerq.stores.base import TickerQuery
from tickerq.validation import (
    MAX_DESCRIPTION_LENGTH,
    check_bool,
    check_count,
    check_enum,
    check_text,
    short_repr,
)

if TYPE_CHECKING:
    from tickerq.clock import Clock
    from tickerq.functions import FunctionOptions, FunctionRegistry
    from tickerq.hooks import Hooks
    from tickerq.local import LocalEngine
    from tickerq.stores.base import Store
    from tickerq.unique import KeyHeld

__all__ = [
    "NOT_OPEN",
    "UNSET",
    "UsesStore",
    "cancel_ticker",
    "cancel_tickers",
    "description_of",
    "function_name",
    "function_options",
    "query_of",
    "retry_tickers",
    "uuid_of",
]

UNSET: Any = object()
"""An argument not given (None may be a value)."""

NOT_OPEN = (
    "the app is not open: use `async with app:` (or `await app.open()` to schedule "
    "without running jobs, `await app.start()` to run them too), or `app.sync.start()` "
    "in code that is not async"
)
"""What a manager says when it is used before its app opened its store."""


class UsesStore:
    """A manager's store, refused with :data:`NOT_OPEN` while it is not open (a
    forgotten ``async with app`` would otherwise store into a memory store that no
    engine runs, or fail deep in a database driver)."""

    _store_ref: Store

    @property
    def _store(self) -> Store:
        store = self._store_ref
        if not store.is_open:
            raise TickerStateError(NOT_OPEN)
        return store

    @_store.setter
    def _store(self, store: Store) -> None:
        self._store_ref = store


async def cancel_ticker(
    store: Store, engine: LocalEngine, clock: Clock, kind: TickerKind, ticker_id: UUID
) -> bool:
    """Cancel a waiting ticker; a running one is flagged for its node (another node
    hears of it by a notice) and cancelled at once if it runs here. True when it
    was waiting, so it ended CANCELLED here and now."""
    before = await store.cancel(kind, ticker_id, clock.now())
    if before is Status.IN_PROGRESS:
        engine.cancel_local(ticker_id)
        return False
    return True


async def cancel_tickers(
    store: Store,
    engine: LocalEngine,
    clock: Clock,
    hooks: Hooks,
    kind: TickerKind,
    *,
    ids: Sequence[UUID],
) -> BulkResult:
    """Cancel several tickers in one store transaction (see ``cancel_many``): running
    ones here are cancelled at once, ``on_cancel`` runs for each that was waiting."""
    wanted = check_ids(ids)
    found = await store.cancel_many(kind, wanted, clock.now()) if wanted else {}
    result = build_result(CANCEL, kind, wanted, found)
    for item in result:
        if item.outcome is BulkOutcome.REQUESTED:
            engine.cancel_local(item.id)
    for item in result:
        if item.outcome is BulkOutcome.DONE and item.function is not None:
            await hooks.cancelled(Cancellation(item.id, kind, item.function, False))
    return result


async def retry_tickers(
    store: Store, engine: LocalEngine, clock: Clock, kind: TickerKind, ids: Sequence[UUID]
) -> BulkResult:
    """Make several tickers due now again in one store transaction (see ``retry_many``)."""
    wanted = check_ids(ids)
    now = clock.now()
    held: dict[UUID, KeyHeld] = {}
    found = await store.retry_many(kind, wanted, now, held_by=held) if wanted else {}
    result = build_result(RETRY, kind, wanted, found, held)
    if result.done:
        engine.wake(now)
    return result


def uuid_of(value: UUID | str) -> UUID:
    """A ticker id given as a UUID or its text; raises InvalidArgumentError."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"not a ticker id: {value!r}") from None


def query_of(
    *,
    status: Status | str | Sequence[Status | str] | None,
    function: str | None,
    text: str | None,
    parent_id: UUID | None,
    roots_only: bool,
    limit: int,
    offset: int,
) -> TickerQuery:
    """A checked query of time tickers."""
    statuses = [status] if isinstance(status, str) else status
    return TickerQuery(
        statuses=[check_enum(Status, s, "status") for s in statuses] if statuses else None,
        function=None if function is None else check_text(function, "function"),
        text=None if text is None else check_text(text, "text"),
        parent_id=None if parent_id is None else uuid_of(parent_id),
        roots_only=check_bool(roots_only, "roots_only"),
        limit=check_count(limit, "limit"),
        offset=check_count(offset, "offset"),
    )


def function_name(name: Any) -> str:
    """A function name to look up (unknown names raise FunctionNotFoundError there)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a function name must be a string, got {short_repr(name)}")
    return name


def function_options(
    functions: FunctionRegistry, function: Any, allow_unregistered: bool
) -> tuple[str, FunctionOptions]:
    """The name and options of ``function``: those it was registered with, or the
    defaults for a name not registered here when ``allow_unregistered``."""
    return functions.options(function_name(function), allow_unregistered)


def description_of(value: Any) -> str:
    """A checked description."""
    return check_text(value, "description", max_length=MAX_DESCRIPTION_LENGTH)

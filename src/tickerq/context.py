"""What a running job sees: :class:`TickerContext`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic
from uuid import UUID

from typing_extensions import TypeVar

from tickerq.enums import Status, TickerKind
from tickerq.errors import TerminateExecution

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.local import LocalEngine

__all__ = ["Req", "TickerContext"]

Req = TypeVar("Req", default=Any)
"""The request type of a function: ``TickerContext[Email]``."""


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class TickerContext(Generic[Req]):
    """Passed to a job function that declares a ``ctx: TickerContext[Req]`` parameter.

    It tells the job which ticker it runs for, hands it the validated request,
    and lets it notice cancellation (``ctx.cancelled`` for sync jobs,
    ``await ctx.wait_cancelled()`` for async ones; async jobs are also
    cancelled with ``asyncio.CancelledError``).
    """

    __slots__ = (
        "_app",
        "_cancel_requested",
        "_cancel_waiter",
        "_engine",
        "_loop",
        "_request",
        "_run",
        "cron_ticker_id",
        "function",
        "headers",
        "id",
        "is_due",
        "kind",
        "parent_id",
        "retries",
        "retry_count",
        "scheduled_for",
    )

    def __init__(
        self,
        *,
        app: TickerQ,
        id: UUID,
        function: str,
        kind: TickerKind,
        request: Req,
        retry_count: int,
        scheduled_for: datetime | None,
        is_due: bool,
        cron_ticker_id: UUID | None = None,
        parent_id: UUID | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int = 0,
        engine: LocalEngine | None = None,
    ) -> None:
        self._app = app
        self._engine = engine
        """The engine running this job (None: a context made outside an engine)."""
        self.id = id
        """The time ticker's or cron occurrence's id."""
        self.function = function
        """The function's registered name."""
        self.kind = kind
        """TIME for a time ticker, CRON_OCCURRENCE for a cron fire."""
        self._request = request
        self.retry_count = retry_count
        """0 on the first attempt, 1 on the first retry, ..."""
        self.scheduled_for = scheduled_for
        """When the run was due (UTC)."""
        self.is_due = is_due
        """True when the run started later than the app's lateness threshold."""
        self.cron_ticker_id = cron_ticker_id
        self.parent_id = parent_id
        self.headers: Mapping[str, str] = MappingProxyType(headers) if headers else _NO_HEADERS
        """The ticker's headers (read-only; empty for cron occurrences)."""
        self.retries = retries
        """Retries the ticker may use in all (``retry_count`` of them are used)."""
        self._loop = loop
        self._cancel_requested = False
        self._cancel_waiter: asyncio.Future[None] | None = None
        self._run: Any = None
        """The engine's record of this run, while middleware wraps it."""

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self.retry_count + 1

    @property
    def retries_left(self) -> int:
        """Retries still to come if this attempt fails (0: it is the last)."""
        return max(self.retries - self.retry_count, 0)

    @property
    def request(self) -> Req:
        """The request, validated and decoded into the function's request type."""
        return self._request

    @property
    def app(self) -> TickerQ:
        """The app running this job, to schedule follow-up work."""
        return self._app

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested (or the run timed out)."""
        return self._cancel_requested

    def raise_if_cancelled(self) -> None:
        """End the run as CANCELLED if cancellation was requested."""
        if self._cancel_requested:
            raise TerminateExecution(Status.CANCELLED, "cancellation requested")

    async def wait_cancelled(self) -> None:
        """Return once cancellation is requested."""
        if self._cancel_requested:
            return
        if self._cancel_waiter is None:
            self._cancel_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._cancel_waiter)

    def skip_if_already_running(self) -> None:
        """End this run as SKIPPED if another run of the same work is in progress.

        "The same work" is the same cron ticker for a cron occurrence, the same
        function for a time ticker.
        """
        if self._engine is not None and self._engine.is_running_elsewhere(self):
            raise TerminateExecution(Status.SKIPPED, "another run is already in progress")

    def _request_cancel(self) -> None:
        """Engine side: mark cancelled and wake ``wait_cancelled``; loop thread only."""
        self._cancel_requested = True
        waiter = self._cancel_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        return f"TickerContext(function={self.function!r}, id={self.id}, kind={self.kind.name})"

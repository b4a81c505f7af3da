"""Hooks an app calls when a job fails or a ticker is cancelled.

- ``@app.on_exception``: every failed attempt, ``handler(ctx, error)`` or
  ``handler(ctx, error, failure)`` where ``failure`` (:class:`Failure`) says
  whether it was the last attempt.
- ``@app.on_final_failure``: ``handler(ctx, error)`` once per ticker, when its
  last attempt failed (no retry left).
- ``@app.on_cancel``: ``handler(cancellation)`` once per ticker, when it ends
  CANCELLED: in the process that cancelled a waiting ticker, or on the node
  whose running job stopped for it.

Handlers may be plain or ``async def``; one that raises is logged and ignored.
Runs that end without a job to call (a node that died past the lost-run limit,
``rerun_lost=False``) are ended by the store and call no hook.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.enums import TickerKind
from tickerq.errors import InvalidArgumentError

if TYPE_CHECKING:
    from tickerq.context import TickerContext

__all__ = ["Cancellation", "Failure", "Hooks"]

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt means for its ticker."""

    final: bool
    """No retry is left: the ticker ends FAILED."""
    attempt: int
    """1 for the first attempt, 2 for the first retry, ..."""
    retries_left: int
    """Retries still to come (0 when final)."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A ticker that ended CANCELLED."""

    id: UUID
    kind: TickerKind
    function: str
    was_running: bool
    """True when a running job stopped for it, False when it was waiting."""


def _arity(handler: Handler) -> int:
    """How many positional arguments ``handler`` takes (at most 3 counted)."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 2
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return 3
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class Hooks:
    """The app's hooks; the engine and the managers call them."""

    __slots__ = ("_exception", "_exception_arity", "cancel", "final_failure")

    def __init__(self, exception: Handler | None = None) -> None:
        self._exception: Handler | None = None
        self._exception_arity = 2
        self.exception = exception
        self.final_failure: Handler | None = None
        """``handler(ctx, error)`` once per ticker that ends FAILED."""
        self.cancel: Handler | None = None
        """``handler(cancellation)`` once per ticker that ends CANCELLED."""

    @property
    def exception(self) -> Handler | None:
        """``handler(ctx, error[, failure])`` for every failed attempt."""
        return self._exception

    @exception.setter
    def exception(self, handler: Handler | None) -> None:
        if handler is not None and not callable(handler):
            raise InvalidArgumentError(f"an exception handler must be callable, got {handler!r}")
        self._exception = handler
        self._exception_arity = 2 if handler is None else _arity(handler)

    async def failed(self, ctx: TickerContext[Any], error: BaseException, failure: Failure) -> bool:
        """Call the exception handler; False when there is none."""
        handler = self._exception
        if handler is None:
            return False
        if self._exception_arity >= 3:
            await _call(handler, "exception handler", ctx, error, failure)
        else:
            await _call(handler, "exception handler", ctx, error)
        return True

    async def failed_finally(self, ctx: TickerContext[Any], error: BaseException) -> None:
        """A ticker's last attempt failed."""
        if self.final_failure is not None:
            await _call(self.final_failure, "final-failure hook", ctx, error)

    async def cancelled(self, cancellation: Cancellation) -> None:
        """A ticker ended CANCELLED."""
        if self.cancel is not None:
            await _call(self.cancel, "cancel hook", cancellation)


async def _call(handler: Handler, what: str, *args: Any) -> None:
    try:
        result = handler(*args)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        logger.exception("the %s %r failed", what, handler)

"""Middleware: code around every enqueue and every run, composed like ASGI middleware.

A middleware is any object with one or both of::

    async def on_enqueue(self, ticker: TimeTicker, call_next) -> TimeTicker
    async def on_execute(self, ctx: TickerContext, call_next) -> Any

``on_enqueue`` sees each time ticker before it is stored (it may return
``await call_next(ticker.evolve(headers=...))`` to add headers) and gets back
the stored ticker. ``on_execute`` runs around each attempt of a job, async or
sync (a sync job's thread is awaited inside ``call_next``); ``call_next(ctx)``
returns the job's return value or raises its error. Middleware given to
``TickerQ(middleware=[...])`` or ``app.add_middleware(m)`` wraps every
function, outermost first; ``@app.function(middleware=[...])`` adds more
inside those, for that function only. Subclassing :class:`Middleware` is
optional: it only provides pass-through methods.

Cron occurrences are made by the engine, not enqueued: ``on_execute`` sees
their runs, ``on_enqueue`` does not see them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from tickerq.errors import InvalidArgumentError

if TYPE_CHECKING:
    from tickerq.context import TickerContext
    from tickerq.models import TimeTicker

__all__ = [
    "EnqueueNext",
    "ExecuteNext",
    "Middleware",
    "check_middleware",
    "enqueue_chain",
    "execute_chain",
]

EnqueueNext = Callable[["TimeTicker"], Awaitable["TimeTicker"]]
"""What ``on_enqueue`` calls to go on: stores the ticker, returns it as stored."""
ExecuteNext = Callable[["TickerContext[Any]"], Awaitable[Any]]
"""What ``on_execute`` calls to go on: runs the job, returns its return value."""

_HOOKS = ("on_enqueue", "on_execute")


class Middleware:
    """Optional base class: both hooks pass through; override one or both."""

    async def on_enqueue(self, ticker: TimeTicker, call_next: EnqueueNext) -> TimeTicker:
        """Around storing a new time ticker."""
        return await call_next(ticker)

    async def on_execute(self, ctx: TickerContext[Any], call_next: ExecuteNext) -> Any:
        """Around one attempt of a job."""
        return await call_next(ctx)


def _hook(middleware: object, name: str) -> Callable[..., Awaitable[Any]] | None:
    """The middleware's ``name`` hook, or None when it has none (or only inherits
    :class:`Middleware`'s pass-through, which would cost a call for nothing)."""
    method = getattr(type(middleware), name, None)
    if method is None or method is getattr(Middleware, name):
        return None
    hook: Callable[..., Awaitable[Any]] = getattr(middleware, name)
    return hook


def check_middleware(middleware: object) -> object:
    """``middleware`` itself; InvalidArgumentError naming it when it is not one."""
    found = False
    for name in _HOOKS:
        method = getattr(middleware, name, None)
        if method is None:
            continue
        if not inspect.iscoroutinefunction(method):
            raise InvalidArgumentError(
                f"middleware {middleware!r}: {name} must be an `async def` method"
            )
        found = True
    if not found and not isinstance(middleware, Middleware):
        raise InvalidArgumentError(
            f"{middleware!r} is not a middleware: it has neither on_enqueue nor on_execute"
        )
    return middleware


def _compose(
    middleware: Sequence[object], name: str, terminal: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    call_next = terminal
    for m in reversed(middleware):
        hook = _hook(m, name)
        if hook is not None:
            call_next = _link(hook, call_next)
    return call_next


def _link(
    hook: Callable[..., Awaitable[Any]], call_next: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    async def call(value: Any) -> Any:
        return await hook(value, call_next)

    return call


def enqueue_chain(middleware: Sequence[object], terminal: EnqueueNext) -> EnqueueNext:
    """``terminal`` wrapped in the ``on_enqueue`` hooks, the first outermost."""
    return _compose(middleware, "on_enqueue", terminal)


def execute_chain(middleware: Sequence[object], terminal: ExecuteNext) -> ExecuteNext:
    """``terminal`` wrapped in the ``on_execute`` hooks, the first outermost."""
    return _compose(middleware, "on_execute", terminal)

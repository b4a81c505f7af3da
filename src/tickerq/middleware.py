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
    "Pipeline",
    "check_middleware",
    "compose",
    "run_chain",
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


Hook = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
"""One middleware's bound ``on_enqueue`` or ``on_execute``."""


class _Link:
    """One hook bound to what comes after it: calling it starts the hook's coroutine
    (no coroutine frame of its own, so a chain costs only its hooks' frames)."""

    __slots__ = ("call_next", "hook")

    def __init__(self, hook: Hook, call_next: Callable[[Any], Awaitable[Any]]) -> None:
        self.hook = hook
        self.call_next = call_next

    def __call__(self, value: Any) -> Awaitable[Any]:
        return self.hook(value, self.call_next)


def compose(
    hooks: Sequence[Hook], terminal: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    """``terminal`` wrapped in ``hooks``, the first outermost (``terminal`` itself
    when there are none)."""
    call = terminal
    for hook in reversed(hooks):
        call = _Link(hook, call)
    return call


def run_chain(
    hooks: Sequence[Hook], value: Any, terminal: Callable[[Any], Awaitable[Any]]
) -> Awaitable[Any]:
    """``terminal(value)`` called through ``hooks``, the first outermost."""
    return compose(hooks, terminal)(value)


class Pipeline:
    """The app's middleware and each function's: what the managers (enqueue) and
    the engine (runs) go through. The hooks of a function are looked up once and
    kept until the app's list changes; a function without any is called directly.
    """

    __slots__ = ("_enqueue", "_execute", "_middleware", "_of_function", "chains")

    def __init__(
        self,
        middleware: Sequence[object] = (),
        of_function: Callable[[str], Sequence[object]] | None = None,
    ) -> None:
        self._middleware = [check_middleware(m) for m in middleware]
        self._of_function = of_function
        """The middleware given to ``@app.function(middleware=...)``, by name."""
        self._enqueue: dict[str, tuple[Hook, ...]] = {}
        self._execute: dict[str, tuple[Hook, ...]] = {}
        self.chains: dict[str, Callable[[Any], Awaitable[Any]] | None] = {}
        """The chains composed so far, by function (emptied by :meth:`forget`): the
        engine looks a run's chain up here and calls :meth:`execute_chain` only for
        a function not in it. Read-only for others."""

    @property
    def middleware(self) -> tuple[object, ...]:
        """The app-wide middleware, outermost first."""
        return tuple(self._middleware)

    def add(self, middleware: object) -> None:
        """Add app-wide middleware, inside those added before."""
        self._middleware.append(check_middleware(middleware))
        self.forget()

    def forget(self) -> None:
        """Look the hooks up again (a function was registered or the list changed)."""
        self._enqueue.clear()
        self._execute.clear()
        self.chains.clear()

    def _hooks(self, function: str, name: str) -> tuple[Hook, ...]:
        own = self._of_function(function) if self._of_function is not None else ()
        found = (_hook(m, name) for m in (*self._middleware, *own))
        return tuple(h for h in found if h is not None)

    def enqueue_hooks(self, function: str) -> tuple[Hook, ...]:
        """The ``on_enqueue`` hooks an enqueue of ``function`` goes through."""
        hooks = self._enqueue.get(function)
        if hooks is None:
            hooks = self._enqueue[function] = self._hooks(function, "on_enqueue")
        return hooks

    def execute_hooks(self, function: str) -> tuple[Hook, ...]:
        """The ``on_execute`` hooks a run of ``function`` goes through."""
        hooks = self._execute.get(function)
        if hooks is None:
            hooks = self._execute[function] = self._hooks(function, "on_execute")
        return hooks

    def execute_chain(
        self, function: str, terminal: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[Any], Awaitable[Any]] | None:
        """``function``'s runs composed once around ``terminal``, or None when it has
        no ``on_execute`` hook. The chain is kept per function: ``terminal`` must
        do the same every time (the engine's: it runs ``ctx``'s job)."""
        try:
            return self.chains[function]
        except KeyError:
            hooks = self.execute_hooks(function)
            chain = self.chains[function] = compose(hooks, terminal) if hooks else None
            return chain

"""The application object: :class:`TickerQ`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from tickerq.clock import Clock, SystemClock
from tickerq.cron import parse_timezone
from tickerq.engine import Engine, EngineOptions
from tickerq.errors import (
    InvalidArgumentError,
    RegistrationError,
    TickerStateError,
)
from tickerq.events import EventBus
from tickerq.functions import FunctionRegistry, TickerFunction, TickerRouter, _Registrar
from tickerq.hooks import Cancellation, Hooks
from tickerq.limits import RateLimit, as_rate_limit
from tickerq.managers import CronTickerManager, PauseManager, TimeTickerManager
from tickerq.middleware import Pipeline
from tickerq.pausing import PauseView
from tickerq.stores import Store, mask_password, open_store
from tickerq.validation import check_name

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from tickerq.context import Req, TickerContext
    from tickerq.dashboard.auth import AuthCallable, PermissionsSpec
    from tickerq.models import TimeTicker
    from tickerq.sync import SyncTickerQ
    from tickerq.unique import OnConflict

__all__ = ["CancelHandler", "ExceptionHandler", "FinalFailureHandler", "TickerQ"]

logger = logging.getLogger(__name__)

ExceptionHandler = Callable[..., Awaitable[None] | None]
"""Called with the context and the error of every failed attempt (and, if it takes a
third argument, the :class:`tickerq.hooks.Failure`)."""
FinalFailureHandler = Callable[["TickerContext[Any]", BaseException], Awaitable[None] | None]
"""Called once per ticker whose last attempt failed."""
CancelHandler = Callable[[Cancellation], Awaitable[None] | None]
"""Called once per ticker that ends CANCELLED."""


class TickerQ(_Registrar):
    """A tickerq application: functions, a store and the engine that runs them.

    ``TickerQ()`` keeps everything in memory; ``TickerQ("sqlite:///jobs.db")``
    or ``TickerQ("postgresql://...")`` persist it. Register functions with
    ``@app.function(...)``, then ``async with app:`` (or ``app.run()``) runs
    the engine.
    """

    def __init__(
        self,
        store: str | Store = "memory://",
        *,
        node_id: str | None = None,
        max_concurrency: int = 16,
        timezone: str = "UTC",
        clock: Clock | None = None,
        options: EngineOptions | None = None,
        exception_handler: ExceptionHandler | None = None,
        seed_crons: bool = True,
        max_payload_bytes: int = 1_000_000,
        auto_upgrade: bool = False,
        middleware: Sequence[object] = (),
        limits: Mapping[str, RateLimit | str] | None = None,
        rate_limit: RateLimit | str | None = None,
    ) -> None:
        super().__init__()
        named, app_wide = _rate_limits(limits, rate_limit)
        _check_concurrency(max_concurrency)
        self._auto_upgrade = auto_upgrade
        self.store = (
            open_store(store, auto_upgrade=auto_upgrade) if isinstance(store, str) else store
        )
        self.store_url = mask_password(store) if isinstance(store, str) else type(store).__name__
        """Where the tickers live (without any password)."""
        self.node_id = check_name(node_id or f"{socket.gethostname()}-{os.getpid()}", "node_id")
        self.max_concurrency = max_concurrency
        self.timezone = str(parse_timezone(timezone))
        self.clock: Clock = clock or SystemClock()
        self.seed_crons = seed_crons
        self.events = EventBus()
        """This process's events and the notices of every node (see tickerq.events)."""
        self.store.bind_events(self.events)
        self._registry = FunctionRegistry(self._functions, max_payload_bytes=max_payload_bytes)
        self._pipeline = Pipeline(middleware, self._middleware_of)
        self._hooks = Hooks(exception_handler)
        self.engine = Engine(
            self.store,
            self.clock,
            self._functions,
            self.events,
            options or EngineOptions(),
            node_id=self.node_id,
            max_concurrency=max_concurrency,
            hooks=self._hooks,
            pipeline=self._pipeline,
            max_result_bytes=max_payload_bytes,
            named_limits=named,
            app_rate_limit=app_wide,
            app=self,
        )
        self.time_tickers = TimeTickerManager(
            self.store,
            self.clock,
            self._registry,
            self.engine,
            pipeline=self._pipeline,
            hooks=self._hooks,
            bus=self.events,
        )
        """Add, change and inspect time tickers."""
        self.cron_tickers = CronTickerManager(
            self.store,
            self.clock,
            self._registry,
            self.engine,
            timezone=self.timezone,
            hooks=self._hooks,
        )
        """Add, change and inspect cron tickers."""
        self.pauses = PauseManager(
            self.store, self.clock, self._registry, self.engine, node_id=self.node_id
        )
        """Pause and resume functions, or the whole cluster, on every node."""
        self._opened = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncTickerQ | None = None

    def configure(
        self,
        *,
        store: str | Store | None = None,
        node_id: str | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Change, before the app opens, where it keeps its tickers, its node id or
        how many jobs it runs at once (``tickerq run --store/--node-id/--concurrency``
        and the ``TICKERQ_*`` variables do this to the app they load). Each value
        is checked as :class:`TickerQ` checks it; None keeps the current one."""
        if self._opened or self.engine.running:
            raise TickerStateError(
                "configure() changes an app before it opens; this one is open already"
            )
        if max_concurrency is not None:
            _check_concurrency(max_concurrency)
        new_id = None if node_id is None else check_name(node_id, "node_id")
        new_store = None
        if store is not None:
            new_store = (
                open_store(store, auto_upgrade=self._auto_upgrade)
                if isinstance(store, str)
                else store
            )
        # all checked: change
        if max_concurrency is not None:
            self.max_concurrency = self.engine.max_concurrency = max_concurrency
        if new_id is not None:
            self.node_id = self.engine.node_id = self.pauses._node_id = new_id
        if new_store is not None:
            assert store is not None
            self.store = new_store
            self.store_url = (
                mask_password(store) if isinstance(store, str) else type(store).__name__
            )
            new_store.bind_events(self.events)
            self.engine.store = new_store
            self.engine.stored_pauses = PauseView(new_store)
            for manager in (self.time_tickers, self.cron_tickers, self.pauses):
                manager._store = new_store

    # -- registration -----------------------------------------------------------------

    def _register(self, handle: TickerFunction[Any]) -> None:
        wanted = handle.options.rate_limit
        if isinstance(wanted, str) and wanted not in self.engine.named_limits:
            known = ", ".join(sorted(self.engine.named_limits)) or "none"
            raise RegistrationError(
                handle.name,
                f"rate_limit {wanted!r} is not one of the app's limits (known: {known}); "
                "give TickerQ(limits={...}) or a rate like '100/m'",
            )
        super()._register(handle)
        if self._functions.get(handle.name) is handle:
            handle._app = self
            self._pipeline.forget()

    def _middleware_of(self, function: str) -> Sequence[object]:
        fn = self._functions.get(function)
        return () if fn is None else fn.options.middleware

    # -- middleware and hooks ---------------------------------------------------------

    @property
    def middleware(self) -> tuple[object, ...]:
        """The app-wide middleware, outermost first (see :mod:`tickerq.middleware`)."""
        return self._pipeline.middleware

    def add_middleware(self, middleware: object) -> None:
        """Add middleware around every enqueue and run, inside the middleware added
        before (``TickerQ(middleware=[...])`` gives the outermost)."""
        self._pipeline.add(middleware)

    def on_final_failure(self, handler: FinalFailureHandler) -> FinalFailureHandler:
        """Decorator: call ``handler(ctx, error)`` once per ticker whose last attempt failed."""
        self._hooks.final_failure = handler
        return handler

    def on_cancel(self, handler: CancelHandler) -> CancelHandler:
        """Decorator: call ``handler(cancellation)`` once per ticker that ends CANCELLED
        (see :class:`tickerq.hooks.Cancellation`)."""
        self._hooks.cancel = handler
        return handler

    def include_router(self, router: TickerRouter) -> None:
        """Register every function of ``router`` in this app (all or none on a clash)."""
        handles = list(router.functions.values())
        for handle in handles:
            existing = self._functions.get(handle.name)
            if existing is not None and existing is not handle:
                where = f"{existing.func.__module__}.{existing.func.__qualname__}"
                raise RegistrationError(handle.name, f"the name is already registered (by {where})")
        for handle in handles:
            self._register(handle)

    @overload
    async def enqueue(
        self,
        function: TickerFunction[Req],
        request: Req | None = None,
        *,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker: ...

    @overload
    async def enqueue(
        self,
        function: str,
        request: Any = None,
        *,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker: ...

    async def enqueue(
        self,
        function: TickerFunction[Any] | str,
        request: Any = None,
        *,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """Add a time ticker of ``function`` that runs as soon as a slot is free.

        ``function`` is a function's handle or its name. A name registered here is
        checked here, as ``fn.enqueue`` does. A process without the job code (a web
        app that only schedules) may name a function the cluster knows (a worker
        reported it, or a cron ticker or time tickers use it): ``request`` is
        stored as plain JSON and checked where the function is registered; a
        worker that cannot validate it fails the ticker without retries. What is
        stored with a ticker comes from here, not from the function's registration
        (the producer cannot see it): NORMAL priority, and the retries and timeout
        given here (none by default); no per-key concurrency key. An unknown name
        raises FunctionNotFoundError.
        The other arguments are those of ``fn.enqueue``."""
        return await self.schedule(
            function,
            request,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    @overload
    async def schedule(
        self,
        function: TickerFunction[Req],
        request: Req | None = None,
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker: ...

    @overload
    async def schedule(
        self,
        function: str,
        request: Any = None,
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker: ...

    async def schedule(
        self,
        function: TickerFunction[Any] | str,
        request: Any = None,
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """Add a time ticker of ``function`` due ``at`` an aware datetime or ``after``
        a delay (now when neither is given); ``function`` a handle or a name, as in
        :meth:`enqueue`."""
        if isinstance(function, TickerFunction):
            name = function.name
        elif isinstance(function, str):
            name = function
        else:
            raise InvalidArgumentError(
                f"function must be a registered function or its name, got {function!r:.80}"
            )
        return await self.time_tickers.add(
            name,
            request=request,
            execution_time=at,
            after=after,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            allow_unregistered=name not in self._functions,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    @property
    def opened(self) -> bool:
        """Whether the app is open (between :meth:`open` or :meth:`start` and :meth:`stop`)."""
        return self._opened

    def get_function(self, name: str) -> TickerFunction[Any]:
        """The function registered as ``name``; raises FunctionNotFoundError."""
        return self._registry.get(name)

    def encode_request(self, function: str, request: Any) -> Any:
        """Validate ``request`` for ``function`` and check its size; the stored form."""
        return self._registry.encode_request(function, request)

    @property
    def max_payload_bytes(self) -> int:
        """Requests larger than this (as JSON) are refused when scheduled (0: no limit)."""
        return self._registry.max_payload_bytes

    @max_payload_bytes.setter
    def max_payload_bytes(self, value: int) -> None:
        self._registry.max_payload_bytes = value
        self.engine.max_result_bytes = value  # results have the same limit

    @property
    def exception_handler(self) -> ExceptionHandler | None:
        """Called with the context and the error of every failed attempt."""
        return self.engine.exception_handler

    @exception_handler.setter
    def exception_handler(self, handler: ExceptionHandler | None) -> None:
        self.engine.exception_handler = handler

    def on_exception(self, handler: ExceptionHandler) -> ExceptionHandler:
        """Decorator: call ``handler(ctx, error)`` for every failed attempt, or
        ``handler(ctx, error, failure)`` to be told whether it was the last one
        (:class:`tickerq.hooks.Failure`). The handler then reports failures: the
        engine logs no retry WARNING or final-failure ERROR of its own."""
        self.exception_handler = handler
        return handler

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the store (done by start; enough for scheduling without running)."""
        if not self._opened:
            await self.store.open()
            self._opened = True
            self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        """Open the store, seed decorator crons, start the engine."""
        await self.open()
        if self.seed_crons:
            await self._seed()
        await self.engine.start()
        logger.info(
            "tickerq node %s started: %d function(s), max_concurrency=%d",
            self.node_id,
            len(self._functions),
            self.max_concurrency,
            extra={"action": "node_started", "node": self.node_id},
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop the engine (see Engine.stop) and close the store."""
        engine = self.engine
        running = engine.running
        if running:
            wait = engine.options.grace_period if grace is None else grace
            logger.info(
                "tickerq node %s stopping: %d running job(s) get %g s to finish",
                self.node_id,
                engine.active,
                wait,
                extra={"action": "node_stopping", "node": self.node_id},
            )
        await engine.stop(grace)
        if running:
            logger.info(
                "tickerq node %s stopped",
                self.node_id,
                extra={"action": "node_stopped", "node": self.node_id},
            )
        if self._opened:
            await self.store.close()
            self._opened = False
            self._loop = None

    async def _seed(self) -> None:
        """Make the seeded cron tickers match the ``cron=`` of this app's functions.

        Code owns them: a changed expression, timezone, misfire policy or retry plan
        updates the ticker in place; the ticker of a function that no longer
        declares a cron (or is no longer registered) goes, with its waiting
        occurrences. An app without any function (a process that only enqueues
        elsewhere, the dashboard) leaves them alone.
        """
        if not self._functions:
            return
        declared = [
            self.cron_tickers.build(
                fn.name,
                fn.options.cron,
                timezone=fn.options.cron_timezone,
                retries=fn.options.retries,
                retry_intervals=fn.options.retry_intervals,
                misfire=fn.options.misfire,
                seeded=True,
            )
            for fn in self._functions.values()
            if fn.options.cron is not None
        ]
        result = await self.store.reconcile_seeded_crons(declared)
        for action, functions in (
            ("created", result.created),
            ("updated", result.updated),
            ("removed", result.removed),
        ):
            for function in functions:
                logger.info(
                    "seeded cron of %s %s",
                    function,
                    action,
                    extra={"action": f"seed_{action}", "function": function},
                )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve(self) -> None:
        """Run until cancelled or SIGINT/SIGTERM, then stop gracefully (within the
        grace period and stop margin; a second signal interrupts running jobs at once)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []

        def on_signal(sig: signal.Signals) -> None:
            again = stop.is_set()
            logger.info(
                "%s received: %s",
                sig.name,
                "interrupting running jobs" if again else "stopping gracefully",
                extra={"action": "stop_requested", "signal": sig.name, "node": self.node_id},
            )
            if again:
                self.engine.hurry()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            async with self:
                await stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def run(self) -> None:
        """Block running the engine until SIGINT/SIGTERM."""
        asyncio.run(self.serve())

    def pause(self) -> None:
        """Stop this process's engine from claiming new work; running jobs go on.

        This node only, and not stored (a restart forgets it): to pause a function
        or all work on every node, use :attr:`pauses` (``await
        app.pauses.pause("name")``, ``await app.pauses.pause_cluster()``).
        """
        self.engine.pause()

    def resume(self) -> None:
        """Let this process's engine claim work again (undoes :meth:`pause`; the
        stored pauses of :attr:`pauses` still hold)."""
        self.engine.resume()

    @property
    def paused(self) -> bool:
        """True while this process's engine is paused by :meth:`pause`."""
        return self.engine.paused

    def dashboard(
        self,
        *,
        auth: AuthCallable | None = None,
        permissions: PermissionsSpec = None,
        base_path: str = "",
        redact: Callable[[str, Any], Any] | None = None,
        title: str = "tickerq",
        allowed_origins: Sequence[str] = (),
        metrics: bool = False,
        stream_max_age: float = 15.0,
    ) -> Starlette:
        """The web dashboard of this app: an ASGI app to mount (see tickerq.dashboard).

        Without ``auth`` only loopback clients get in. ``auth`` is a
        ``BasicAuth``, a ``BearerAuth`` or a callable ``auth(request) -> user | None``;
        ``permissions`` limits what users may do (view, operate, edit, delete);
        ``redact(function, payload)`` hides parts of payloads. ``metrics=True`` serves
        the Prometheus metrics at ``/metrics`` (needs ``tickerq[prometheus]``).
        ``/api/healthz`` and ``/api/readyz`` answer without credentials.
        ``stream_max_age``: seconds a page's live-update stream lasts before the
        browser opens the next (the most a graceful shutdown waits for it).
        """
        from tickerq.dashboard import create_dashboard

        return create_dashboard(
            self,
            auth=auth,
            permissions=permissions,
            base_path=base_path,
            redact=redact,
            title=title,
            allowed_origins=allowed_origins,
            metrics=metrics,
            stream_max_age=stream_max_age,
        )

    def wake_engine(self, due: datetime | None) -> None:
        """Tell the engine that work became due at ``due`` (None: look now)."""
        if self.engine.running:
            self.engine.wake(due)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the app is open on (None while closed); ``app.sync`` calls go there."""
        return self._loop

    @property
    def sync(self) -> SyncTickerQ:
        """A blocking facade for code that is not async (scripts, Django, Flask)."""
        if self._sync is None:
            from tickerq.sync import SyncTickerQ

            self._sync = SyncTickerQ(self)
        return self._sync


def _rate_limits(
    limits: Mapping[str, RateLimit | str] | None, rate_limit: RateLimit | str | None
) -> tuple[dict[str, RateLimit], RateLimit | None]:
    """The app's named rate limits and its app-wide one, checked."""
    named: dict[str, RateLimit] = {}
    if limits is not None:
        if not isinstance(limits, Mapping):
            raise InvalidArgumentError(
                f"limits must be a mapping of names to rate limits, got {limits!r:.80}"
            )
        for name, value in limits.items():
            named[check_name(name, "rate limit name")] = as_rate_limit(value, f"limits[{name!r}]")
    app_wide = None if rate_limit is None else as_rate_limit(rate_limit, "rate_limit")
    return named, app_wide


def _check_concurrency(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"max_concurrency must be an integer >= 1, got {value!r}")

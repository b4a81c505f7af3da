"""A blocking facade over the async app, for scripts, Django, Flask.

Every call runs on the event loop that owns the app and waits for its result;
there is no second copy of the engine. The owner is the loop the app was
opened on (``async with app``, ``app.start()`` or ``app.sync.start()``, in any
thread); while the app is closed, calls run on a loop the facade keeps in a
background thread. Get it as ``app.sync`` (or ``fn.sync`` for one function)::

    app.sync.start()                      # engine runs in a background thread
    app.sync.enqueue(send_email, Email(to="a@b.c"))
    send_email.sync.schedule(Email(to="a@b.c"), after=60)
    app.sync.time_tickers.get(ticker_id)  # every manager method, blocking
    app.sync.stop()

A blocking call made on the owner loop's own thread (from async code) would
wait for itself forever: it raises :class:`TickerQError` instead.

On a store whose calls never wait (the memory store), ``enqueue`` and
``schedule`` do not wait for the loop: the ticker is built and checked in the
calling thread (a bad request raises there), then handed to the loop, which
stores the tickers handed over meanwhile in one batch. It is stored before any
later call made through the facade runs; at most :data:`MAX_HANDED_OVER` wait
to be stored, after which callers wait for the loop. A thread hand-off per call
would otherwise cost several times the enqueue itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from tickerq.context import Req
from tickerq.errors import TickerQError, TickerStateError
from tickerq.managers import CronTickerManager, PauseManager, TimeTickerManager, TimeTickerSpec
from tickerq.managers._common import NOT_OPEN

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.functions import TickerFunction
    from tickerq.models import TimeTicker
    from tickerq.unique import OnConflict

__all__ = [
    "MAX_HANDED_OVER",
    "SyncCronTickers",
    "SyncFunction",
    "SyncPauses",
    "SyncTickerQ",
    "SyncTimeTickers",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M")
P = ParamSpec("P")

_POLL = 0.25
"""Seconds between checks that the owner loop still runs, while waiting for a call."""

MAX_HANDED_OVER = 256
"""Tickers enqueued through the facade that may wait to be stored (on a store whose
calls never wait); one batch holds the loop for well under 10 ms."""


def _discard(awaitable: Awaitable[object]) -> None:
    """Close a coroutine that will never run (no 'never awaited' warning)."""
    if isinstance(awaitable, Coroutine):
        awaitable.close()


class SyncTickerQ:
    """Blocking access to a :class:`TickerQ`, from any thread but the app's own loop."""

    def __init__(self, app: TickerQ) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handed: list[TimeTicker] = []
        """Tickers built here and handed to the loop, not stored yet."""
        self._handed_lock = threading.Lock()
        self._handed_room = threading.Condition(self._handed_lock)
        self._store_scheduled = False
        self.time_tickers = SyncTimeTickers(self, app.time_tickers)
        """``app.time_tickers`` with blocking methods."""
        self.cron_tickers = SyncCronTickers(self, app.cron_tickers)
        """``app.cron_tickers`` with blocking methods."""
        self.pauses = SyncPauses(self, app.pauses)
        """``app.pauses`` with blocking methods."""

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """The facade's loop in its background thread (started on first use)."""
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name="tickerq-sync", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _target(self) -> asyncio.AbstractEventLoop:
        """The loop that owns the app, else the facade's own."""
        return self.app.loop or self._own_loop()

    def call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop that owns the app and wait for its result.

        Raises :class:`TickerQError` when called on that loop's own thread (it
        would deadlock) or when that loop has ended (closed) with the app still
        open; a loop that is only paused between runs is waited for. On
        ``timeout`` (seconds) the call is cancelled and TimeoutError raised.
        """
        loop = self._target()
        try:
            _check_caller(loop)
        except TickerQError:
            _discard(awaitable)
            raise

        async def run() -> T:
            return await awaitable

        coroutine = run()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # closed meanwhile
            coroutine.close()
            _discard(awaitable)
            raise _loop_gone() from None
        return _wait(future, loop, timeout)

    def open(self) -> None:
        """Open the store without running jobs (a process that only schedules: a web
        app's workers, a script); :meth:`stop` closes it."""
        self.call(self.app.open())

    def start(self) -> None:
        """Start the engine (in the facade's background thread unless a loop owns the app)."""
        self.call(self.app.start())

    def stop(self, grace: float | None = None) -> None:
        """Stop the engine gracefully (on the loop that owns it) and end the facade's thread."""
        if self.app.loop is not None:
            self.call(self.app.stop(grace))
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        if not loop.is_running():
            loop.close()

    @overload
    def enqueue(
        self,
        fn: TickerFunction[Req],
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
    def enqueue(
        self,
        fn: str,
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

    def enqueue(
        self,
        fn: TickerFunction[Any] | str,
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
        """``await fn.enqueue(request, ...)``, blocking (see the module's notes; an
        enqueue with a unique key waits for the loop: its outcome is the store's).
        ``fn`` may be a name, as in ``app.enqueue``."""
        if isinstance(fn, str):
            if fn not in self.app._functions:
                return self.call(
                    self.app.enqueue(
                        fn,
                        request,
                        description=description,
                        retries=retries,
                        retry_intervals=retry_intervals,
                        timeout=timeout,
                        headers=headers,
                        unique_key=unique_key,
                        on_conflict=on_conflict,
                    )
                )
            fn = self.app.get_function(fn)
        if unique_key is not None or not self._hands_over(fn):
            return self.call(
                fn.enqueue(
                    request,
                    description=description,
                    retries=retries,
                    retry_intervals=retry_intervals,
                    timeout=timeout,
                    headers=headers,
                    unique_key=unique_key,
                    on_conflict=on_conflict,
                )
            )
        spec = TimeTickerSpec(
            function=fn.name,
            request=request,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
        )
        return self._hand_over(spec, None)

    @overload
    def schedule(
        self,
        fn: TickerFunction[Req],
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
    def schedule(
        self,
        fn: str,
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

    def schedule(
        self,
        fn: TickerFunction[Any] | str,
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
        """``await fn.schedule(request, at=..., after=...)``, blocking (see the module's
        notes and :meth:`enqueue`)."""
        if isinstance(fn, str):
            if fn not in self.app._functions:
                return self.call(
                    self.app.schedule(
                        fn,
                        request,
                        at=at,
                        after=after,
                        description=description,
                        retries=retries,
                        retry_intervals=retry_intervals,
                        timeout=timeout,
                        headers=headers,
                        unique_key=unique_key,
                        on_conflict=on_conflict,
                    )
                )
            fn = self.app.get_function(fn)
        if unique_key is not None or not self._hands_over(fn):
            return self.call(
                fn.schedule(
                    request,
                    at=at,
                    after=after,
                    description=description,
                    retries=retries,
                    retry_intervals=retry_intervals,
                    timeout=timeout,
                    headers=headers,
                    unique_key=unique_key,
                    on_conflict=on_conflict,
                )
            )
        spec = TimeTickerSpec(
            function=fn.name,
            request=request,
            execution_time=at,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
        )
        return self._hand_over(spec, after)

    def _hands_over(self, fn: TickerFunction[Any]) -> bool:
        """Whether an enqueue of ``fn`` may skip the loop's round trip: on a store that
        adds without suspending (memory), with no enqueue middleware to go through."""
        return bool(getattr(self.app.store, "immediate", False)) and not (
            self.app._pipeline.enqueue_hooks(fn.name)
        )

    def _hand_over(self, spec: TimeTickerSpec, after: timedelta | float | None) -> TimeTicker:
        """Build and check a ticker here; have the loop store it (batched with others)."""
        app = self.app
        if not app.store.is_open:
            raise TickerStateError(NOT_OPEN)
        loop = self._target()
        _check_caller(loop)
        ticker = app.time_tickers._build(spec, app.clock.now(), None, after)
        with self._handed_lock:
            while len(self._handed) >= MAX_HANDED_OVER:
                if loop.is_closed():
                    raise _loop_gone()
                self._handed_room.wait(_POLL)
            self._handed.append(ticker)
            if self._store_scheduled:
                return ticker
            self._store_scheduled = True
        try:
            loop.call_soon_threadsafe(self._store_handed)
        except RuntimeError:  # the loop closed meanwhile
            with self._handed_lock:
                self._store_scheduled = False
                self._handed = [t for t in self._handed if t is not ticker]
            raise _loop_gone() from None
        return ticker

    def _store_handed(self) -> None:
        """On the loop: store the tickers handed over since the last batch, in one call."""
        with self._handed_lock:
            batch, self._handed = self._handed, []
            self._store_scheduled = False
            self._handed_room.notify_all()
        if not batch:
            return
        adding = self.app.store.add_time_tickers(batch)
        try:
            adding.send(None)  # an "immediate" store finishes without suspending
        except StopIteration:
            pass
        except Exception:
            logger.exception("storing %d enqueued ticker(s) failed", len(batch))
            return
        else:
            adding.close()
            logger.error("the store suspended while adding tickers; %d not stored", len(batch))
            return
        due = min((t.execution_time for t in batch if t.execution_time), default=None)
        self.app.wake_engine(due)

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run any awaitable on the app's loop (e.g. ``app.sync.run(app.time_tickers.count())``)."""
        return self.call(awaitable)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _check_caller(loop: asyncio.AbstractEventLoop) -> None:
    """Raise unless the calling thread may wait for ``loop`` (not its own, not closed)."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        raise TickerQError(
            "app.sync cannot be used from inside the app's own event loop (the call "
            "would wait for itself forever); await the async API there instead"
        )
    if loop.is_closed():
        raise _loop_gone()


def _loop_gone() -> TickerQError:
    return TickerQError(
        "the event loop the app was opened on is no longer running (it ended without "
        "stopping the app); stop the app before its loop ends, e.g. with `async with app`"
    )


def _wait(
    future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop, timeout: float | None
) -> T:
    """The result of ``future``; gives up when ``loop`` closes before running it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = _POLL if deadline is None else max(0.0, min(_POLL, deadline - time.monotonic()))
        try:
            return future.result(step)
        except TimeoutError:
            if future.done():  # the call itself raised TimeoutError
                raise
            if deadline is not None and time.monotonic() >= deadline:
                future.cancel()
                raise
            if loop.is_closed() and not future.done():
                future.cancel()
                raise _loop_gone() from None
        except BaseException:
            if not future.done():  # e.g. KeyboardInterrupt while waiting: stop the call
                future.cancel()
            raise


class _Blocking(Generic[M, P, T]):
    """A coroutine method of the wrapped object, as a blocking method of its sync twin.

    ``add = _Blocking(TimeTickerManager.add)`` keeps the method's parameters and
    result type (for type checkers, ``inspect.signature`` and ``help()``).
    """

    def __init__(self, method: Callable[Concatenate[M, P], Coroutine[Any, Any, T]]) -> None:
        self._method = method
        parameters = list(inspect.signature(method).parameters.values())[1:]  # without self
        self._signature = inspect.signature(method).replace(parameters=parameters)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: _SyncTwin[M], owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: _SyncTwin[M] | None, owner: type[Any]) -> Self | Callable[P, T]:
        if obj is None:
            return self
        method, target, portal = self._method, obj._target, obj._portal

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return portal.call(method(target, *args, **kwargs))

        call.__signature__ = self._signature  # type: ignore[attr-defined]
        return call


class _SyncTwin(Generic[M]):
    """Base of the blocking twins: the wrapped object and the facade to run calls on."""

    def __init__(self, portal: SyncTickerQ, target: M) -> None:
        self._portal = portal
        self._target = target


class SyncTimeTickers(_SyncTwin[TimeTickerManager]):
    """``app.time_tickers`` with blocking methods: ``app.sync.time_tickers``."""

    add = _Blocking(TimeTickerManager.add)
    add_many = _Blocking(TimeTickerManager.add_many)
    get = _Blocking(TimeTickerManager.get)
    update = _Blocking(TimeTickerManager.update)
    delete = _Blocking(TimeTickerManager.delete)
    delete_many = _Blocking(TimeTickerManager.delete_many)
    cancel = _Blocking(TimeTickerManager.cancel)
    retry = _Blocking(TimeTickerManager.retry)
    update_many = _Blocking(TimeTickerManager.update_many)
    cancel_many = _Blocking(TimeTickerManager.cancel_many)
    retry_many = _Blocking(TimeTickerManager.retry_many)
    query = _Blocking(TimeTickerManager.query)
    count = _Blocking(TimeTickerManager.count)
    attempts = _Blocking(TimeTickerManager.attempts)
    wait = _Blocking(TimeTickerManager.wait)


class SyncCronTickers(_SyncTwin[CronTickerManager]):
    """``app.cron_tickers`` with blocking methods: ``app.sync.cron_tickers``."""

    add = _Blocking(CronTickerManager.add)
    get = _Blocking(CronTickerManager.get)
    update = _Blocking(CronTickerManager.update)
    delete = _Blocking(CronTickerManager.delete)
    enable = _Blocking(CronTickerManager.enable)
    disable = _Blocking(CronTickerManager.disable)
    run_now = _Blocking(CronTickerManager.run_now)
    occurrences = _Blocking(CronTickerManager.occurrences)
    get_occurrence = _Blocking(CronTickerManager.get_occurrence)
    cancel_occurrence = _Blocking(CronTickerManager.cancel_occurrence)
    retry_occurrence = _Blocking(CronTickerManager.retry_occurrence)
    cancel_occurrences = _Blocking(CronTickerManager.cancel_occurrences)
    retry_occurrences = _Blocking(CronTickerManager.retry_occurrences)
    query = _Blocking(CronTickerManager.query)
    attempts = _Blocking(CronTickerManager.attempts)


class SyncPauses(_SyncTwin[PauseManager]):
    """``app.pauses`` with blocking methods: ``app.sync.pauses``."""

    pause = _Blocking(PauseManager.pause)
    resume = _Blocking(PauseManager.resume)
    pause_cluster = _Blocking(PauseManager.pause_cluster)
    resume_cluster = _Blocking(PauseManager.resume_cluster)
    get = _Blocking(PauseManager.get)
    query = _Blocking(PauseManager.query)


class SyncFunction(Generic[Req]):
    """A function's ``enqueue`` and ``schedule``, blocking: ``fn.sync``."""

    def __init__(self, fn: TickerFunction[Req]) -> None:
        self._fn = fn

    def enqueue(
        self,
        request: Req | None = None,
        *,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """``await fn.enqueue(request, ...)``, blocking."""
        return self._fn.app.sync.enqueue(
            self._fn,
            request,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    def schedule(
        self,
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
    ) -> TimeTicker:
        """``await fn.schedule(request, at=..., after=...)``, blocking."""
        return self._fn.app.sync.schedule(
            self._fn,
            request,
            at=at,
            after=after,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

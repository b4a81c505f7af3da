"""A blocking facade over the async app, for scripts, Django, Flask.

It runs the one async core on an event loop in a background thread and hands
each call to it; there is no second copy of the engine. Get it as
``app.sync``::

    app.sync.start()                      # engine runs in the background
    app.sync.enqueue(send_email, Email(to="a@b.c"))
    app.sync.time_tickers.get(ticker_id)  # any manager method, blocking
    app.sync.stop()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from tickerq.errors import TickerQError

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.context import Req
    from tickerq.functions import TickerFunction
    from tickerq.models import TimeTicker

__all__ = ["SyncTickerQ"]

T = TypeVar("T")


class _BlockingProxy:
    """Every coroutine method of the wrapped object, as a blocking call."""

    def __init__(self, portal: SyncTickerQ, target: object) -> None:
        self._portal = portal
        self._target = target

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(method(*args, **kwargs))

        call.__doc__ = method.__doc__
        return call


class SyncTickerQ:
    """Blocking access to a :class:`TickerQ`; the engine runs in a background thread."""

    def __init__(self, app: TickerQ) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.time_tickers: Any = _BlockingProxy(self, app.time_tickers)
        """``app.time_tickers`` with blocking methods."""
        self.cron_tickers: Any = _BlockingProxy(self, app.cron_tickers)
        """``app.cron_tickers`` with blocking methods."""

    def _portal(self) -> asyncio.AbstractEventLoop:
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

    def call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``awaitable`` on the app's loop and wait for its result."""
        loop = self._portal()
        if threading.current_thread() is self._thread:
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            raise TickerQError("app.sync cannot be used from inside the app's own event loop")

        async def run() -> T:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(timeout)

    def start(self) -> None:
        """Start the engine in the background thread."""
        self.call(self.app.start())

    def stop(self, grace: float | None = None) -> None:
        """Stop the engine gracefully and end the background thread."""
        loop = self._loop
        if loop is None:
            return
        self.call(self.app.stop(grace))
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()
        self._loop = None
        self._thread = None

    def enqueue(
        self, fn: TickerFunction[Req], request: Req | None = None, **options: Any
    ) -> TimeTicker:
        """``await fn.enqueue(request, ...)``, blocking."""
        return self.call(fn.enqueue(request, **options))

    def schedule(
        self,
        fn: TickerFunction[Req],
        request: Req | None = None,
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
        **options: Any,
    ) -> TimeTicker:
        """``await fn.schedule(request, at=..., after=...)``, blocking."""
        return self.call(fn.schedule(request, at=at, after=after, **options))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run any coroutine on the app's loop (e.g. ``app.sync.run(app.time_tickers.count())``)."""
        return self.call(coroutine)

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

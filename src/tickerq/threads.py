"""Threads for sync jobs: daemon threads whose results come back to the event loop.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter
exits, so one sync job stuck in a thread keeps a stopped worker alive forever
(SIGTERM could not end it). A thread cannot be killed; a daemon thread at least
dies with the process. The engine bounds how many jobs run at once, so the pool
only reuses threads; it never queues more work than it has threads for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonPool", "run_in_thread"]

_Work = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class DaemonPool:
    """Up to ``size`` daemon threads running calls handed to :meth:`run`."""

    def __init__(self, size: int, prefix: str) -> None:
        self._size = max(size, 1)
        self._prefix = prefix
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads = 0
        self._closed = False

    def run(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``call`` in a pool thread, in a copy of the caller's context (its
        context variables: the current span, log fields...); the future (of the
        running loop) gets its result."""
        call = functools.partial(contextvars.copy_context().run, call)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # An idle thread takes it; otherwise a new thread (the engine keeps the
        # number of running calls within its slots, so the size is rarely reached).
        if not self._idle.acquire(blocking=False) and self._threads < self._size:
            self._threads += 1
            threading.Thread(
                target=self._worker, name=f"{self._prefix}-{self._threads}", daemon=True
            ).start()
        self._work.put((loop, future, call))
        return future

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end when their call returns (or with the process)."""
        self._closed = True
        for _ in range(self._threads):
            self._work.put(None)

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            loop, future, call = item
            _call_into(loop, future, call)
            del item, future, call
            if self._closed:
                return
            self._idle.release()


def run_in_thread(call: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run ``call`` in a daemon thread of its own (LONG_RUNNING jobs), in a copy of
    the caller's context."""
    call = functools.partial(contextvars.copy_context().run, call)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    threading.Thread(target=_call_into, args=(loop, future, call), name=name, daemon=True).start()
    return future


def _call_into(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], call: Callable[[], Any]
) -> None:
    try:
        result = call()
    except BaseException as exc:  # handed to the loop, re-raised there
        outcome: tuple[Any, BaseException | None] = (None, exc)
    else:
        outcome = (result, None)
    # RuntimeError: the loop closed meanwhile; nobody waits for this result.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

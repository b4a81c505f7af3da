"""Live updates: a Server-Sent Events feed of what changed, coalesced per client.

Everything arrives on the app's bus (:class:`tickerq.events.EventBus`) while at
least one browser listens: changes made in this process as events, changes made
by other processes (other nodes, another dashboard) as notices. On PostgreSQL
those are the other nodes' NOTIFYs, at once; where notices do not say it (SQLite,
a PostgreSQL node that cannot LISTEN) the store looks every ``poll_interval``
seconds (see :meth:`tickerq.stores.base.Store.watch`). Each client gets at most
one event per ``min_interval`` naming the topics that changed (``tickers``,
``crons``, ``nodes``, ``pauses``, ``engine``); the page then re-fetches the parts
that show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from tickerq.enums import TickerKind
from tickerq.events import (
    CronTickerChanged,
    EngineStateChanged,
    Event,
    PausesChanged,
    TickerChanged,
    TickerDeleted,
)
from tickerq.notices import (
    CRONS,
    NODES,
    PAUSES,
    TICKERS,
    CancelRequested,
    Changed,
    Notice,
    Wake,
    WorkDue,
)

if TYPE_CHECKING:
    from tickerq.events import EventBus
    from tickerq.stores.base import Store

__all__ = ["LiveFeed", "topics_of"]

logger = logging.getLogger(__name__)

ENGINE = "engine"
"""This process's engine started, paused, resumed or stopped (events only)."""
TOPICS = (TICKERS, CRONS, NODES, PAUSES, ENGINE)


def topics_of(message: Event | Notice) -> set[str]:
    """Which parts of the pages an event or a notice changes."""
    if isinstance(message, TickerChanged | TickerDeleted):
        if message.kind is TickerKind.CRON_OCCURRENCE:
            return {TICKERS, CRONS}
        return {TICKERS}
    if isinstance(message, CronTickerChanged):
        return {CRONS}
    if isinstance(message, EngineStateChanged):
        return {ENGINE, NODES}
    if isinstance(message, PausesChanged):
        return {PAUSES}
    if isinstance(message, Changed):
        return set(message.topics)
    if isinstance(message, WorkDue | CancelRequested):
        return {TICKERS, CRONS}
    if isinstance(message, Wake):  # notices were lost: anything may have changed
        return {TICKERS, CRONS, NODES, PAUSES}
    return set()


class _Client:
    __slots__ = ("pending", "ready")

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.ready = asyncio.Event()

    def push(self, topics: set[str]) -> None:
        self.pending |= topics
        self.ready.set()


class LiveFeed:
    """Fans changes out to every connected browser."""

    def __init__(
        self,
        bus: EventBus,
        store: Store,
        *,
        poll_interval: float = 0.5,
        min_interval: float = 0.35,
        keepalive: float = 15.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.poll_interval = poll_interval
        """Where notices do not say what other processes changed, look this often."""
        self.min_interval = min_interval
        self.keepalive = keepalive
        self._clients: set[_Client] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = asyncio.Event()

    @property
    def clients(self) -> int:
        """How many browsers listen now."""
        return len(self._clients)

    def publish(self, topics: set[str]) -> None:
        """Tell every client these topics changed (call on the feed's loop)."""
        for client in tuple(self._clients):
            client.push(topics)

    def _on_event(self, message: Event | Notice) -> None:
        topics = topics_of(message)
        if not topics:
            return
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publish(topics)
        else:  # published on another thread's loop (sync facade)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.publish, topics)

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._unsubscribe:
            self._unsubscribe = [
                self.bus.subscribe(self._on_event),
                self.bus.subscribe_notices(self._on_event),
                self.store.watch(self.poll_interval),
            ]

    def _stop_if_idle(self) -> None:
        if self._clients:
            return
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for stop in unsubscribe:
            stop()

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self._closed.set()
        for client in tuple(self._clients):
            client.ready.set()

    async def stream(self) -> AsyncIterator[str]:
        """One client's event stream (text/event-stream chunks)."""
        client = _Client()
        self._clients.add(client)
        self._start()
        try:
            yield "retry: 2000\n\n"
            yield _message("hello", {"topics": list(TOPICS)})
            while not self._closed.is_set():
                try:
                    await asyncio.wait_for(client.ready.wait(), self.keepalive)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if self._closed.is_set():
                    break
                await asyncio.sleep(self.min_interval)  # coalesce a burst into one event
                topics, client.pending = client.pending, set()
                client.ready.clear()
                if topics:
                    yield _message("change", {"topics": sorted(topics)})
        finally:
            self._clients.discard(client)
            self._stop_if_idle()


def _message(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"

"""Live updates: a Server-Sent Events feed of what changed, coalesced per client.

Changes made in this process arrive on the app's event bus. Changes made by
other processes (other nodes, another dashboard) are seen by polling a cheap
change marker of SQL stores every ``poll_interval`` seconds while at least one
browser listens. Each client gets at most one event per ``min_interval``
naming the topics that changed (``tickers``, ``crons``, ``nodes``, ``engine``);
the page then re-fetches the parts that show them.
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
    TickerChanged,
    TickerDeleted,
)

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.dashboard.queries import Queries

__all__ = ["LiveFeed", "topics_of"]

logger = logging.getLogger(__name__)

TOPICS = ("tickers", "crons", "nodes", "engine")


def topics_of(event: Event) -> set[str]:
    """Which parts of the pages an event changes."""
    if isinstance(event, TickerChanged | TickerDeleted):
        if event.kind is TickerKind.CRON_OCCURRENCE:
            return {"tickers", "crons"}
        return {"tickers"}
    if isinstance(event, CronTickerChanged):
        return {"crons"}
    if isinstance(event, EngineStateChanged):
        return {"engine", "nodes"}
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
        app: TickerQ,
        queries: Queries,
        *,
        poll_interval: float = 0.5,
        min_interval: float = 0.35,
        keepalive: float = 15.0,
    ) -> None:
        self.app = app
        self.queries = queries
        self.poll_interval = poll_interval
        self.min_interval = min_interval
        self.keepalive = keepalive
        self._clients: set[_Client] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
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

    def _on_event(self, event: Event) -> None:
        topics = topics_of(event)
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
        if self._unsubscribe is None:
            self._unsubscribe = self.app.events.subscribe(self._on_event)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="tickerq-dashboard-poll")

    def _stop_if_idle(self) -> None:
        if self._clients:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self) -> None:
        if not self.queries.store.shared:
            return  # the memory store: the event bus sees every change
        previous: tuple[Any, ...] | None = None
        while True:
            try:
                marker = await self.queries.change_marker()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("dashboard change poll failed: %s", exc)
                marker = None
            if marker is not None:
                if previous is not None and marker != previous:
                    self.publish(_changed_topics(previous, marker))
                previous = marker
            await asyncio.sleep(self.poll_interval)

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


def _changed_topics(before: tuple[Any, ...], after: tuple[Any, ...]) -> set[str]:
    """Topics whose part of the change marker moved (see Queries.change_marker)."""
    topics: set[str] = set()
    if before[:2] != after[:2] or before[6:] != after[6:]:
        topics |= {"tickers", "crons"}
    if before[2:4] != after[2:4]:
        topics.add("crons")
    if before[4:6] != after[4:6]:
        topics.add("nodes")
    return topics


def _message(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"

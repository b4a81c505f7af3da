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

A stream ends after ``max_age`` seconds and the browser opens a new one: an
event stream is a request that never ends otherwise, and a server waiting for
its requests to end before it stops (uvicorn's graceful shutdown, where the
dashboard is mounted in your app) would wait for ever. Every message carries an
id; a browser that comes back sends the last one it got, and the ``hello`` of
the new stream says whether anything changed meanwhile (``missed``), so that
the page reads its live parts again only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
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
IDLE_GRACE = 10.0
"""Seconds the feed keeps listening after its last client left."""


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
        max_age: float = 15.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.poll_interval = poll_interval
        """Where notices do not say what other processes changed, look this often."""
        self.min_interval = min_interval
        self.keepalive = keepalive
        self.max_age = max_age
        """Seconds a stream lasts; the browser then opens another."""
        self._token = secrets.token_hex(4)
        self._published = 0
        self._clients: set[_Client] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()

    @property
    def clients(self) -> int:
        """How many browsers listen now."""
        return len(self._clients)

    def publish(self, topics: set[str]) -> None:
        """Tell every client these topics changed (call on the feed's loop)."""
        self._published += 1
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
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self._unsubscribe:
            # what changed while nobody listened is not known: a browser coming back
            # with an older id reads its live parts again
            self._published += 1
            self._unsubscribe = [
                self.bus.subscribe(self._on_event),
                self.bus.subscribe_notices(self._on_event),
                self.store.watch(self.poll_interval),
            ]

    def _stop_if_idle(self) -> None:
        """Stop listening once no client has come back for ``IDLE_GRACE`` seconds (a
        browser opens its next stream right after one ends)."""
        if self._clients or self._loop is None or self._idle is not None:
            return
        if self._closed.is_set():
            self._stop_listening()
            return
        self._idle = self._loop.call_later(IDLE_GRACE, self._stop_listening)

    def _stop_listening(self) -> None:
        self._idle = None
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

    def _mark(self) -> str:
        """The id of what a client has been told of by now (this feed, its count of
        changes)."""
        return f"{self._token}.{self._published}"

    async def stream(self, last_event_id: str | None = None) -> AsyncIterator[str]:
        """One client's event stream (text/event-stream chunks), for ``max_age``
        seconds. ``last_event_id``: the id of the last message a browser coming
        back got (its ``Last-Event-ID`` header)."""
        client = _Client()
        self._clients.add(client)
        self._start()
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.max_age
        try:
            mark = self._mark()  # changes from now on reach the client's pending set
            missed = last_event_id is not None and last_event_id != mark
            yield "retry: 2000\n\n"
            yield _message("hello", {"topics": list(TOPICS), "missed": missed}, mark)
            while not self._closed.is_set():
                left = ends - loop.time()
                if left <= 0:
                    # a planned end: come back soon (the next hello sets 2 s again)
                    yield "retry: 500\n\n" + _message("bye", {}, None)
                    break
                try:
                    await asyncio.wait_for(client.ready.wait(), min(self.keepalive, left))
                except TimeoutError:
                    if ends - loop.time() > 0:
                        yield ": keepalive\n\n"
                    continue
                if self._closed.is_set():
                    break
                await asyncio.sleep(self.min_interval)  # coalesce a burst into one event
                mark = self._mark()  # taken with the topics: nothing can come between
                topics, client.pending = client.pending, set()
                client.ready.clear()
                if topics:
                    yield _message("change", {"topics": sorted(topics)}, mark)
        finally:
            self._clients.discard(client)
            self._stop_if_idle()


def _message(event: str, data: dict[str, Any], ident: str | None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"

"""Typed events: every state change the engine or a manager makes is announced.

Subscribers (the dashboard, metrics, tests) get events synchronously on the
event loop's thread; they must return quickly. Events are only built when
someone listens, so an app with no subscribers pays nothing for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tickerq.enums import Status, TickerKind

__all__ = [
    "CronTickerChanged",
    "EngineStateChanged",
    "Event",
    "EventBus",
    "TickerChanged",
    "TickerDeleted",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""

    at: datetime


@dataclass(frozen=True, slots=True)
class TickerChanged(Event):
    """A time ticker or cron occurrence was added or changed status."""

    kind: TickerKind
    id: UUID
    function: str
    status: Status


@dataclass(frozen=True, slots=True)
class TickerDeleted(Event):
    """A time ticker or cron occurrence was deleted."""

    kind: TickerKind
    id: UUID


@dataclass(frozen=True, slots=True)
class CronTickerChanged(Event):
    """A cron ticker was added, changed (enabled, expression...) or deleted."""

    id: UUID
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class EngineStateChanged(Event):
    """The engine started, paused, resumed or stopped."""

    node: str
    state: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers, in-process."""

    __slots__ = ("_subscribers", "active")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.active = False
        """True when someone listens; publishers check it before building an event."""

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` for every event; returns a function that unsubscribes."""
        self._subscribers.append(subscriber)
        self.active = True

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self.active = bool(self._subscribers)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver ``event``; a failing subscriber is logged, not propagated."""
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber %r failed on %r", subscriber, event)

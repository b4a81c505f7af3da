"""The app's bus: typed events of this process, and notices between nodes.

One :class:`EventBus` per app carries two layers of messages:

* **events** (:class:`Event`): every state change this process's engine, managers
  and store make, in detail (which ticker, which status). Built only when
  someone subscribes to them, so an app without subscribers pays nothing for them.
* **notices** (:class:`tickerq.notices.Notice`): the few things nodes tell each
  other (work due, a cancel, what changed), as the store receives them from other
  processes (PostgreSQL LISTEN; SQLite and a lost LISTEN: a poll, see
  :meth:`tickerq.stores.base.Store.watch`). Only notices cross processes.

The engine subscribes to notices; the dashboard's live feed to both. Subscribers
are called synchronously on the event loop's thread and must return quickly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.notices import Notice

__all__ = [
    "CronTickerChanged",
    "EngineStateChanged",
    "Event",
    "EventBus",
    "PausesChanged",
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


@dataclass(frozen=True, slots=True)
class PausesChanged(Event):
    """A function (``function``) or the whole cluster (``"*"``) was paused or resumed."""

    function: str
    paused: bool


Subscriber = Callable[[Event], None]
NoticeSubscriber = Callable[[Notice], None]


class EventBus:
    """Fan-out of events and notices to their subscribers, in-process."""

    __slots__ = ("_notice_subscribers", "_subscribers", "active")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._notice_subscribers: list[NoticeSubscriber] = []
        self.active = False
        """True when someone subscribes to events; publishers check it before building one."""

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

    def subscribe_notices(self, subscriber: NoticeSubscriber) -> Callable[[], None]:
        """Call ``subscriber`` for every notice; returns a function that unsubscribes."""
        self._notice_subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._notice_subscribers:
                self._notice_subscribers.remove(subscriber)

        return unsubscribe

    def publish_notice(self, notice: Notice) -> None:
        """Deliver ``notice``; a failing subscriber is logged, not propagated."""
        for subscriber in tuple(self._notice_subscribers):
            try:
                subscriber(notice)
            except Exception:
                logger.exception("notice subscriber %r failed on %r", subscriber, notice)

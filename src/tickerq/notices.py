"""Notices: what nodes tell each other so that they act at once, typed.

A notice is small and says what another process needs to know, not the
details: work became due (:class:`WorkDue`), a running job is to be cancelled
(:class:`CancelRequested`), look again because notices may have been missed
(:class:`Wake`), or what changed for the pages showing it (:class:`Changed`).
Stores send them to the other nodes (PostgreSQL: ``pg_notify`` inside the
transaction that made the change, so a notice goes only if the change commits)
and publish the ones they receive on the app's bus (:class:`tickerq.events.EventBus`),
where the engine and the dashboard's live feed subscribe to them.

The wire form, :func:`encode` and :func:`decode` here and nowhere else, is
``"<kind> <value>"``: ``due <ISO time>``, ``cancel <ticker id>``, ``wake``,
``changed <topic> [<topic>...]`` (topics sorted, so that equal notices are equal
text and PostgreSQL folds the repeats of one transaction into one). A payload
that is none of these is logged and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

__all__ = [
    "CRONS",
    "NODES",
    "PAUSES",
    "TICKERS",
    "TOPICS",
    "CancelRequested",
    "Changed",
    "Notice",
    "Wake",
    "WorkDue",
    "decode",
    "encode",
]

logger = logging.getLogger(__name__)

TICKERS = "tickers"
"""Time tickers or cron occurrences were added, changed status or were deleted."""
CRONS = "crons"
"""Cron tickers (or what their pages show of their occurrences) changed."""
NODES = "nodes"
"""Nodes started, stopped or reported (heartbeat)."""
PAUSES = "pauses"
"""A function or the whole cluster was paused or resumed: engines read the pauses
again at once (and, on a resume, look for work)."""
TOPICS = frozenset({TICKERS, CRONS, NODES, PAUSES})


@dataclass(frozen=True, slots=True)
class Notice:
    """Base of every notice."""


@dataclass(frozen=True, slots=True)
class WorkDue(Notice):
    """Work was added or moved so that something is due at ``at`` (UTC): an engine
    sleeping past it looks for work. Implies that tickers changed."""

    at: datetime


@dataclass(frozen=True, slots=True)
class CancelRequested(Notice):
    """The node running ``ticker_id`` is to cancel it. Implies that tickers changed."""

    ticker_id: UUID


@dataclass(frozen=True, slots=True)
class Wake(Notice):
    """Look again: notices may have been missed (the connection that listens for
    them was lost and is back)."""


@dataclass(frozen=True, slots=True)
class Changed(Notice):
    """Something other pages show changed: ``topics`` (of :data:`TOPICS`) say what.
    Engines heed only :data:`PAUSES`."""

    topics: frozenset[str]


def encode(notice: Notice) -> str:
    """The wire form of ``notice``."""
    if isinstance(notice, WorkDue):
        return f"due {notice.at.isoformat()}"
    if isinstance(notice, CancelRequested):
        return f"cancel {notice.ticker_id}"
    if isinstance(notice, Wake):
        return "wake"
    if isinstance(notice, Changed):
        return " ".join(("changed", *sorted(notice.topics)))
    raise TypeError(f"not a notice: {notice!r}")


def decode(payload: str) -> Notice | None:
    """The notice ``payload`` encodes; None (logged) when it encodes none."""
    kind, _, value = payload.partition(" ")
    try:
        if kind == "due":
            at = datetime.fromisoformat(value)
            if at.tzinfo is None:
                raise ValueError("a due time without its UTC offset")
            return WorkDue(at.astimezone(UTC))
        if kind == "cancel":
            return CancelRequested(UUID(value))
        if kind == "wake" and not value:
            return Wake()
        if kind == "changed":
            topics = frozenset(value.split(" "))
            if topics and topics <= TOPICS:
                return Changed(topics)
            raise ValueError(f"topics must be some of {sorted(TOPICS)}")
        raise ValueError("unknown kind")
    except ValueError as exc:
        logger.warning("ignoring a notice that is none (%s): %r", exc, payload[:200])
        return None

"""What an engine knows of the stored pauses: :class:`PauseView`.

Pauses live in the store (``app.pauses``), so every node obeys them. A node reads
them again

* at once when told: a notice from another node (PostgreSQL NOTIFY with the
  ``pauses`` topic, or a :class:`~tickerq.notices.Wake` after notices may have
  been lost), a pause or resume made in this process, or an idle poll that found
  the store changed (SQLite's data version);
* and, while it claims, whenever its view is :data:`REFRESH` seconds old,
  whatever notices say (notices can be lost; SQLite sends none).

The view decides what the engine asks for and when it wakes (the rows of paused
functions are no reason to); the claim itself reads the pauses in its own
transaction (see :meth:`~tickerq.stores.base.Store.claim`), so no job of a
function starts on any node once its pause is stored, even when a node's view
is behind. When nothing is paused the claim asks for the same functions as
before; the view's read costs one small statement per :data:`REFRESH` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from tickerq.models import CLUSTER

if TYPE_CHECKING:
    from tickerq.models import Pause
    from tickerq.stores.base import Store

__all__ = ["REFRESH", "PauseView", "unpaused"]

logger = logging.getLogger(__name__)

REFRESH = 0.5
"""Seconds after which a claiming node reads the pauses again, notice or not."""


class PauseView:
    """The pauses as this node last read them, and when to read them again."""

    __slots__ = ("_read_at", "_stale", "_store", "cluster", "functions", "hidden")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._read_at: datetime | None = None
        self._stale = True
        self.functions: frozenset[str] = frozenset()
        """The paused functions (the cluster's pause aside)."""
        self.cluster = False
        """True while the whole cluster is paused: claim nothing."""
        self.hidden: frozenset[str] = frozenset()
        """What the store's ``next_due_time(paused=...)`` leaves out: the paused
        functions, and ``"*"`` while the cluster is paused."""

    def changed(self) -> None:
        """The pauses may have changed: read them before the next claim."""
        self._stale = True

    def due(self, now: datetime) -> bool:
        """Whether to read the pauses before claiming at ``now``."""
        read_at = self._read_at
        return (
            self._stale
            or read_at is None
            or now < read_at  # the clock went back
            or (now - read_at).total_seconds() >= REFRESH
        )

    async def refresh(self, now: datetime) -> bool:
        """Read the pauses; True if they differ from the last read."""
        self._stale = False  # a change told during the read marks it again
        pauses = await self._store.pauses()
        self._read_at = now
        hidden = frozenset(pauses)
        if hidden == self.hidden:
            return False
        self._log(pauses, hidden)
        self.hidden = hidden
        self.cluster = CLUSTER in hidden
        self.functions = hidden - {CLUSTER}
        return True

    def runnable(self, functions: Collection[str]) -> Collection[str]:
        """Of ``functions`` (those this node runs), the ones it may claim: all of them,
        as given, while none is paused."""
        if self.cluster:
            return ()
        paused = self.functions
        if not paused:
            return functions
        return [f for f in functions if f not in paused]

    def _log(self, pauses: dict[str, Pause], hidden: frozenset[str]) -> None:
        for name in sorted(hidden - self.hidden):
            pause = pauses[name]
            logger.info(
                "%s paused by %s: no job of %s starts on this node until it is resumed",
                "the cluster" if name == CLUSTER else f"function {name}",
                pause.paused_by or "?",
                "any function" if name == CLUSTER else "it",
                extra={"action": "paused", "function": name, "by": pause.paused_by},
            )
        for name in sorted(self.hidden - hidden):
            logger.info(
                "%s resumed",
                "the cluster" if name == CLUSTER else f"function {name}",
                extra={"action": "resumed", "function": name},
            )


def unpaused(functions: Collection[str], paused: Collection[str]) -> Collection[str]:
    """Of ``functions``, those not in ``paused`` (none while it holds the cluster's
    pause): what a claim may take, by the pauses as stored when it runs."""
    if not paused:
        return functions
    if CLUSTER in paused:
        return ()
    return [f for f in functions if f not in paused]

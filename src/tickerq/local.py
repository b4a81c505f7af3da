"""What the rest of a process asks of its own engine: :class:`LocalEngine`.

The managers and the job contexts are given this instead of the app, so they
reach the engine through four calls and nothing else. :class:`tickerq.engine.Engine`
is one; a process whose engine is not running gets answers that say so (a wake
that wakes nobody, no job running here).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

if TYPE_CHECKING:
    from tickerq.context import TickerContext

__all__ = ["LocalEngine"]


class LocalEngine(Protocol):
    """This process's engine, as the managers and job contexts see it."""

    def wake(self, due: datetime | None = None) -> None:
        """Work became due at ``due`` (None: look now); nothing if the engine is not running."""

    def cancel_local(self, ticker_id: UUID) -> bool:
        """Cancel the job of ``ticker_id`` if it runs here; True if it did."""

    def is_running_elsewhere(self, ctx: TickerContext[Any]) -> bool:
        """Whether another run of ``ctx``'s cron ticker (or function) goes on here."""

    def pauses_changed(self) -> None:
        """A function or the cluster was paused or resumed here: read the stored
        pauses before the next claim (other nodes hear of it by a notice or a poll)."""

"""The memory store's pauses (see :meth:`tickerq.stores.base.Store.set_pause`)."""

from __future__ import annotations

from datetime import datetime

from tickerq.events import PausesChanged
from tickerq.models import Pause
from tickerq.stores.base import Store

__all__ = ["MemoryPauses"]


class MemoryPauses(Store):
    """Pauses kept in a dict, by function (``"*"``: the cluster)."""

    _pauses: dict[str, Pause]
    """Set by the store's constructor."""

    async def set_pause(self, pause: Pause) -> Pause:
        """Store ``pause`` unless its function is paused already; the pause that holds."""
        held = self._pauses.get(pause.function)
        if held is not None:
            return held
        self._pauses[pause.function] = pause
        self._announce_pause(pause.function, True, pause.paused_at)
        return pause

    async def clear_pause(self, function: str, now: datetime) -> bool:
        """Resume ``function``; True if it was paused."""
        if self._pauses.pop(function, None) is None:
            return False
        self._announce_pause(function, False, now)
        return True

    async def pauses(self) -> dict[str, Pause]:
        """Every pause, by function."""
        return dict(self._pauses)

    def _announce_pause(self, function: str, paused: bool, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(PausesChanged(at, function, paused))

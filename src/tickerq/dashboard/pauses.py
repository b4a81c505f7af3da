"""What the dashboard does with pauses: show them, pause and resume.

Pauses are stored (``app.pauses``), so a pause made here holds on every node;
the overview's "Pause this node" acts on the process serving the dashboard
only. Each operation is logged on the ``tickerq.dashboard`` logger with the
user, who is also stored as the pause's ``paused_by``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from tickerq.dashboard.schemas import PauseOut, PausesOut, ResumedOut
from tickerq.models import CLUSTER, Pause

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.dashboard.auth import DashboardUser

__all__ = ["PauseOps", "pause_out"]

AuditLog = Callable[..., None]
"""``log(user, action, target, **extra)``: the service's audit record."""


def pause_out(pause: Pause) -> PauseOut:
    """A pause for the API."""
    return PauseOut(
        function=pause.function,
        cluster=pause.cluster,
        paused_at=pause.paused_at,
        paused_by=pause.paused_by,
    )


class PauseOps:
    """Reads and operations on the stored pauses, for the pages and the API."""

    def __init__(self, app: TickerQ, log: AuditLog) -> None:
        self.app = app
        self._log = log

    async def read(self) -> dict[str, Pause]:
        """Every stored pause, by function (``"*"``: the cluster)."""
        return await self.app.store.pauses()

    async def listing(self) -> PausesOut:
        """Every stored pause: the cluster's, then the functions' by name."""
        pauses = await self.app.pauses.query()
        cluster = next((p for p in pauses if p.cluster), None)
        return PausesOut(
            cluster=None if cluster is None else pause_out(cluster),
            functions=[pause_out(p) for p in pauses if not p.cluster],
        )

    @staticmethod
    def held(pauses: Mapping[str, Pause], due: Mapping[str, int]) -> dict[str, int]:
        """Per function, its jobs due now (``due``, by function) that wait because it
        (or the whole cluster) is paused."""
        return {
            name: count
            for name, count in due.items()
            if count and (CLUSTER in pauses or name in pauses)
        }

    async def pause(self, user: DashboardUser, function: str) -> PauseOut:
        """Pause ``function`` on every node."""
        held = await self.app.pauses.pause(function, by=user.name)
        self._log(user, "paused function", function)
        return pause_out(held)

    async def resume(self, user: DashboardUser, function: str) -> ResumedOut:
        """Resume ``function`` on every node."""
        resumed = await self.app.pauses.resume(function)
        self._log(user, "resumed function", function, was_paused=resumed)
        return ResumedOut(function=function, resumed=resumed)

    async def pause_cluster(self, user: DashboardUser) -> PauseOut:
        """Pause all work on every node."""
        held = await self.app.pauses.pause_cluster(by=user.name)
        self._log(user, "paused cluster", CLUSTER)
        return pause_out(held)

    async def resume_cluster(self, user: DashboardUser) -> ResumedOut:
        """End the cluster's pause."""
        resumed = await self.app.pauses.resume_cluster()
        self._log(user, "resumed cluster", CLUSTER, was_paused=resumed)
        return ResumedOut(function=CLUSTER, resumed=resumed)

"""The SQL store's pauses: ``tickerq_pauses``, one row per paused function (``*``:
the whole cluster).

A pause or resume commits with a NOTIFY on PostgreSQL, so every listening node
reads the pauses again at once; SQLite's nodes see the file change on their next
poll. Every node also reads them at least twice a second while it claims (see
:mod:`tickerq.pausing`), so a notice lost does not leave a node running a
paused function.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from tickerq.events import PausesChanged
from tickerq.models import Pause
from tickerq.notices import PAUSES, Changed
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import SqlBase
from tickerq.stores.sql.schema import pauses

__all__ = ["CHANGED_PAUSES", "SqlPauses"]

CHANGED_PAUSES = Changed(frozenset({PAUSES}))
"""The notice of a pause or resume."""

P = pauses.c


class SqlPauses(SqlBase):
    """Pausing and resuming functions and the cluster, for every node at once."""

    async def set_pause(self, pause: Pause) -> Pause:
        """Insert the pause unless its function is paused already (race-free: the
        function is the key); the pause that holds."""

        def tx(conn: Connection) -> tuple[Pause, bool]:
            added = conn.execute(
                self.dialect.insert_ignore(
                    pauses,
                    {
                        "function": pause.function,
                        "paused_at": pause.paused_at,
                        "paused_by": pause.paused_by,
                    },
                )
            ).rowcount
            if added:
                self._notify(conn, CHANGED_PAUSES)
                return pause, True
            row = conn.execute(select(pauses).where(P.function == pause.function)).one()
            return _pause_of(row), False

        held, added = await self.write(tx)
        if added:
            self._announce_pause(pause.function, True, pause.paused_at)
        return held

    async def clear_pause(self, function: str, now: datetime) -> bool:
        """Delete the pause of ``function``; True if there was one."""

        def tx(conn: Connection) -> bool:
            gone = conn.execute(delete(pauses).where(P.function == function)).rowcount
            if gone:
                self._notify(conn, CHANGED_PAUSES)
            return bool(gone)

        cleared = await self.write(tx)
        if cleared:
            self._announce_pause(function, False, now)
        return cleared

    async def pauses(self) -> dict[str, Pause]:
        """Every pause, by function (one small read)."""
        async with self.sa_engine.connect() as conn:
            rows = (await conn.execute(select(pauses))).all()
        return {row.function: _pause_of(row) for row in rows}

    def _announce_pause(self, function: str, paused: bool, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(PausesChanged(at, function, paused))


def _pause_of(row: Any) -> Pause:
    return Pause(
        function=row.function, paused_at=dialects.as_utc(row.paused_at), paused_by=row.paused_by
    )

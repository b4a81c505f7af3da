"""PostgreSQL LISTEN/NOTIFY: wake other nodes at once when work changes.

Nodes announce what others need to know at once — work added or moved earlier
("due <iso time>"), a cancellation for whoever runs a job ("cancel <id>"), or
"wake" — with ``pg_notify`` inside the transaction that made the change, so the
notice is sent only if it commits. A dedicated connection listens; when it is
lost it reconnects with backoff and then wakes the engine, since notices sent
meanwhile are gone (the engine's poll is the last safety net).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["CHANNEL", "Listener", "NoticeHandler"]

logger = logging.getLogger(__name__)

CHANNEL = "tickerq"

NoticeHandler = Callable[[str, str], None]
"""Called with (kind, value): ("due", iso time), ("cancel", id) or ("wake", "")."""


def parse_notice(payload: str) -> tuple[str, str]:
    """Split a notice payload into (kind, value)."""
    kind, _, value = payload.partition(" ")
    return kind, value


class Listener:
    """Keeps one LISTEN connection open and hands notices to a handler."""

    def __init__(self, dsn: str, safe_dsn: str, handler: NoticeHandler) -> None:
        self._dsn = dsn
        self._safe_dsn = safe_dsn
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Connect (waiting for the first connection) and keep listening in the background."""
        self._lost = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="tickerq-listen")
        try:
            await asyncio.wait_for(self.connected.wait(), 10)
        except TimeoutError:
            logger.warning(
                "LISTEN on %s not ready yet; relying on polling meanwhile", self._safe_dsn
            )

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        import asyncpg

        delay = 0.2
        assert self._lost is not None
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                self._lost.clear()
                conn.add_termination_listener(self._on_lost)
                await conn.add_listener(CHANNEL, self._on_notice)
                if not self.connected.is_set():
                    self.connected.set()
                else:
                    logger.info("LISTEN on %s restored", self._safe_dsn)
                    self._handler("wake", "")  # notices sent while we were away are lost
                delay = 0.2
                await self._lost.wait()
                logger.warning("LISTEN connection to %s lost; reconnecting", self._safe_dsn)
            except asyncio.CancelledError:
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=2)
                raise
            except Exception as exc:
                logger.warning(
                    "LISTEN on %s failed (%s: %s); retrying in %.1f s",
                    self._safe_dsn,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    def _on_lost(self, _conn: Any) -> None:
        if self._lost is not None:
            self._lost.set()

    def _on_notice(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, value = parse_notice(payload)
        try:
            self._handler(kind, value)
        except Exception:
            logger.exception("handling notice %r failed", payload)

"""PostgreSQL LISTEN/NOTIFY: tell other nodes at once what changed.

Nodes send the notices of :mod:`tickerq.notices` (work due, a cancel for
whoever runs a job, what changed) with ``pg_notify`` inside the transaction
that made the change, so a notice is sent only if it commits, at most one per
transaction. A dedicated connection listens and publishes what it hears on the
app's bus; when it is lost it reconnects with backoff and then publishes
:class:`~tickerq.notices.Wake`, since notices sent meanwhile are gone (the
engine's poll and the dashboard's slow poll are the last safety nets).

The notices of a node's own work (jobs ending and claimed, crons fired) are
paced by :class:`Pacer`: NOTIFY serializes the commits of the transactions that
send one, so a busy node sends at most one such notice per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tickerq.notices import Notice, Wake, decode

__all__ = ["CHANNEL", "Listener", "Pacer"]

logger = logging.getLogger(__name__)

CHANNEL = "tickerq"


class Listener:
    """Keeps one LISTEN connection open and hands the notices it hears to ``publish``."""

    def __init__(self, dsn: str, safe_dsn: str, publish: Callable[[Notice], None]) -> None:
        self._dsn = dsn
        self._safe_dsn = safe_dsn
        self._publish = publish
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self.connected = asyncio.Event()
        self.up = False
        """True while the LISTEN connection is open (notices arrive)."""

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
                self.up = True
                if not self.connected.is_set():
                    self.connected.set()
                else:
                    logger.info("LISTEN on %s restored", self._safe_dsn)
                    self._deliver(Wake())  # notices sent while we were away are lost
                delay = 0.2
                await self._lost.wait()
                self.up = False
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
                self.up = False
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    def _on_lost(self, _conn: Any) -> None:
        if self._lost is not None:
            self._lost.set()

    def _on_notice(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notice = decode(payload)
        if notice is not None:
            self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        try:
            self._publish(notice)
        except Exception:
            logger.exception("handling notice %r failed", notice)


class Pacer:
    """At most one notice of a node's own work per ``interval`` seconds.

    Before a write, :meth:`may_send` says whether it may carry the notice (and
    :meth:`mark` is noted); after it, :meth:`sent` if it did, or :meth:`owe` if it
    changed something without one. A change owed is announced by the next write
    that may carry the notice (a busy node's next claim, at no cost), or else by a
    notice of its own, ``send()``, half an interval after the interval ends (one
    for all the changes owed: the end of a burst). A notice covers the changes
    owed when its write began, those committed before it; what was owed
    meanwhile stays owed.
    """

    def __init__(self, interval: float, send: Callable[[], Awaitable[None]]) -> None:
        self.interval = interval
        self._send = send
        self._next = 0.0
        """Monotonic time from which a write may carry the notice."""
        self._owes = 0
        """How many times a change was owed (a write's mark is this count)."""
        self._owed = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def may_send(self) -> bool:
        """Whether the next write may carry the notice."""
        return time.monotonic() >= self._next

    def mark(self) -> int:
        """Noted before a write, for :meth:`sent`."""
        return self._owes

    def sent(self, mark: int) -> None:
        """A write that began at ``mark`` sent the notice."""
        self._next = time.monotonic() + self.interval
        if self._owes == mark:
            self._owed = False

    def owe(self) -> None:
        """A write changed something without sending the notice."""
        self._owes += 1
        self._owed = True
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None and self._task is None:
            delay = max(0.0, self._next - time.monotonic()) + self.interval / 2
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self._owed or self._task is not None:
            return
        if time.monotonic() < self._next:  # a write sent one meanwhile (not covering all)
            self._schedule()
            return
        self._task = asyncio.get_running_loop().create_task(
            self._send_owed(), name="tickerq-notice"
        )

    async def _send_owed(self) -> None:
        mark = self._owes
        try:
            await self._send()
            self.sent(mark)
        except Exception as exc:  # the dashboards' slow poll sees the change all the same
            logger.debug("sending a notice failed: %s: %s", type(exc).__name__, exc)
            self._owed = False
        finally:
            self._task = None
        if self._owed:  # owed while it was being sent
            self._schedule()

    async def close(self) -> None:
        """Drop what is owed (the store closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._owed = False

"""Health checks for probes: is the process alive, is it ready to work.

- *Liveness* (``/healthz``): the event loop answers. The answer is made on the
  loop itself, so a loop blocked by a job (a sync call in an ``async def``)
  does not answer at all: the probe's timeout is the signal.
- *Readiness* (``/readyz``): :meth:`HealthChecks.ready`. The store answers a
  small read (:meth:`tickerq.stores.base.Store.ping`) within a short timeout,
  and, where this process runs the engine, the engine is running and its last
  heartbeat is recent (within three heartbeat periods).

Both answers are safe to show without authentication: states and ages, never
hosts, node ids, exception messages or job data (the reason a check failed is
logged, once per change, with the details).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tickerq.errors import StoreConnectionError, TickerStateError

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["STALE_HEARTBEATS", "STORE_TIMEOUT", "HealthChecks", "Readiness", "liveness"]

logger = logging.getLogger(__name__)

STORE_TIMEOUT = 2.0
"""Seconds the store gets to answer a readiness check's read."""
STALE_HEARTBEATS = 3.0
"""A heartbeat older than this many heartbeat periods makes the node not ready."""


def liveness() -> dict[str, str]:
    """The body of a liveness answer (made on the event loop: that it is made is the check)."""
    return {"status": "ok"}


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of a readiness check."""

    ready: bool
    checks: dict[str, Any] = field(default_factory=dict)
    """Each check's state: ``store`` (ok, timeout, unreachable, closed), ``engine``
    (running, paused, not running, not here) and ``heartbeat`` (fresh, stale,
    none) with ``heartbeat_age_seconds``."""
    reason: str | None = None
    """Why not ready, in a few words (None when ready)."""

    @property
    def status_code(self) -> int:
        """200 when ready, 503 when not."""
        return 200 if self.ready else 503

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"status": "ready" | "not ready", "reason": ..., "checks": {...}}``."""
        out: dict[str, Any] = {"status": "ready" if self.ready else "not ready"}
        if self.reason is not None:
            out["reason"] = self.reason
        out["checks"] = dict(self.checks)
        return out


class HealthChecks:
    """The readiness check of one app.

    ``engine``: True when this process is meant to run the engine (``tickerq
    run``): it is then not ready while the engine is not running (starting,
    stopping). None: the engine is looked at only while it runs (a dashboard
    mounted in an app that may or may not run it). False: never looked at.

    Concurrent checks share one store read: a store that hangs holds at most
    one read, and each check waits for it at most ``store_timeout`` seconds.
    ``open_store``: called before the read, within the same timeout (a store that
    cannot be opened is unreachable).
    """

    def __init__(
        self,
        app: TickerQ,
        *,
        engine: bool | None = None,
        store_timeout: float = STORE_TIMEOUT,
        stale_heartbeats: float = STALE_HEARTBEATS,
        open_store: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self._open_store = open_store
        """Called before each read (a dashboard opens its store on first use)."""
        self.engine = engine
        self.store_timeout = store_timeout
        self.stale_heartbeats = stale_heartbeats
        self._ping: asyncio.Task[None] | None = None
        self._last_reason: str | None = None
        self._checked = False

    async def ready(self) -> Readiness:
        """Check the store, then the engine and its heartbeat; log when the answer changes."""
        checks: dict[str, Any] = {}
        reasons: list[str] = []
        detail: list[str] = []
        store, problem = await self._store()
        checks["store"] = store
        if problem is not None:
            reasons.append(f"store {store}")
            detail.append(problem)
        self._engine(checks, reasons)
        reason = "; ".join(reasons) or None
        self._log_change(reason, detail)
        return Readiness(ready=reason is None, checks=checks, reason=reason)

    async def _store(self) -> tuple[str, str | None]:
        """The store's state, and what went wrong (for the log) if it is not "ok"."""
        task = self._ping
        if task is None or task.done():
            task = self._ping = asyncio.get_running_loop().create_task(
                self._read(), name="tickerq-readiness-ping"
            )
            task.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.store_timeout)
        except TimeoutError:
            return "timeout", f"no answer within {self.store_timeout:g} s"
        except TickerStateError as exc:
            return "closed", str(exc)
        except Exception as exc:
            return "unreachable", f"{type(exc).__name__}: {exc}"
        return "ok", None

    async def _read(self) -> None:
        if self._open_store is not None:
            try:
                await self._open_store()
            except TickerStateError as exc:  # not "closed": it could not be opened
                raise StoreConnectionError(str(exc)) from exc
        await self.app.store.ping()

    def _engine(self, checks: dict[str, Any], reasons: list[str]) -> None:
        engine = self.app.engine
        if self.engine is False or (self.engine is None and not engine.running):
            checks["engine"] = "not here"
            return
        if not engine.running:
            checks["engine"] = "not running"
            reasons.append("engine not running")
            return
        checks["engine"] = "paused" if engine.paused else "running"
        period = engine.heartbeat_period
        last = engine.last_heartbeat
        if period is None or last is None:
            checks["heartbeat"] = "none"
            return
        age = max((self.app.clock.now() - last).total_seconds(), 0.0)
        checks["heartbeat_age_seconds"] = round(age, 3)
        if age > self.stale_heartbeats * period:
            checks["heartbeat"] = "stale"
            reasons.append("heartbeat stale")
        else:
            checks["heartbeat"] = "fresh"

    def _log_change(self, reason: str | None, detail: list[str]) -> None:
        if self._checked and reason == self._last_reason:
            return
        first = not self._checked
        self._checked, self._last_reason = True, reason
        if reason is not None:
            extra = f" ({'; '.join(detail)})" if detail else ""
            logger.warning(
                "node %s is not ready: %s%s",
                self.app.node_id,
                reason,
                extra,
                extra={"action": "not_ready"},
            )
        elif not first:
            logger.info("node %s is ready again", self.app.node_id, extra={"action": "ready"})

    async def close(self) -> None:
        """Wait for (or drop) a store read still under way."""
        task, self._ping = self._ping, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark the error of a read no check waited for as seen (each check reports its own)."""
    if not task.cancelled():
        task.exception()

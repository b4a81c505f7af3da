"""Helpers for testing code that uses tickerq, and tickerq itself.

:class:`ManualClock` replaces the real clock: time moves only when the test
says so, and :func:`advance` runs everything that falls due on the way, in
order, at its exact time::

    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = TickerQ(clock=clock)
    async with app:
        await job.schedule(after=timedelta(hours=1))
        await advance(app, timedelta(days=7))   # a week of cron, in milliseconds
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tickerq.clock import Clock

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["ManualClock", "advance", "run_until_idle"]


class ManualClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError(f"ManualClock needs an aware start time, got {start.isoformat()}")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    async def sleep_until(self, deadline: datetime | None, wakeup: asyncio.Future[None]) -> None:
        """Wait until the clock is moved to ``deadline`` or ``wakeup`` is done."""
        if wakeup.done() or (deadline is not None and deadline <= self._now):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if deadline is not None:
            heapq.heappush(self._sleepers, (deadline, next(self._seq), waiter))

        def done(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        wakeup.add_done_callback(done)
        try:
            await waiter
        finally:
            wakeup.remove_done_callback(done)
            if not waiter.done():
                waiter.cancel()

    def next_deadline(self) -> datetime | None:
        """The earliest time someone sleeps until, if any."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, when: datetime) -> None:
        """Move to ``when`` (never backwards) and wake whoever sleeps until then."""
        if when < self._now:
            raise ValueError(f"ManualClock cannot go back from {self._now} to {when}")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    def tick(self, delta: timedelta | float) -> None:
        """Move forward by ``delta`` (seconds or timedelta) without waiting for work."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else delta
        self.set(self._now + timedelta(seconds=seconds))


async def run_until_idle(app: TickerQ) -> None:
    """Wait until the app's engine has run everything due now and written the results."""
    await app.engine.wait_idle()


async def advance(app: TickerQ, delta: timedelta | float) -> None:
    """Move the app's ManualClock forward by ``delta``, running due work at each due time."""
    clock = app.clock
    if not isinstance(clock, ManualClock):
        raise TypeError(f"advance() needs an app with a ManualClock, not {type(clock).__name__}")
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else delta
    target = clock.now() + timedelta(seconds=seconds)
    while True:
        await run_until_idle(app)
        nxt = clock.next_deadline()
        if nxt is None or nxt > target:
            break
        clock.set(nxt)
    clock.set(target)
    await run_until_idle(app)

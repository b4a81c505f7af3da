"""Time, read and slept on only through a :class:`Clock`.

The engine never calls ``datetime.now()`` or ``asyncio.sleep()`` itself, so a
test can swap in :class:`tickerq.testing.ManualClock` and run a week of cron
in milliseconds, the same way every time.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "SystemClock"]


class Clock(ABC):
    """Where the engine gets the time and how it waits for it."""

    @abstractmethod
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""

    @abstractmethod
    async def sleep_until(self, deadline: datetime | None, wakeup: asyncio.Future[None]) -> None:
        """Return at ``deadline`` (None: never) or as soon as ``wakeup`` is done.

        Never raises because of ``wakeup``; the caller owns that future.
        """

    async def sleep(self, seconds: float, wakeup: asyncio.Future[None] | None = None) -> None:
        """Sleep ``seconds`` of this clock's time (or until ``wakeup`` is done)."""
        if wakeup is None:
            wakeup = asyncio.get_running_loop().create_future()
        try:
            deadline: datetime | None = self.now() + timedelta(seconds=seconds)
        except OverflowError:  # past year 9999: as good as never
            deadline = None
        await self.sleep_until(deadline, wakeup)


class SystemClock(Clock):
    """The real wall clock, sleeping on the event loop's monotonic timer."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime | None, wakeup: asyncio.Future[None]) -> None:
        """Sleep on the loop's timer until ``deadline`` or ``wakeup``."""
        if wakeup.done():
            return
        if deadline is None:
            await _wait(wakeup, None)
            return
        # Wall-clock deadline to monotonic delay, computed as late as possible.
        delay = deadline.timestamp() - time.time()
        if delay <= 0:
            return
        await _wait(wakeup, delay)


async def _wait(wakeup: asyncio.Future[None], delay: float | None) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def _done(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    handle = loop.call_later(delay, _done) if delay is not None else None
    wakeup.add_done_callback(_done)
    try:
        await waiter
    finally:
        if handle is not None:
            handle.cancel()
        wakeup.remove_done_callback(_done)

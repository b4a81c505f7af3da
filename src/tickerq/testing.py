"""Helpers for testing code that uses tickerq, and tickerq itself.

:class:`ManualClock` replaces the real clock: time moves only when the test
says so, and :func:`advance` runs everything that falls due on the way, in
order, at its exact time. It jumps from one due time to the next (it does not
step through the engine's polls and heartbeats), so a simulated day costs the
work done in it, on every store::

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
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tickerq.clock import Clock
from tickerq.validation import check_after, to_utc

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["ManualClock", "advance", "run_until_idle"]


class ManualClock(Clock):
    """A clock that moves only when told to; it keeps and tells the time in UTC.

    Times given to it (start, :meth:`set`) may be in any timezone; they must be
    aware and within :data:`tickerq.validation.MIN_TIME` .. ``MAX_TIME``.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = to_utc(start or datetime(2026, 1, 1, tzinfo=UTC), "ManualClock start")
        self._sleepers: list[
            tuple[datetime, int, asyncio.Future[None], asyncio.Task[object] | None]
        ] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """The clock's current time (UTC)."""
        return self._now

    async def sleep_until(self, deadline: datetime | None, wakeup: asyncio.Future[None]) -> None:
        """Wait until the clock is moved to ``deadline`` or ``wakeup`` is done."""
        if deadline is not None:
            # Compared as UTC instants: two datetimes of one zone compare by wall time.
            deadline = deadline.astimezone(UTC)
        if wakeup.done() or (deadline is not None and deadline <= self._now):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if deadline is not None:
            task = asyncio.current_task()
            heapq.heappush(self._sleepers, (deadline, next(self._seq), waiter, task))

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

    def next_deadline(self, ignore: Collection[asyncio.Task[object]] = ()) -> datetime | None:
        """The earliest time someone sleeps until, if any (sleepers of ``ignore`` tasks aside)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if not ignore:
            return self._sleepers[0][0] if self._sleepers else None
        return min(
            (
                d
                for d, _, waiter, task in self._sleepers
                if not waiter.done() and task not in ignore
            ),
            default=None,
        )

    def set(self, when: datetime) -> None:
        """Move to ``when`` (never backwards) and wake whoever sleeps until then."""
        when = to_utc(when, "ManualClock time")
        if when < self._now:
            raise ValueError(
                f"ManualClock cannot go back from {self._now.isoformat()} to {when.isoformat()}"
            )
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            waiter = heapq.heappop(self._sleepers)[2]
            if not waiter.done():
                waiter.set_result(None)

    def tick(self, delta: timedelta | float) -> None:
        """Move forward by ``delta`` (seconds or timedelta) without waiting for work."""
        self.set(check_after(delta, self._now))


async def run_until_idle(app: TickerQ) -> None:
    """Wait until the app's engine has run everything due now and written the results."""
    await app.engine.wait_idle()


async def advance(app: TickerQ, delta: timedelta | float) -> None:
    """Move the app's ManualClock forward by ``delta``, running due work at each due time.

    The clock jumps from one due time to the next: the next row or cron fire
    due in the store, and any other sleeper on the clock (a job or a test
    waiting on it). The engine's polls and heartbeats are not stops; they run
    at the times the clock lands on.
    """
    clock = app.clock
    if not isinstance(clock, ManualClock):
        raise TypeError(f"advance() needs an app with a ManualClock, not {type(clock).__name__}")
    target = check_after(delta, clock.now())
    if target < clock.now():
        raise ValueError(f"advance() cannot go back in time ({delta!r})")
    while True:
        await run_until_idle(app)
        stop = await _next_stop(app, clock)
        if stop is None or stop > target:
            break
        clock.set(stop)
        app.wake_engine(stop)  # it may sleep until a later poll
    clock.set(target)
    app.wake_engine(target)
    await run_until_idle(app)


async def _next_stop(app: TickerQ, clock: ManualClock) -> datetime | None:
    """The next time something is due: in the store, or for a sleeper on the clock."""
    engine = app.engine
    if not engine.running:
        return clock.next_deadline()
    now = clock.now()
    stops = []
    others = clock.next_deadline(ignore=engine.background_tasks)
    if others is not None:
        stops.append(others)
    if not engine.paused:
        lead = timedelta(seconds=engine.options.cron_lead)
        hidden = engine.stored_pauses.hidden  # the rows of paused functions wait
        due = await (
            app.store.next_due_time(cron_lead=lead, paused=hidden)
            if hidden
            else app.store.next_due_time(cron_lead=lead)
        )
        if due is not None and due > now:
            stops.append(due)
        elif due is not None:
            # Due but not run here (a function this node lacks, a full limit): the
            # next due time is unknown, so step through the engine's polls too.
            every = clock.next_deadline()
            if every is not None:
                stops.append(every)
    return min(stops, default=None)

"""``tickerq.testing.advance`` jumps from one due time to the next on every store.

Regression (issue 8, item 8): ``advance`` stepped through every engine poll (SQLite
polls every 0.5 s, PostgreSQL every 5 s), so a simulated day of an every-minute
cron took ~10 minutes on SQLite. It must cost the work done, not the polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tickerq import EngineOptions, Status, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance


def _count_due_time_lookups(app: TickerQ) -> list[int]:
    """Count the store's next_due_time calls (each engine loop turn makes one)."""
    calls = [0]
    original = app.store.next_due_time

    async def counted(*args: Any, **kwargs: Any) -> datetime | None:
        calls[0] += 1
        return await original(*args, **kwargs)

    app.store.next_due_time = counted  # type: ignore[method-assign]
    return calls


async def test_advance_jumps_over_polls_and_heartbeats(
    make_app: Callable[..., TickerQ], clock: ManualClock
) -> None:
    # A poll and a heartbeat every second, and one job due in an hour: advancing
    # two hours turns the engine's loop a handful of times, not 7,200.
    app = make_app(options=EngineOptions(poll_interval=1.0, heartbeat_interval=1.0))
    ran: list[datetime] = []

    @app.function
    async def later(ctx: TickerContext) -> None:
        ran.append(ctx.app.clock.now())

    async with app:
        lookups = _count_due_time_lookups(app)
        due = clock.now() + timedelta(hours=1)
        await later.schedule(at=due)
        await advance(app, timedelta(hours=2))
        ticker = (await app.time_tickers.query())[0]
    assert ran == [due]  # at its exact time
    assert ticker.status is Status.DONE
    assert clock.now() == due + timedelta(hours=1)
    assert lookups[0] < 50, f"the engine looked for work {lookups[0]} times in 2 simulated hours"


async def test_advance_stops_at_rows_added_by_another_node(
    make_app: Callable[..., TickerQ], clock: ManualClock, store_kind: str
) -> None:
    # advance() asks the store what is due next, so a row that another app added
    # (without waking this engine) still runs at its own time.
    if store_kind == "memory":
        pytest.skip("a memory store is not shared between apps")
    app = make_app(options=EngineOptions(poll_interval=3600.0, heartbeat_interval=3600.0))
    other = make_app(node_id="node-b")
    ran: list[datetime] = []

    async def job(ctx: TickerContext) -> None:
        ran.append(ctx.app.clock.now())

    app.function("job")(job)
    other.function("job")(job)
    async with app:
        await other.open()
        due = clock.now() + timedelta(minutes=10)
        await other.time_tickers.add("job", execution_time=due)
        await advance(app, timedelta(hours=1))
    assert ran == [due]


@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        # ~6 SQLite round trips per fire are the engine's own (claim, finish, look
        # ahead, fire the cron): 1,440 fires take 10-30 s on a busy 2-core machine.
        pytest.param("sqlite", marks=pytest.mark.timeout(120)),
    ],
)
async def test_a_day_of_an_every_minute_cron(tmp_path: Path, kind: str) -> None:
    # The store's own poll interval (SQLite: every 0.5 s, 172,800 polls a day).
    start = datetime.fromisoformat("2026-03-02T00:00:00+00:00")
    clock = ManualClock(start)
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path}/day.db"
    app = TickerQ(
        url,
        clock=clock,
        node_id="node-a",
        options=EngineOptions(heartbeat_interval=600.0, retention=None),
    )
    fired: list[datetime] = []

    @app.function
    async def tick(ctx: TickerContext) -> None:
        assert ctx.scheduled_for is not None
        fired.append(ctx.scheduled_for)

    started = time.monotonic()
    async with app:
        lookups = _count_due_time_lookups(app)
        cron = await app.cron_tickers.add("tick", "* * * * *")
        await advance(app, timedelta(days=1))
        occurrences = await app.cron_tickers.occurrences(cron.id, limit=2000)
    elapsed = time.monotonic() - started

    expected = [start + timedelta(minutes=m) for m in range(1, 24 * 60 + 1)]
    assert fired == expected  # every fire once, in order
    assert len(occurrences) == 24 * 60
    assert {o.status for o in occurrences} == {Status.DONE}  # each at its own time
    assert clock.now() == start + timedelta(days=1)
    # A few lookups per fire (advance's and the engine's: claim, finish, look ahead),
    # whatever the poll interval (polls alone would be 172,800 on SQLite).
    assert lookups[0] <= 5 * 24 * 60, f"{lookups[0]} lookups, {elapsed:.1f} s"

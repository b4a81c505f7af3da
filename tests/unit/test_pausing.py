"""The engine's view of the stored pauses: read again when told, and at least every
``REFRESH`` seconds while claiming, even when nobody tells it."""

from __future__ import annotations

from datetime import timedelta

from support import START
from tickerq import Pause, Status, TickerQ
from tickerq.models import CLUSTER
from tickerq.notices import PAUSES, Changed, Wake
from tickerq.pausing import REFRESH, PauseView
from tickerq.stores import MemoryStore
from tickerq.testing import ManualClock, run_until_idle


async def test_the_view_reads_when_stale_or_old() -> None:
    store = MemoryStore()
    view = PauseView(store)
    assert view.due(START)  # never read
    assert await view.refresh(START) is False  # nothing paused: nothing changed
    assert not view.due(START + timedelta(seconds=REFRESH / 2))
    assert view.due(START + timedelta(seconds=REFRESH))
    assert view.due(START - timedelta(seconds=1))  # the clock went back
    view.changed()
    assert view.due(START)

    await store.set_pause(Pause(function="f", paused_at=START))
    await store.set_pause(Pause(function=CLUSTER, paused_at=START))
    assert await view.refresh(START) is True
    assert view.functions == {"f"} and view.cluster and view.hidden == {"f", CLUSTER}
    assert view.runnable(["f", "g"]) == ()
    await store.clear_pause(CLUSTER, START)
    assert await view.refresh(START) is True
    assert list(view.runnable(["f", "g"])) == ["g"]
    await store.clear_pause("f", START)
    await view.refresh(START)
    names = {"f": 1, "g": 2}.keys()
    assert view.runnable(names) is names  # nothing paused: the claim's argument as before


async def test_a_pause_no_one_announced_holds_at_once(clock: ManualClock) -> None:
    """Another process stores a pause without a notice reaching this node (SQLite sends
    none; a NOTIFY can be lost): the engine's view still says nothing is paused, but
    the claim reads the stored pauses itself, so nothing of the function starts; once
    the view is REFRESH old the engine knows too (and stops asking for it)."""
    app = TickerQ(clock=clock, node_id="n1")
    ran: list[int] = []

    @app.function()
    async def job() -> None:
        ran.append(len(ran))

    async with app:
        await run_until_idle(app)  # the engine read the pauses when it started
        await app.store.set_pause(Pause(function="job", paused_at=clock.now()))
        first = await job.enqueue()
        await run_until_idle(app)
        assert ran == []
        assert "job" not in app.engine.stored_pauses.functions  # its view is behind
        clock.tick(REFRESH)
        second = await job.enqueue()
        await run_until_idle(app)
        assert ran == []
        assert "job" in app.engine.stored_pauses.functions
        for ticker in (first, second):
            assert (await app.time_tickers.get(ticker.id)).status is Status.IDLE


async def test_notices_make_the_engine_read_the_pauses_again(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, node_id="n1")

    @app.function()
    async def job() -> None:
        return None

    async with app:
        await run_until_idle(app)
        view = app.engine.stored_pauses
        assert not view.due(clock.now())
        app.events.publish_notice(Changed(frozenset({"tickers"})))
        assert not view.due(clock.now())  # other topics are not about pauses
        app.events.publish_notice(Changed(frozenset({PAUSES})))
        assert view.due(clock.now())
        await run_until_idle(app)
        assert not view.due(clock.now())
        app.events.publish_notice(Wake())  # notices may have been lost
        assert view.due(clock.now())

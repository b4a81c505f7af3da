"""What another node changes reaches this process's live feed (the dashboard's SSE).

Two apps on one database are two nodes: each has its own store object, bus and
connections. On PostgreSQL the viewer learns from the other node's NOTIFYs: its
poll interval is set to a minute, so only a notice can explain an update within
a fraction of a second. On SQLite it polls (``PRAGMA data_version``, then the
change marker) every 50 ms. The memory store is never shared.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from tickerq import Status, TickerContext, TickerQ, TimeTickerSpec
from tickerq.dashboard.live import LiveFeed
from tickerq.notices import CRONS, TICKERS, Changed, decode, encode
from tickerq.stores.sql.connection import PACE
from tickerq.testing import ManualClock

if TYPE_CHECKING:
    from contract.conftest import Ops

MakeApp = Callable[..., TickerQ]

PG_POLL = 60.0
"""The viewer's poll interval on PostgreSQL: far longer than any wait below."""
SQLITE_POLL = 0.05
LATENCY = {"postgresql": 0.3, "sqlite": 1.0}
"""Most seconds from a change on the other node to the viewer's live event."""


class Watcher:
    """The live feed's stream of one client, read in a task."""

    def __init__(self, feed: LiveFeed, clock: ManualClock) -> None:
        self.feed = feed
        self.clock = clock
        self.changes: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for chunk in self.feed.stream():
            if "event: change" in chunk:
                self.changes.put_nowait((time.monotonic(), chunk))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())
        deadline = time.monotonic() + 5
        while not self.feed.clients:
            assert time.monotonic() < deadline, "the stream did not start"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.feed.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)

    def drain(self) -> None:
        while not self.changes.empty():
            self.changes.get_nowait()

    async def after(self, action: Callable[[], Awaitable[object]], topic: str) -> float:
        """Run ``action``; seconds until the feed names ``topic``."""
        await asyncio.sleep(0.3)  # what came before has arrived
        self.drain()
        self.clock.tick(1)  # changes stamp rows with the clock's time (the marker reads it)
        started = time.monotonic()
        await action()
        deadline = started + 10
        while True:
            at, chunk = await asyncio.wait_for(self.changes.get(), deadline - time.monotonic())
            if f'"{topic}"' in chunk:
                return at - started


@asynccontextmanager
async def _viewer(app: TickerQ, store_kind: str, clock: ManualClock) -> AsyncIterator[Watcher]:
    poll = PG_POLL if store_kind == "postgresql" else SQLITE_POLL
    feed = LiveFeed(app.events, app.store, poll_interval=poll, min_interval=0.0, max_age=3600)
    watcher = Watcher(feed, clock)
    await watcher.start()
    if store_kind == "postgresql":
        deadline = time.monotonic() + 10
        while not app.store.listening:  # LISTEN is up before anything happens
            assert time.monotonic() < deadline, "LISTEN did not connect"
            await asyncio.sleep(0.01)
    try:
        yield watcher
    finally:
        await watcher.stop()


async def test_another_nodes_changes_reach_the_live_feed(
    make_app: MakeApp, store_kind: str, clock: ManualClock
) -> None:
    if store_kind == "memory":
        pytest.skip("the memory store is not shared: its events say everything")
    release = asyncio.Event()

    async def work(ctx: TickerContext[int]) -> None:
        if ctx.request == 1:
            await release.wait()

    viewer = make_app(node_id="viewer")
    other = make_app(node_id="other")
    other.function("work")(work)
    await viewer.open()
    await other.open()
    limit = LATENCY[store_kind]
    async with _viewer(viewer, store_kind, clock) as watch:
        waiting: Any = None

        async def enqueue() -> None:
            nonlocal waiting
            waiting = await other.time_tickers.add(
                "work", request=0, execution_time=clock.now().replace(year=2099)
            )

        took = {"enqueue": await watch.after(enqueue, "tickers")}
        took["cancel"] = await watch.after(lambda: other.time_tickers.cancel(waiting.id), "tickers")
        took["delete"] = await watch.after(lambda: other.time_tickers.delete(waiting.id), "tickers")
        cron: Any = None

        async def add_cron() -> None:
            nonlocal cron
            cron = await other.cron_tickers.add("work", "0 0 1 1 *", request=0)

        took["add cron"] = await watch.after(add_cron, "crons")
        took["disable cron"] = await watch.after(
            lambda: other.cron_tickers.disable(cron.id), "crons"
        )
        took["delete cron"] = await watch.after(lambda: other.cron_tickers.delete(cron.id), "crons")

        await other.start()  # the other node runs a job; its end is seen here
        running: Any = None

        async def start_job() -> None:
            nonlocal running
            running = await other.time_tickers.add("work", request=1)

        took["job starts"] = await watch.after(start_job, "tickers")

        async def end_job() -> None:
            release.set()

        took["job ends"] = await watch.after(end_job, "tickers")
        assert (await other.time_tickers.get(running.id)).status.is_final
        took["node stops"] = await watch.after(other.stop, "nodes")
    slow = {what: round(s, 3) for what, s in took.items() if s > limit}
    assert not slow, f"{store_kind}: seen after more than {limit} s: {slow} (all: {took})"


async def test_a_nodes_own_work_sends_paced_notices_inside_its_writes(
    app: TickerQ, ops: Ops, store_kind: str
) -> None:
    """PostgreSQL: claims and results send "changed" at most once per PACE seconds,
    inside the write that made the change (the hot path: inside its one statement,
    no statement of its own); a change made meanwhile is announced when the
    interval ends; a claim that changes nothing says nothing."""
    if store_kind != "postgresql":
        pytest.skip("only PostgreSQL sends notices")
    import asyncpg

    store: Any = app.store
    heard: list[tuple[float, Any]] = []
    listener = await asyncpg.connect(store.dialect.plain_url)
    await listener.add_listener(
        "tickerq", lambda *a: heard.append((time.monotonic(), decode(a[-1])))
    )
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        tickers = [await ops.add() for _ in range(4)]
        await asyncio.sleep(0.3)
        assert len(heard) == 4  # each enqueue: its WorkDue
        heard.clear()
        changed = Changed(frozenset({TICKERS, CRONS}))
        assert await ops.claim(functions=["beta"]) == []  # nothing claimed: no notice
        await asyncio.sleep(2 * PACE)
        assert heard == []
        event.listen(store.sa_engine.sync_engine, "before_cursor_execute", on_execute)
        started = time.monotonic()
        first = await ops.claim(slots=1)
        if store.hot is not None:
            assert statements == []  # the notice went with the hot path's statement
        else:
            assert sum("pg_notify" in q for q in statements) == 1
        event.remove(store.sa_engine.sync_engine, "before_cursor_execute", on_execute)
        jobs = [*first, *await ops.claim(slots=1)]
        await ops.complete(jobs[0], Status.DONE)
        jobs += await ops.claim(slots=1)
        burst = time.monotonic() - started
        await asyncio.sleep(0.5)
        assert len(jobs) == 3
        notices = [n for _, n in heard]
        assert set(notices) == {changed}
        # the first at once, the rest owed and sent together when the interval ends
        assert 2 <= len(notices) <= 2 + int(burst / PACE), (notices, burst)
        assert heard[0][0] - started < PACE
        assert heard[1][0] - heard[0][0] >= PACE * 0.9
        assert {t.id for t in tickers} > {j.id for j in jobs}
    finally:
        await listener.close()


async def test_another_nodes_notices_reach_the_engine(
    make_app: MakeApp, store_kind: str, clock: ManualClock
) -> None:
    """PostgreSQL: work another node adds wakes this node's sleeping engine, and its
    cancel reaches the job running here, at once: this engine's poll and heartbeat
    are an hour of a clock that does not move."""
    if store_kind != "postgresql":
        pytest.skip("only PostgreSQL nodes notify each other")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(ctx: TickerContext[int]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            if ctx.cancelled:
                cancelled.set()

    runner = make_app(node_id="runner")
    runner.function("slow")(slow)
    other = make_app(node_id="other")
    other.function("slow")(slow)
    await runner.start()
    await other.open()
    await asyncio.sleep(0.2)  # the runner's engine sleeps
    ticker = await other.time_tickers.add("slow", request=0)
    await asyncio.wait_for(started.wait(), 5)
    assert (await other.time_tickers.get(ticker.id)).status is Status.IN_PROGRESS
    await other.time_tickers.cancel(ticker.id)
    await asyncio.wait_for(cancelled.wait(), 5)
    await asyncio.wait_for(runner.engine.wait_idle(), 5)
    assert (await other.time_tickers.get(ticker.id)).status is Status.CANCELLED


async def test_the_live_feed_goes_on_across_a_restart_of_the_store(
    make_app: MakeApp, store_kind: str, clock: ManualClock
) -> None:
    """A page that listens while its app stops and starts again (the store closes
    and opens) still sees the other node's changes afterwards."""
    if store_kind == "memory":
        pytest.skip("the memory store is not shared")
    viewer = make_app(node_id="viewer")
    other = make_app(node_id="other")
    other.function("work")(_noop)
    await viewer.open()
    await other.open()
    async with _viewer(viewer, store_kind, clock) as watch:
        await viewer.stop()
        await viewer.open()
        if store_kind == "postgresql":
            deadline = time.monotonic() + 10
            while not viewer.store.listening:
                assert time.monotonic() < deadline, "LISTEN did not connect again"
                await asyncio.sleep(0.01)
        took = await watch.after(lambda: other.time_tickers.add("work", request=0), "tickers")
    assert took < LATENCY[store_kind]


async def _noop(ctx: TickerContext[int]) -> None:
    return None


async def test_a_busy_node_announces_its_work_inside_its_claims(
    make_app: MakeApp, store_kind: str
) -> None:
    """PostgreSQL hot path: while jobs flow, the paced notices ride in the claims'
    statement; a notice of its own (a round trip on the pool) is sent only once
    the flow stops, for what its last claims changed."""
    if store_kind != "postgresql":
        pytest.skip("only PostgreSQL sends notices")
    import asyncpg

    async def quick(ctx: TickerContext[int]) -> None:
        await asyncio.sleep(0.002)

    app = make_app(node_id="busy")
    app.function("quick")(quick)
    await app.open()
    store: Any = app.store
    if store.hot is None:
        pytest.skip("the general path sends its notice inside its own transaction")
    heard: list[float] = []
    work = encode(Changed(frozenset({TICKERS, CRONS})))

    def on_notice(*args: Any) -> None:
        if args[-1] == work:  # not the node's heartbeats, start and stop
            heard.append(time.monotonic())

    listener = await asyncpg.connect(store.dialect.plain_url)
    await listener.add_listener("tickerq", on_notice)
    own: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "pg_notify" in statement and work in str(parameters):  # not a heartbeat's
            own.append(statement)

    try:
        added = await app.time_tickers.add_many(
            [TimeTickerSpec(function="quick", request=i) for i in range(600)]
        )
        await asyncio.sleep(0.2)
        heard.clear()
        event.listen(store.sa_engine.sync_engine, "before_cursor_execute", on_execute)
        started = time.monotonic()
        await app.start()
        while not all(t.status.is_final for t in await app.time_tickers.query(limit=1000)):
            assert time.monotonic() - started < 30, "the jobs did not run"
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        await asyncio.sleep(3 * PACE)
        event.remove(store.sa_engine.sync_engine, "before_cursor_execute", on_execute)
        assert len(added) == 600
        changed = [at for at in heard if at >= started]
        assert len(changed) >= max(2, int(took / PACE) // 2), (len(changed), took)
        # paced where they are sent (tests/unit/test_notices.py checks the pacer);
        # heard on a loop the busy engine shares, single arrivals jitter
        gaps = sorted(b - a for a, b in itertools.pairwise(changed))
        assert gaps[len(gaps) // 2] >= PACE * 0.9, changed
        # a notice of its own goes when no claim came for 1.5 PACE: the end of the flow,
        # or a stall of a loaded machine's loop; most ride in the claims
        assert len(own) <= max(2, len(changed) // 4), (
            f"{len(own)} notices of their own of {len(changed)} in {took:.2f} s"
        )
    finally:
        await listener.close()

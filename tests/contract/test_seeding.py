"""Store contract, end to end: crons seeded by ``@app.function(cron=...)`` follow the code
on every start (issue 8, item 6).

Each test starts apps ("nodes", or one node across deploys) on one store; on the
memory store they share one MemoryStore object, as processes share a database.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import pytest

from support import START
from tickerq import EngineOptions, Status, TickerQ
from tickerq.stores import MemoryStore, Store
from tickerq.testing import ManualClock, advance, run_until_idle

MakeNode = Callable[..., TickerQ]
MINUTE = timedelta(minutes=1)
QUIET = EngineOptions(poll_interval=3600, heartbeat_interval=600, lease=3600)


@pytest.fixture
async def make_node(store_url: str, clock: ManualClock) -> AsyncIterator[MakeNode]:
    """Apps on the test's store (one shared MemoryStore for ``memory://``), stopped after."""
    shared: Store | str = MemoryStore() if store_url == "memory://" else store_url
    apps: list[TickerQ] = []

    def make(**kwargs: Any) -> TickerQ:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("node_id", f"node-{len(apps)}")
        kwargs.setdefault("options", QUIET)
        app = TickerQ(shared, **kwargs)
        apps.append(app)
        return app

    yield make

    for app in apps:
        await app.stop()
    if store_url.startswith("sqlite"):
        gc.collect()  # a leaked connection is closed here, not in a later test


def version(
    make_node: MakeNode,
    runs: list[tuple[str, datetime]],
    crons: dict[str, dict[str, Any] | None],
    **app_options: Any,
) -> TickerQ:
    """A node running one version of the code: ``crons`` maps each registered function
    to its ``@app.function`` options (None: registered without a cron)."""
    app = make_node(**app_options)

    def recorder(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def job() -> None:
            runs.append((name, app.clock.now()))

        return job

    for name, options in crons.items():
        app.function(name, **(options or {}))(recorder(name))
    return app


async def seeded(app: TickerQ) -> dict[str, Any]:
    """function -> (expression, timezone) of every seeded cron ticker."""
    crons = await app.cron_tickers.query()
    assert all(c.seeded for c in crons)
    return {c.function: (c.expression, c.timezone) for c in crons}


async def test_a_changed_expression_replaces_the_old_schedule(make_node: MakeNode) -> None:
    runs: list[tuple[str, datetime]] = []
    v1 = version(make_node, runs, {"sweep": {"cron": "*/30 * * * *"}})
    async with v1:
        await advance(v1, 40 * MINUTE)  # runs at 09:30
        (before,) = await v1.cron_tickers.query()

    v2 = version(make_node, runs, {"sweep": {"cron": "*/20 * * * *"}})
    async with v2:
        await advance(v2, 40 * MINUTE)  # 09:40 .. 10:20
        (after,) = await v2.cron_tickers.query()
        history = await v2.cron_tickers.occurrences(after.id)

    assert [t - START for _, t in runs] == [30 * MINUTE, 60 * MINUTE, 80 * MINUTE]
    assert after.id == before.id and after.expression == "*/20 * * * *"
    assert len(history) == 3  # the run of the old schedule stays in its history


async def test_a_changed_timezone_moves_the_fires(make_node: MakeNode) -> None:
    runs: list[tuple[str, datetime]] = []
    v1 = version(make_node, runs, {"report": {"cron": "0 12 * * *"}})
    async with v1:
        assert await seeded(v1) == {"report": ("0 12 * * *", "UTC")}

    tokyo = {"cron": "0 12 * * *", "cron_timezone": "Asia/Tokyo"}
    v2 = version(make_node, runs, {"report": tokyo})
    async with v2:
        await advance(v2, timedelta(hours=24))
        assert await seeded(v2) == {"report": ("0 12 * * *", "Asia/Tokyo")}

    assert runs == [("report", START + timedelta(hours=18))]  # 12:00 in Tokyo, 03:00 UTC


async def test_crons_the_code_no_longer_declares_are_removed(make_node: MakeNode) -> None:
    runs: list[tuple[str, datetime]] = []
    v1 = version(
        make_node,
        runs,
        {"sweep": {"cron": "*/5 * * * *"}, "report": {"cron": "*/5 * * * *"}, "other": None},
    )
    async with v1:
        added = await v1.cron_tickers.add("sweep", "0 * * * *")  # at run time: not the code's
        await advance(v1, 5 * MINUTE)  # both seeded crons run once
    v1.clock.tick(5 * MINUTE)  # v1 is down at 09:10: both crons' fires wait

    # v2: sweep lost its cron, report was deleted from the code
    v2 = version(make_node, runs, {"sweep": None, "other": None})
    async with v2:
        assert [c.id for c in await v2.cron_tickers.query()] == [added.id]
        await advance(v2, 60 * MINUTE)

    assert sorted(runs) == [
        ("report", START + 5 * MINUTE),
        ("sweep", START + 5 * MINUTE),
        ("sweep", START + 60 * MINUTE),  # the cron added at run time
    ]


async def test_an_app_without_functions_leaves_seeded_crons_alone(make_node: MakeNode) -> None:
    runs: list[tuple[str, datetime]] = []
    v1 = version(make_node, runs, {"sweep": {"cron": "*/5 * * * *"}})
    async with v1:
        pass
    enqueuer = make_node()  # e.g. a web process that only reads and enqueues
    async with enqueuer:
        assert await seeded(enqueuer) == {"sweep": ("*/5 * * * *", "UTC")}


async def test_nodes_starting_together_reconcile_once(
    make_node: MakeNode, clock: ManualClock
) -> None:
    runs: list[tuple[str, datetime]] = []
    old = version(
        make_node,
        runs,
        {"sweep": {"cron": "*/30 * * * *"}, "report": {"cron": "0 * * * *"}, "tick": None},
    )
    async with old:
        pass
    new_code: dict[str, dict[str, Any] | None] = {
        "sweep": {"cron": "*/10 * * * *"},
        "tick": {"cron": "*/15 * * * *", "cron_timezone": "Europe/Berlin"},
    }
    nodes = [version(make_node, runs, new_code, max_concurrency=2) for _ in range(4)]

    await asyncio.gather(*(node.start() for node in nodes))
    assert await seeded(nodes[0]) == {
        "sweep": ("*/10 * * * *", "UTC"),
        "tick": ("*/15 * * * *", "Europe/Berlin"),
    }
    for minute in range(1, 61):  # 09:01 .. 10:00: the nodes race for every fire
        clock.set(START + minute * MINUTE)
        for node in nodes:  # (as each one's poll would; advance() drives one node only)
            node.engine.wake()
        for node in nodes:
            await run_until_idle(node)
    crons = await nodes[0].cron_tickers.query()
    occurrences = {c.function: await nodes[0].cron_tickers.occurrences(c.id) for c in crons}

    minutes = [(t - START) // MINUTE for _, t in sorted(runs)]
    assert sorted(runs) == sorted(set(runs))  # no fire ran twice
    assert sorted((f, (t - START) // MINUTE) for f, t in runs) == sorted(
        [("sweep", m) for m in (10, 20, 30, 40, 50, 60)] + [("tick", m) for m in (15, 30, 45, 60)]
    ), minutes
    assert {f: len(o) for f, o in occurrences.items()} == {"sweep": 6, "tick": 4}
    assert all(o.status is Status.DONE for group in occurrences.values() for o in group)


async def test_seed_keys_of_older_versions_fold_into_one_cron_per_function(
    make_node: MakeNode, store_kind: str, clock: ManualClock
) -> None:
    if store_kind == "memory":
        pytest.skip("seed keys of older versions exist only in a database")
    from sqlalchemy import select, update

    from tickerq.stores.sql import SqlStore
    from tickerq.stores.sql.schema import cron_tickers

    runs: list[tuple[str, datetime]] = []
    code = {"sweep": {"cron": "0 * * * *"}, "audit": {"cron": "*/10 * * * *"}, "report": None}
    app = version(make_node, runs, code)
    await app.open()
    store = app.store
    assert isinstance(store, SqlStore)
    # An older tickerq keyed seeded crons by "function|expression": one row per
    # expression a function ever had, all of them firing.
    older = []
    for function, expression in [
        ("sweep", "*/5 * * * *"),
        ("sweep", "0 * * * *"),
        ("audit", "*/5 * * * *"),
        ("audit", "*/7 * * * *"),
        ("report", "*/5 * * * *"),
    ]:
        clock.tick(0.001)  # oldest first
        cron = app.cron_tickers.build(function, expression, seeded=True)
        older.append(cron)
        await store.add_cron_ticker(cron)
        async with store.sa_engine.begin() as conn:
            await conn.execute(
                update(cron_tickers)
                .where(cron_tickers.c.id == cron.id)
                .values(seed_key=f"{cron.function}|{cron.expression}")
            )
    stale = older[0]
    await store.advance_cron_ticker(
        stale.id,
        expected_next=stale.next_fire_at,
        new_next=stale.next_fire_at,
        fires=[clock.now()],
        priority=app.get_function("sweep").options.priority,
        now=clock.now(),
    )
    (waiting,) = await app.cron_tickers.occurrences(stale.id)
    await app.stop()

    async with app:
        async with store.sa_engine.connect() as conn:
            rows = await conn.execute(
                select(cron_tickers.c.seed_key, cron_tickers.c.id, cron_tickers.c.expression)
            )
            keys = {tuple(r) for r in rows}
        await advance(app, 60 * MINUTE)
        gone = await store.get_occurrence(waiting.id)

    assert keys == {
        ("sweep", older[1].id, "0 * * * *"),  # the row with the declared expression stays
        ("audit", older[2].id, "*/10 * * * *"),  # none matches: the oldest stays, changed
    }
    assert gone is None  # the stale row's waiting occurrence went with it
    assert sorted(runs) == sorted(
        [("audit", START + n * 10 * MINUTE) for n in range(1, 7)] + [("sweep", START + 60 * MINUTE)]
    )

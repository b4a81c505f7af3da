"""Store contract: cron fires materialized in batches (issue 9, many crons).

``Store.materialize_crons`` plans and advances a batch of due crons in one call;
``fire_due_crons`` pages through every due cron with it. Every due cron fires
exactly once, whatever the batch size, and two nodes materializing at once
never double a fire.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from support import START
from tickerq import CronTicker, MisfirePolicy, Priority, TickerContext, TickerQ
from tickerq.firing import MAX_FIRES_PER_ROUND, fire_due_crons, parse_cached, plan_fires
from tickerq.stores.base import CRON_BATCH_SIZE, CronPlan, Store
from tickerq.testing import ManualClock

MakeApp = Callable[..., TickerQ]
MINUTE = timedelta(minutes=1)
GRACE = 5.0


def normal(function: str) -> Priority:
    return Priority.NORMAL


async def _noop(ctx: TickerContext) -> None:
    return None


async def _open(make_app: MakeApp, node_id: str) -> TickerQ:
    app = make_app(node_id=node_id)
    for name in ("alpha", "beta"):
        app.function(name)(_noop)
    await app.open()
    return app


@pytest.fixture
async def nodes(make_app: MakeApp, store_kind: str) -> AsyncIterator[tuple[TickerQ, TickerQ]]:
    """Two apps on one store: two SQL stores on the same database (two nodes); on
    the memory store, the same app twice (it is not shared between processes)."""
    first = await _open(make_app, "node-a")
    second = first if store_kind == "memory" else await _open(make_app, "node-b")
    yield first, second


async def _fires_of(app: TickerQ, crons: list[CronTicker]) -> Counter[tuple[Any, datetime]]:
    """How many occurrences each (cron, fire time) has."""
    found: Counter[tuple[Any, datetime]] = Counter()
    for cron in crons:
        for o in await app.cron_tickers.occurrences(cron.id, limit=100_000):
            found[(cron.id, o.execution_time)] += 1
    return found


def _expected(cron: CronTicker, now: datetime, lead: float = 0.0) -> tuple[set[datetime], datetime]:
    """Every fire a cron gets by ``now`` (+ ``lead``: made ahead), rounds going on
    until none is behind, and its cursor."""
    expr = parse_cached(cron.expression, cron.timezone)
    cursor = cron.next_fire_at
    assert cursor is not None
    until = now + timedelta(seconds=lead)
    fires: set[datetime] = set()
    while cursor <= until:
        made, cursor = plan_fires(expr, cursor, now, cron.misfire, GRACE, until=until)
        fires.update(made)
    return fires, cursor


async def test_every_due_cron_fires_once_across_batches(
    nodes: tuple[TickerQ, TickerQ], clock: ManualClock
) -> None:
    app, _ = nodes
    count = CRON_BATCH_SIZE + 37  # more than one batch
    crons = [await app.cron_tickers.add("alpha", "* * * * *") for _ in range(count)]
    clock.tick(MINUTE)
    now = clock.now()

    batches: list[int] = []

    def on_batch(created: int) -> bool:
        batches.append(created)
        return True

    fired = await fire_due_crons(app.store, now, normal, GRACE, on_batch=on_batch)

    assert (fired.created, fired.behind) == (count, False)
    assert batches == [CRON_BATCH_SIZE, 37]
    fires = await _fires_of(app, crons)
    assert fires == Counter({(c.id, START + MINUTE): 1 for c in crons})
    assert {(await app.cron_tickers.get(c.id)).next_fire_at for c in crons} == {START + 2 * MINUTE}
    again = await fire_due_crons(app.store, now, normal, GRACE)
    assert (again.created, again.behind) == (0, False)


async def test_a_batch_takes_due_crons_in_id_order_and_stops_at_its_bounds(
    nodes: tuple[TickerQ, TickerQ], clock: ManualClock
) -> None:
    app, _ = nodes
    store = app.store
    every_minute = [await app.cron_tickers.add("alpha", "* * * * *") for _ in range(6)]
    hourly = await app.cron_tickers.add("beta", "0 * * * *")  # not due
    off = await app.cron_tickers.add("beta", "* * * * *", enabled=False)  # disabled
    clock.tick(MINUTE)
    now = clock.now()
    ids = sorted(c.id for c in every_minute)
    seen: list[Any] = []

    def plan(cron: CronTicker) -> CronPlan | None:
        seen.append(cron.id)
        if cron.id == ids[1]:
            return None  # left as it is
        return CronPlan([now], now + MINUTE, Priority.HIGH)

    first = await store.materialize_crons(now, plan, limit=3)
    assert seen == ids[:3]
    assert (first.last_id, first.exhausted) == (ids[2], False)
    assert dict(first.created) == {ids[0]: 1, ids[2]: 1}

    seen.clear()
    second = await store.materialize_crons(now, plan, after=first.last_id, limit=10, max_fires=2)
    assert seen == ids[3:5]  # stopped once two fires were planned
    assert (second.last_id, second.exhausted) == (ids[4], False)

    seen.clear()
    third = await store.materialize_crons(now, plan, after=second.last_id, limit=10)
    assert seen == ids[5:]
    assert (third.last_id, third.exhausted) == (ids[5], True)

    seen.clear()
    left = await store.materialize_crons(now, plan, limit=10)
    assert seen == [ids[1]]  # the one not planned is still due; hourly and off never were
    assert (left.last_id, left.exhausted, dict(left.created)) == (ids[1], True, {})

    jobs = await store.claim(
        now,
        node="node-a",
        lease_until=now + MINUTE,
        slots=100,
        capacity={},
        functions=["alpha", "beta"],
    )
    assert sorted(j.cron_ticker_id for j in jobs) == [i for i in ids if i != ids[1]]
    assert {(j.priority, j.execution_time) for j in jobs} == {(Priority.HIGH, now)}
    assert (await app.cron_tickers.get(ids[1])).next_fire_at == START + MINUTE
    assert (await app.cron_tickers.get(ids[0])).next_fire_at == now + MINUTE
    assert (await app.cron_tickers.get(hourly.id)).next_fire_at == START + timedelta(hours=1)
    assert await app.cron_tickers.occurrences(off.id) == []
    empty = await store.materialize_crons(now, plan, after=ids[-1])
    assert (empty.last_id, empty.exhausted, dict(empty.created)) == (None, True, {})


async def test_two_nodes_materializing_at_once_fire_each_cron_once(
    nodes: tuple[TickerQ, TickerQ], clock: ManualClock
) -> None:
    first, second = nodes
    count = 300
    crons = [await first.cron_tickers.add("alpha", "* * * * *") for _ in range(count)]
    backlog = await first.cron_tickers.add("beta", "* * * * * *", misfire=MisfirePolicy.RUN_ALL)
    outage = MAX_FIRES_PER_ROUND + 200
    clock.tick(outage)
    now = clock.now()

    async def node(store: Store, batch_size: int) -> tuple[int, int]:
        created = rounds = 0
        while True:
            fired = await fire_due_crons(store, now, normal, GRACE, batch_size=batch_size)
            created += fired.created
            rounds += 1
            if not fired.behind:
                return created, rounds

    results = await asyncio.gather(node(first.store, 7), node(second.store, 11))

    fires = await _fires_of(first, [*crons, backlog])
    assert set(fires.values()) == {1}  # no fire doubled
    assert sum(created for created, _ in results) == sum(fires.values())
    for cron in [*crons, backlog]:
        expected, cursor = _expected(cron, now)
        assert {fire for cron_id, fire in fires if cron_id == cron.id} == expected
        assert (await first.cron_tickers.get(cron.id)).next_fire_at == cursor
    # RUN_ONCE: the latest missed minute and the one due now; RUN_ALL: every second
    assert len(fires) == count * 2 + outage


SCHEDULES = ("* * * * *", "*/2 * * * *", "*/7 * * * * *", "0 * * * *", "* * * * * *", "30 9 * * *")
cron_specs = st.lists(
    st.tuples(st.sampled_from(SCHEDULES), st.sampled_from(list(MisfirePolicy))),
    min_size=1,
    max_size=10,
)


async def test_concurrent_nodes_fire_what_one_node_would(
    nodes: tuple[TickerQ, TickerQ], clock: ManualClock
) -> None:
    """Property: whatever the schedules, misfire policies, outage, lead and batch
    sizes, two nodes materializing at once make exactly the fires one node would,
    each once."""
    first, second = nodes
    loop = asyncio.get_running_loop()

    async def until_caught_up(store: Store, batch_size: int, now: datetime, lead: float) -> int:
        created = 0
        while True:
            fired = await fire_due_crons(
                store, now, normal, GRACE, batch_size=batch_size, lead=lead
            )
            created += fired.created
            if not fired.behind:
                return created

    async def check(
        specs: list[tuple[str, MisfirePolicy]], outage: int, sizes: list[int], lead: float
    ) -> None:
        crons = [await first.cron_tickers.add("alpha", e, misfire=p) for e, p in specs]
        clock.tick(outage)
        now = clock.now()
        try:
            created = await asyncio.gather(
                until_caught_up(first.store, sizes[0], now, lead),
                until_caught_up(second.store, sizes[1], now, lead),
            )
            fires = await _fires_of(first, crons)
            assert set(fires.values()) <= {1}
            assert sum(created) == sum(fires.values())
            for cron in crons:
                expected, cursor = _expected(cron, now, lead)
                assert {fire for cron_id, fire in fires if cron_id == cron.id} == expected
                assert (await first.cron_tickers.get(cron.id)).next_fire_at == cursor
        finally:
            for cron in crons:
                await first.cron_tickers.delete(cron.id)

    @settings(
        max_examples=12,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        cron_specs,
        st.integers(0, 2400),
        st.lists(st.integers(1, 6), min_size=2, max_size=2),
        st.sampled_from([0.0, 0.0, 1.5, 30.0, 90.0]),
    )
    def drive(
        specs: list[tuple[str, MisfirePolicy]], outage: int, sizes: list[int], lead: float
    ) -> None:
        asyncio.run_coroutine_threadsafe(check(specs, outage, sizes, lead), loop).result(timeout=60)

    await asyncio.to_thread(drive)


async def test_a_round_costs_a_bounded_number_of_statements(
    nodes: tuple[TickerQ, TickerQ], clock: ManualClock, store_kind: str
) -> None:
    """SQL stores: due crons are materialized with a few statements per batch in one
    transaction, not a transaction per cron (10,000 crons took 25 s on PostgreSQL)."""
    if store_kind == "memory":
        pytest.skip("no statements")
    app, _ = nodes
    count = 150
    crons = [await app.cron_tickers.add("alpha", "* * * * *") for _ in range(count)]
    clock.tick(MINUTE)
    store: Any = app.store
    engines = [store.sa_engine.sync_engine] + ([store._writer] if store._writer is not None else [])
    statements: list[str] = []
    transactions: list[object] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_notify" in statement:
            statements.append("NOTIFY")
        elif not statement.lstrip().upper().startswith("BEGIN"):
            statements.append(statement.split(None, 1)[0].upper())

    def on_begin(conn: Any) -> None:
        transactions.append(conn)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "begin", on_begin)
    try:
        fired = await fire_due_crons(app.store, clock.now(), normal, GRACE)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "begin", on_begin)

    assert fired.created == count
    # one batch: read, cursors, fires (and on PostgreSQL the node's paced notice that
    # rows changed, at most one per transaction)
    notice = ["NOTIFY"] if store_kind == "postgresql" else []
    assert statements == ["SELECT", "UPDATE", "INSERT", *notice]
    assert len(transactions) == 1
    assert set((await _fires_of(app, crons)).values()) == {1}

"""Store contract: rate limits and per-key concurrency, kept by the claim (issue 12).

Each test runs on every store (memory, SQLite, PostgreSQL, with and without the
hot paths): the claim is given :class:`~tickerq.limits.Gates` as the engine
builds them, and what it starts is checked against the limits.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contract.conftest import Ops
from tickerq import RateLimit, Status, TickerContext, TickerQ
from tickerq.limits import APP_BUCKET, Gates, function_bucket, named_bucket
from tickerq.testing import advance, run_until_idle

MakeApp = Callable[..., TickerQ]


def _rate(function: str, text: str, bucket: str | None = None) -> Gates:
    name = bucket or function_bucket(function)
    return Gates(buckets={name: RateLimit.parse(text)}, of_function={function: (name,)})


async def test_a_rate_limit_lets_through_its_limit_per_window(ops: Ops) -> None:
    for _ in range(8):
        await ops.add("alpha")
    await ops.add("beta")
    gates = _rate("alpha", "3/10s")
    t0 = ops.now
    first = await ops.claim(t0, gates=gates)
    assert Counter(j.function for j in first) == {"alpha": 3, "beta": 1}
    assert gates.blocked and gates.blocked_until == t0 + timedelta(seconds=10)
    # Within the window: nothing more of alpha, however many slots are free.
    assert await ops.claim(t0 + timedelta(seconds=9.999), gates=gates) == []
    assert gates.blocked_until == t0 + timedelta(seconds=10)
    # The window of the first three has passed: three more.
    second = await ops.claim(t0 + timedelta(seconds=10), gates=gates)
    assert [j.function for j in second] == ["alpha"] * 3
    # The rows held back were left IDLE, without an attempt.
    waiting = await ops.app.time_tickers.query(status=["IDLE"])
    assert len(waiting) == 2
    for ticker in waiting:
        assert ticker.retry_count == 0 and ticker.executed_at is None
        assert await ops.app.time_tickers.attempts(ticker.id) == []


async def test_starts_spread_over_the_window_free_room_one_by_one(ops: Ops) -> None:
    for _ in range(6):
        await ops.add("alpha")
    gates = _rate("alpha", "2/10s")
    t0 = ops.now
    assert len(await ops.claim(t0, slots=1, gates=gates)) == 1
    assert len(await ops.claim(t0 + timedelta(seconds=4), gates=gates)) == 1
    assert await ops.claim(t0 + timedelta(seconds=6), gates=gates) == []
    # The first start leaves the window at t0+10: one more, not two.
    assert gates.blocked_until == t0 + timedelta(seconds=10)
    assert len(await ops.claim(t0 + timedelta(seconds=10), gates=gates)) == 1
    assert gates.blocked_until == t0 + timedelta(seconds=14)


async def test_a_named_limit_is_shared_by_its_functions(ops: Ops) -> None:
    for _ in range(3):
        await ops.add("alpha")
        await ops.add("beta")
    bucket = named_bucket("smtp")
    gates = Gates(
        buckets={bucket: RateLimit.parse("4/m")},
        of_function={"alpha": (bucket,), "beta": (bucket,)},
    )
    assert len(await ops.claim(gates=gates)) == 4
    assert await ops.claim(ops.at(59), gates=gates) == []
    assert len(await ops.claim(ops.at(60), gates=gates)) == 2


async def test_an_app_wide_limit_counts_every_function(ops: Ops) -> None:
    for name in ("alpha", "beta", "gamma"):
        await ops.add(name)
        await ops.add(name)
    gates = Gates(buckets={"app": RateLimit.parse("5/s")}, app_wide=True)
    assert len(await ops.claim(gates=gates)) == 5
    assert await ops.claim(gates=gates) == []
    assert len(await ops.claim(ops.at(1), gates=gates)) == 1


async def test_a_start_leaves_the_window_exactly_one_period_later(ops: Ops) -> None:
    """A window of a limit's period after a start no longer counts it (the window is
    the period up to now, its start excluded), at whole seconds too (a time stored
    without microseconds compares as the same instant, on every store)."""
    for _ in range(3):
        await ops.add("alpha")
    assert ops.now.microsecond == 0
    assert len(await ops.claim(slots=1, gates=_rate("alpha", "1/10s"))) == 1
    assert await ops.claim(ops.at(9.999999), slots=1, gates=_rate("alpha", "1/10s")) == []
    assert len(await ops.claim(ops.at(10), slots=1, gates=_rate("alpha", "1/10s"))) == 1


async def test_a_rate_limit_counts_the_starts_of_every_node(ops: Ops, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("one process: no other node shares a memory store")
    for _ in range(5):
        await ops.add("alpha")
    gates_a, gates_b = _rate("alpha", "3/m"), _rate("alpha", "3/m")
    assert len(await ops.claim(node="node-a", slots=2, gates=gates_a)) == 2
    assert len(await ops.claim(node="node-b", gates=gates_b)) == 1
    assert await ops.claim(node="node-a", gates=gates_a) == []
    assert gates_a.blocked_until == ops.at(60)


# -- per-key concurrency ---------------------------------------------------------------


class Order(BaseModel):
    tenant: str
    n: int = 0


@pytest.fixture
async def keyed(make_app: MakeApp) -> TickerQ:
    """An open app with ``per_tenant`` (at most 1 running per tenant) and ``plain``."""
    app = make_app()

    @app.function(concurrency_key=lambda order: order.tenant, max_per_key=1)
    async def per_tenant(ctx: TickerContext[Order]) -> None:
        return None

    @app.function()
    async def plain() -> None:
        return None

    await app.open()
    return app


def _per_key(**limits: int) -> Gates:
    return Gates(per_key=dict(limits))


async def _add(app: TickerQ, tenant: str, n: int = 0) -> Any:
    return await app.time_tickers.add("per_tenant", request=Order(tenant=tenant, n=n))


async def test_the_key_is_computed_at_enqueue_and_stored(keyed: TickerQ) -> None:
    ticker = await _add(keyed, "acme")
    assert ticker.concurrency_key == "acme"
    assert (await keyed.time_tickers.get(ticker.id)).concurrency_key == "acme"
    changed = await keyed.time_tickers.update(ticker.id, request=Order(tenant="globex"))
    assert changed.concurrency_key == "globex"
    assert (await keyed.time_tickers.get(ticker.id)).concurrency_key == "globex"


async def test_at_most_max_per_key_run_per_key(keyed: TickerQ, clock: Any) -> None:
    ops = Ops(keyed, clock)
    a = [await _add(keyed, "a", n) for n in range(3)]
    b = [await _add(keyed, "b", n) for n in range(2)]
    gates = _per_key(per_tenant=1)
    first = await ops.claim(functions=["per_tenant"], gates=gates)
    assert sorted(j.id for j in first) == sorted([a[0].id, b[0].id])
    assert await ops.claim(functions=["per_tenant"], gates=gates) == []
    assert gates.blocked
    done = next(j for j in first if j.id == a[0].id)
    await ops.complete(done, Status.DONE)
    second = await ops.claim(functions=["per_tenant"], gates=gates)
    assert [j.id for j in second] == [a[1].id]


async def test_a_busy_key_does_not_stand_in_front_of_others(keyed: TickerQ, clock: Any) -> None:
    ops = Ops(keyed, clock)
    busy = [await _add(keyed, "busy", n) for n in range(20)]
    await advance(keyed, timedelta(seconds=1))
    other = await _add(keyed, "other")
    gates = _per_key(per_tenant=1)
    assert [j.id for j in await ops.claim(slots=1, functions=["per_tenant"], gates=gates)] == [
        busy[0].id
    ]
    # Twenty older rows of the busy key wait; the other key's row is next.
    assert [j.id for j in await ops.claim(slots=1, functions=["per_tenant"], gates=gates)] == [
        other.id
    ]


async def test_rows_without_a_key_are_not_limited(keyed: TickerQ, clock: Any) -> None:
    ops = Ops(keyed, clock)
    for _ in range(3):
        await keyed.time_tickers.add("plain")
        await _add(keyed, "a")
    gates = _per_key(per_tenant=1)
    claimed = await ops.claim(functions=["per_tenant", "plain"], gates=gates)
    assert Counter(j.function for j in claimed) == {"plain": 3, "per_tenant": 1}


async def test_a_key_counts_the_runs_of_every_node(
    keyed: TickerQ, clock: Any, store_kind: str
) -> None:
    if store_kind == "memory":
        pytest.skip("one process: no other node shares a memory store")
    ops = Ops(keyed, clock)
    for n in range(3):
        await _add(keyed, "a", n)
    gates = _per_key(per_tenant=2)
    assert len(await ops.claim(node="node-a", slots=1, functions=["per_tenant"], gates=gates)) == 1
    assert len(await ops.claim(node="node-b", functions=["per_tenant"], gates=gates)) == 1
    assert await ops.claim(node="node-b", functions=["per_tenant"], gates=gates) == []


@pytest.mark.parametrize("general", ["node-a", "node-b", None])
async def test_hot_and_general_claims_keep_the_same_limits(
    keyed: TickerQ, clock: Any, store_kind: str, general: str | None
) -> None:
    """A claim on the hot path and one on the general path (a node with a capacity
    limit takes it) count the same starts and the same running keys, in either
    order: a rate limit of 3 and at most 2 per key, across two nodes."""
    if store_kind == "memory":
        pytest.skip("one process: no other node shares a memory store")
    ops = Ops(keyed, clock)
    a = [await _add(keyed, "a", n) for n in range(4)]
    b = [await _add(keyed, "b", n) for n in range(2)]

    def gates() -> Gates:
        gates = _rate("per_tenant", "3/m")
        gates.per_key["per_tenant"] = 2
        return gates

    def claim(node: str, gated: Gates, slots: int = 100) -> Any:
        capacity = {"plain": 5} if node == general else None
        return ops.claim(
            node=node, slots=slots, functions=["per_tenant"], gates=gated, capacity=capacity
        )

    assert [j.id for j in await claim("node-a", gates(), slots=1)] == [a[0].id]
    # key a has one run of two; the rate limit room for two more: a1 and b0 (a2, a3
    # and b1 wait)
    assert {j.id for j in await claim("node-b", gates())} == {a[1].id, b[0].id}
    later = gates()
    assert await claim("node-a", later) == []
    assert later.blocked and later.blocked_until == ops.at(60)
    waiting = [a[2], a[3], b[1]]
    assert {(await ops.get(t.id)).status for t in waiting} == {Status.IDLE}


@pytest.mark.parametrize("seed", range(3))
async def test_random_claims_with_limits_binding_together_break_none(
    keyed: TickerQ, clock: Any, store_kind: str, seed: int
) -> None:
    """Two nodes claim at random times and slots, on the hot and the general path
    at random, while a function's own rate limit, the app-wide one and a per-key
    limit all bind; jobs end at random. After every claim no 10 s window holds more
    starts than a rate limit allows and no key runs twice at once; in
    the end every ticker has run."""
    rng = random.Random(seed)
    ops = Ops(keyed, clock)
    tenants = ["a", "b", "c"]
    key_of = {}
    for n in range(24):
        ticker = await _add(keyed, rng.choice(tenants), n)
        key_of[ticker.id] = ticker.concurrency_key
    for _ in range(8):
        key_of[(await ops.add("plain")).id] = None
    ids = set(key_of)

    def gates() -> Gates:
        gates = _rate("per_tenant", "4/10s")
        gates.buckets[APP_BUCKET] = RateLimit.parse("6/10s")
        gates.app_wide = True
        gates.per_key["per_tenant"] = 1
        return gates

    starts: list[tuple[Any, str]] = []  # (time, function)
    running: dict[Any, tuple[Any, str | None, str]] = {}  # id -> (job, key, node)
    ran: set[Any] = set()
    for step in range(200):
        if step % 3 == 0:
            clock.set(ops.at(rng.choice([0.0, 0.5, 1.0, 2.5, 4.0])))
        node = rng.choice(["node-a", "node-b"])
        general = store_kind != "memory" and rng.random() < 0.5
        jobs = await ops.claim(
            node=node,
            slots=rng.randint(1, 5),
            functions=["per_tenant", "plain"],
            gates=gates(),
            capacity={"other": 9} if general else None,
        )
        for job in jobs:
            assert job.id not in ran, "a ticker started twice"
            ran.add(job.id)
            running[job.id] = (job, key_of[job.id], node)
            starts.append((ops.now, job.function))
        window = [f for t, f in starts if t > ops.now - timedelta(seconds=10)]
        assert len(window) <= 6, f"step {step}: {len(window)} starts in 10 s (app: 6)"
        assert window.count("per_tenant") <= 4, f"step {step}: per_tenant over 4 in 10 s"
        keys = Counter(k for _, k, _ in running.values() if k is not None)
        assert max(keys.values(), default=0) <= 1, f"step {step}: {keys}"
        for ident in [i for i in running if rng.random() < 0.4]:
            job, _, owner = running.pop(ident)
            await ops.complete(job, Status.DONE, node=owner)
        if ran == ids:
            break
    assert ran == ids, f"{len(ids - ran)} tickers never ran"


# -- the engine --------------------------------------------------------------------------


async def test_the_engine_keeps_a_rate_limit_and_runs_the_rest_later(make_app: MakeApp) -> None:
    app = make_app(max_concurrency=10)
    started: list[float] = []

    @app.function(rate_limit="2/10s")
    async def limited() -> None:
        started.append((app.clock.now() - t0).total_seconds())

    async with app:
        t0 = app.clock.now()
        tickers = [await limited.enqueue() for _ in range(5)]
        await run_until_idle(app)
        assert started == [0, 0]
        await advance(app, timedelta(seconds=10))
        assert started == [0, 0, 10, 10]
        await advance(app, timedelta(seconds=10))
        assert started == [0, 0, 10, 10, 20]
        ended = [await app.time_tickers.get(t.id) for t in tickers]
    # (the throttled ones started late: DUE_DONE)
    assert [(t.status.is_success, t.retry_count) for t in ended] == [(True, 0)] * 5


async def test_the_engine_keeps_a_named_limit(make_app: MakeApp) -> None:
    app = make_app(max_concurrency=10, limits={"smtp": RateLimit(3, per=60)})
    count: Counter[str] = Counter()

    @app.function(rate_limit="smtp")
    async def mail_a() -> None:
        count["a"] += 1

    @app.function(rate_limit="smtp")
    async def mail_b() -> None:
        count["b"] += 1

    async with app:
        for _ in range(3):
            await mail_a.enqueue()
            await mail_b.enqueue()
        await run_until_idle(app)
        assert sum(count.values()) == 3
        await advance(app, timedelta(seconds=60))
        assert sum(count.values()) == 6


async def test_the_engine_keeps_a_per_key_limit(make_app: MakeApp) -> None:
    app = make_app(max_concurrency=10)
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    @app.function(concurrency_key=lambda order: order.tenant, max_per_key=1)
    async def per_tenant(ctx: TickerContext[Order]) -> None:
        order = ctx.request
        running[order.tenant] += 1
        most[order.tenant] = max(most[order.tenant], running[order.tenant])
        await asyncio.sleep(0.005)  # real time: the others are claimed meanwhile
        running[order.tenant] -= 1

    async with app:
        for n in range(3):
            await per_tenant.enqueue(Order(tenant="a", n=n))
            await per_tenant.enqueue(Order(tenant="b", n=n))
        await run_until_idle(app)
        done = await app.time_tickers.count(status=["DONE", "DUE_DONE"])
    assert done == 6
    assert most == {"a": 1, "b": 1}


async def _stored_starts(ops: Ops, store_kind: str) -> int:
    """How many rows of starts the store keeps (every bucket)."""
    store: Any = ops.store
    if store_kind == "memory":
        return sum(len(kept) for kept in store._rate_starts.values())
    from sqlalchemy import text

    async with store.sa_engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM tickerq_rate_starts"))).scalar())


async def test_the_starts_of_a_long_period_stay_few_rows_and_count_exactly(
    ops: Ops, store_kind: str
) -> None:
    """A start is stored in its slot (a hundredth of the period at most): 120 claims
    a second apart under 1000/h keep 5 rows, not 120, on the hot and the general
    path alike, and every start still counts until a period after it (the cost of a
    claim does not grow with the throughput over a long period)."""
    for _ in range(160):
        await ops.add("alpha")
    rate = RateLimit.parse("1000/h")
    assert rate.slot == timedelta(seconds=30)
    for second in range(120):
        general = store_kind != "memory" and second % 2 == 1
        gates = _rate("alpha", "1000/h")
        claimed = await ops.claim(
            ops.at(second), slots=1, gates=gates, capacity={"other": 9} if general else None
        )
        assert len(claimed) == 1, second
    # (PostgreSQL: and one row of the starts the node holds ahead, counted as used)
    ahead = 0 if store_kind == "memory" else ops.store._prepaid.held(function_bucket("alpha"))
    assert await _stored_starts(ops, store_kind) <= 120 // 30 + 1 + (ahead > 0)
    bucket = function_bucket("alpha")
    usage = await ops.store.rate_usage({bucket: rate.per}, ops.at(119))
    assert usage == {bucket: 120 + ahead}
    # A full limit of 120 per hour: the start at t0 (stored at t0, a slot's end)
    # leaves an hour later; those of seconds 1-30, stored at t0+30, 30 s after that.
    full = Gates(
        buckets={bucket: RateLimit(120, per=timedelta(hours=1))},
        of_function={"alpha": (bucket,)},
    )
    assert len(await ops.claim(ops.at(3600), gates=full)) == 1
    assert await ops.claim(ops.at(3600), gates=full) == []
    assert full.blocked_until == ops.at(3630)
    assert await ops.claim(ops.at(3629.999), gates=full) == []
    assert len(await ops.claim(ops.at(3630), gates=full)) == 30

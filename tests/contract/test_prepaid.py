"""Room held ahead on PostgreSQL: limits that do not bind cost (almost) no exact claim,
and limits that bind still hold (issue 12; :mod:`tickerq.stores.sql.prepaid`).

Nodes are apps of their own on one database (each store keeps its own reserves and
leases), claiming with explicit times. On the other stores (and with the hot path
off) the same scenarios run with every claim exact: the limits must hold the same.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contract.conftest import Ops
from tickerq import RateLimit, Status, TickerContext, TickerQ
from tickerq.limits import Gates, function_bucket
from tickerq.stores.base import Job
from tickerq.stores.sql import SqlStore
from tickerq.stores.sql.hot import HotPath
from tickerq.stores.sql.prepaid import Prepaid

MakeApp = Callable[..., TickerQ]
SLOTS = 4
"""Each node's slots in the random runs."""
MS = timedelta(milliseconds=1)


class Order(BaseModel):
    tenant: str


async def _node(make_app: MakeApp, node_id: str) -> TickerQ:
    app = make_app(node_id=node_id)

    @app.function(concurrency_key=lambda order: order.tenant, max_per_key=1)
    async def keyed(ctx: TickerContext[Order]) -> None:
        return None

    @app.function()
    async def rated() -> None:
        return None

    await app.open()
    return app


def _gates(rate: str | None = None, per_key: int | None = None) -> Gates:
    gates = Gates()
    if rate is not None:
        bucket = function_bucket("rated")
        gates.buckets[bucket] = RateLimit.parse(rate)
        gates.of_function["rated"] = (bucket,)
    if per_key is not None:
        gates.per_key["keyed"] = per_key
    return gates


def _prepaid_on(store_kind: str) -> bool:
    return store_kind == "postgresql" and SqlStore.use_hot_path


class _Exact:
    """Counts the exact (gated) claims of the hot path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = HotPath.finish_and_claim_gated

        async def counted(path: HotPath, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(path, *args, **kwargs)

        monkeypatch.setattr(HotPath, "finish_and_claim_gated", counted)


async def _claim(ops: Ops, node: str, gates: Gates, slots: int, **kwargs: Any) -> list[Job]:
    kwargs.setdefault("functions", ["keyed", "rated"])
    return await ops.claim(node=node, slots=slots, gates=gates, **kwargs)


async def test_a_rate_limit_far_from_binding_takes_one_exact_claim_in_many(
    make_app: MakeApp, clock: Any, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await _node(make_app, "node-a")
    ops = Ops(app, clock)
    for _ in range(60):
        await ops.add("rated")
    exact = _Exact(monkeypatch)
    claimed = []
    for _ in range(12):
        claimed += await _claim(ops, "node-a", _gates(rate="1000/s"), 5)
    assert len(claimed) == 60 and len({j.id for j in claimed}) == 60
    if _prepaid_on(store_kind):
        assert exact.calls == 1, "every claim after the first should use the reserve"
    # Once the reserve's slot has passed, the next exact claim gives back what it did
    # not use (and, taking nothing, asks for no new one): the window counts 60.
    clock.tick(0.5)
    assert await _claim(ops, "node-a", _gates(rate="1000/s"), 5) == []
    bucket = function_bucket("rated")
    usage = await ops.store.rate_usage({bucket: timedelta(seconds=1)}, ops.now)
    assert usage == {bucket: 60}


async def test_a_plain_claim_past_its_deadline_claims_nothing(
    make_app: MakeApp, store_kind: str
) -> None:
    """A node frozen between deciding and sending a claim on room held ahead starts
    nothing once that room has run out: the database's clock decides."""
    if not _prepaid_on(store_kind):
        pytest.skip("PostgreSQL's hot path only")
    app = await _node(make_app, "node-a")
    for _ in range(3):
        await app.time_tickers.add("rated")
    hot = app.store.hot  # type: ignore[attr-defined]
    assert isinstance(hot, HotPath)
    now = datetime.now(UTC)

    async def claim(deadline: datetime) -> list[Job]:
        jobs, _, _ = await hot.finish_and_claim(
            now + timedelta(hours=1),
            node="node-a",
            lease_until=now + timedelta(hours=2),
            slots=1,
            long_limit=0,
            functions=["rated"],
            finished=[],
            deadline=deadline,
        )
        return jobs

    assert await claim(now - timedelta(milliseconds=1)) == []
    assert len(await claim(now + timedelta(seconds=30))) == 1


@pytest.mark.parametrize("general", [False, True])
async def test_a_lease_counts_as_running_on_every_key_for_the_other_nodes(
    make_app: MakeApp, clock: Any, store_kind: str, monkeypatch: pytest.MonkeyPatch, general: bool
) -> None:
    """max_per_key 8. Node A's first (exact) claim of 2 leases it room for 2 per key.
    Once those runs ended, node B, on either path, counts A's unused room on key k
    as running there: it may start 6, not 8; A's next claim, plain, takes the 2.
    When A's lease ran out (and A runs nothing), B may fill the key."""
    if store_kind == "memory":
        pytest.skip("one process: no other node shares a memory store")
    a = await _node(make_app, "node-a")
    b = await _node(make_app, "node-b")
    ops_a, ops_b = Ops(a, clock), Ops(b, clock)
    for _ in range(30):
        await a.time_tickers.add("keyed", request=Order(tenant="k"))
    exact = _Exact(monkeypatch)
    first = await _claim(ops_a, "node-a", _gates(per_key=8), 2)
    assert len(first) == 2
    for job in first:
        await ops_a.complete(job, Status.DONE, node="node-a")
    # A runs nothing now; its lease's room is held for it all the same
    capacity = {"other": 9} if general else None
    others = await _claim(ops_b, "node-b", _gates(per_key=8), 100, capacity=capacity)
    assert len(others) == (6 if _prepaid_on(store_kind) else 8)
    mine = await _claim(ops_a, "node-a", _gates(per_key=8), 2)
    if _prepaid_on(store_kind):
        assert len(mine) == 2 and exact.calls == 2 - general, "A's claim should be plain"
    else:
        assert mine == []
    assert await _claim(ops_b, "node-b", _gates(per_key=8), 100, capacity=capacity) == []
    # A ends its runs and its lease runs out: B may take A's room too.
    for job in mine:
        await ops_a.complete(job, Status.DONE, node="node-a")
    clock.tick(11)
    taken = await _claim(ops_b, "node-b", _gates(per_key=8), 100, capacity=capacity)
    assert len(taken) == 8 - len(others)


@pytest.mark.parametrize(
    ("seed", "rate_limit", "per_key"),
    [(0, 6, 2), (1, 40, 6), (2, 400, 24), (3, 400, 2), (4, 40, 8), (5, 400, 12), (6, 400, 8)],
)
async def test_nodes_with_room_ahead_never_break_a_limit(
    make_app: MakeApp,
    clock: Any,
    store_kind: str,
    seed: int,
    rate_limit: int,
    per_key: int,
) -> None:
    """Three nodes (stores of their own, 4 slots each) claim at random moments with
    their free slots, some on the general path, while a rate limit and a per-key
    limit bind at times and not at others; runs end at random, time only goes
    forward. After every claim: no window of the rate limit's period holds more
    starts than it allows, counted at the claims' own times, and no key runs more
    than its limit; in the end every ticker has run."""
    if store_kind == "memory":
        pytest.skip("one process: no other node shares a memory store")
    rng = random.Random(seed)
    rate = f"{rate_limit}/2s"
    names = ["node-a", "node-b", "node-c"]
    nodes = {name: Ops(await _node(make_app, name), clock) for name in names}
    any_ops = nodes["node-a"]
    key_of: dict[Any, str | None] = {}
    for n in range(150):
        if n % 3:
            ticker = await any_ops.app.time_tickers.add(
                "keyed", request=Order(tenant=rng.choice("xxy"))
            )
            key_of[ticker.id] = ticker.concurrency_key
        else:
            key_of[(await any_ops.add("rated")).id] = None
    starts: list[datetime] = []
    running: dict[Any, tuple[Job, str]] = {}
    ran: set[Any] = set()
    for step in range(600):
        clock.tick(rng.choice([0.0, 0.0, 0.002, 0.01, 0.05, 0.2, 0.7]))
        name = rng.choice(names)
        general = rng.random() < 0.2
        free = SLOTS - sum(1 for _, owner in running.values() if owner == name)
        jobs = []
        if free > 0:  # a full node does not claim (its runs still end below)
            jobs = await _claim(
                nodes[name],
                name,
                _gates(rate=rate, per_key=per_key),
                free,
                capacity={"other": 9} if general else None,
                functions=rng.choice([["keyed"], ["rated"], ["keyed", "rated"]]),
            )
        for job in jobs:
            assert job.id not in ran, "a ticker started twice"
            ran.add(job.id)
            running[job.id] = (job, name)
            if job.function == "rated":
                starts.append(any_ops.now)
        window = [t for t in starts if t > any_ops.now - timedelta(seconds=2)]
        assert len(window) <= rate_limit, f"step {step}: {len(window)} starts in 2 s"
        keys = Counter(key_of[i] for i in running if key_of[i] is not None)
        assert max(keys.values(), default=0) <= per_key, f"step {step}: {keys}"
        for ident in [i for i in running if rng.random() < 0.3]:
            job, owner = running.pop(ident)
            await nodes[owner].complete(job, Status.DONE, node=owner)
        if ran == set(key_of):
            break
    assert ran == set(key_of), f"{len(set(key_of) - ran)} tickers never ran"


@pytest.mark.parametrize("kinds", ["rate", "per-key", "both"])
async def test_without_session_functions_each_kind_of_limit_claims(
    make_app: MakeApp, clock: Any, store_kind: str, monkeypatch: pytest.MonkeyPatch, kinds: str
) -> None:
    """Through PgBouncer (or for a role that may not make temporary functions) the
    gated claim is sent on its own between BEGIN and COMMIT: found here, a claim
    under only a rate limit or only a per-key limit failed (the statement of its
    form had fewer parameters than were sent, or some of no type)."""
    if not _prepaid_on(store_kind):
        pytest.skip("PostgreSQL's hot path only")

    async def none(path: HotPath, conn: Any, form: Any) -> bool:
        return False

    monkeypatch.setattr(HotPath, "_has_gated_function", none)
    app = await _node(make_app, "node-a")
    ops = Ops(app, clock)
    for _ in range(3):
        await app.time_tickers.add("keyed", request=Order(tenant="k"))
        await ops.add("rated")
    gates = _gates(
        rate="2/m" if kinds != "per-key" else None, per_key=2 if kinds != "rate" else None
    )
    jobs = await _claim(ops, "node-a", gates, 10)
    expected = {"rate": {"rated": 2, "keyed": 3}, "per-key": {"rated": 3, "keyed": 2}}
    expected["both"] = {"rated": 2, "keyed": 2}
    assert Counter(j.function for j in jobs) == expected[kinds]


async def test_a_claim_under_limits_gives_its_jobs_the_engines_lease(
    make_app: MakeApp, clock: Any
) -> None:
    """Found in review: the exact claim's lease of per-key room (10 s) once took the
    place of the jobs' own lease, on PostgreSQL's hot path."""
    app = await _node(make_app, "node-a")
    ops = Ops(app, clock)
    await app.time_tickers.add("keyed", request=Order(tenant="k"))
    await ops.add("rated")
    jobs = await _claim(ops, "node-a", _gates(rate="100/m", per_key=8), 10, lease=600)
    assert len(jobs) == 2
    for job in jobs:
        ticker = await app.time_tickers.get(job.id)
        assert ticker.lease_until == ops.now + timedelta(seconds=600)


async def test_a_node_whose_room_ran_out_on_the_way_claims_exactly_at_once(
    make_app: MakeApp, clock: Any, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain claim reached the database after its deadline (a freeze, a slow
    network) and claimed nothing: the store claims exactly in the same call, so the
    engine is not left waiting for work that is there."""
    if not _prepaid_on(store_kind):
        pytest.skip("PostgreSQL's hot path only")
    app = await _node(make_app, "node-a")
    ops = Ops(app, clock)
    for _ in range(3):
        await ops.add("rated")
    original = Prepaid.plain

    def late(room: Prepaid, *args: Any) -> Any:
        claim = original(room, *args)
        return None if claim is None else replace(claim, deadline=datetime.now(UTC) - MS)

    monkeypatch.setattr(Prepaid, "plain", late)
    exact = _Exact(monkeypatch)
    assert len(await _claim(ops, "node-a", _gates(rate="1000/s"), 1)) == 1  # exact
    assert exact.calls == 1
    assert len(await _claim(ops, "node-a", _gates(rate="1000/s"), 1)) == 1  # late: exact
    assert exact.calls == 2

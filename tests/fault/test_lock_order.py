"""A node's heartbeat and its own result writes must not deadlock on PostgreSQL.

Found by the kill -9 fault test: under load, ``heartbeat()`` (one UPDATE over every
row the node holds, locking them in table order) and ``complete()`` (a batch of
outcomes, one row after another in the order the jobs ended) run at the same time
on two pooled connections of the same node. They lock the same rows in different
orders and PostgreSQL aborts one of them with "deadlock detected". A lost
heartbeat lets the node's leases run out, and another node then runs its jobs a
second time. This test drives the two calls directly, without processes, so it
shows the lock-order problem in a second instead of once in a few full runs.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from tickerq import TickerContext, TickerQ, TimeTickerSpec
from tickerq.enums import Status
from tickerq.models import Node
from tickerq.stores.base import Outcome

ROUNDS = 5
JOBS = 200


async def _race(url: str) -> list[str]:
    app = TickerQ(url, node_id="n1")

    @app.function("f")
    async def f(ctx: TickerContext) -> None: ...

    await app.open()
    store = app.store
    errors: list[str] = []
    rng = random.Random(7)
    try:
        for _ in range(ROUNDS):
            now = datetime.now(UTC)
            await app.time_tickers.add_many(
                [TimeTickerSpec(function="f", execution_time=now) for _ in range(JOBS)]
            )
            lease = now + timedelta(seconds=60)
            jobs = await store.claim(
                now, node="n1", lease_until=lease, slots=JOBS, capacity={}, functions=["f"]
            )
            assert len(jobs) == JOBS
            rng.shuffle(jobs)  # jobs end in any order
            outcomes = [
                Outcome(job=j, status=Status.DONE, node="n1", started_at=now, finished_at=now)
                for j in jobs
            ]
            node = Node(
                id="n1", started_at=now, last_heartbeat=now, version="x", max_concurrency=16
            )

            async def write_results() -> None:
                for i in range(0, len(outcomes), 50):  # the engine's flush batches
                    await store.complete(outcomes[i : i + 50])

            async def heartbeats() -> None:
                for _ in range(10):
                    await store.heartbeat(node, [j.id for j in jobs], lease)
                    await asyncio.sleep(0)

            for result in await asyncio.gather(
                write_results(), heartbeats(), return_exceptions=True
            ):
                if isinstance(result, Exception):
                    errors.append(f"{type(result).__name__}: {str(result).splitlines()[0]}")
    finally:
        await app.stop()
    return errors


@pytest.mark.fault
@pytest.mark.timeout(60)
def test_heartbeat_and_complete_of_one_node_do_not_deadlock(pg_url: str) -> None:
    errors = asyncio.run(_race(pg_url))
    assert errors == [], f"{len(errors)} of {ROUNDS} rounds failed: {errors[:3]}"

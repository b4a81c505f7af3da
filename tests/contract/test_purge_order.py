"""Retention purges ended rows in the order they ended, on every store."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from support import START
from tickerq import Status, TickerQ

if TYPE_CHECKING:
    from contract.conftest import Ops


async def test_purge_follows_end_time_not_insertion_order(app: TickerQ, ops: Ops) -> None:
    """Found: the memory store purged in insertion order (it walked its dict)."""
    tickers = [await ops.add("alpha") for _ in range(4)]
    jobs = {j.id: j for j in await ops.claim()}
    for offset, ticker in enumerate(reversed(tickers)):  # the last added ends first
        finished = START + timedelta(seconds=10 + offset)
        await ops.complete(jobs[ticker.id], Status.DONE, finished_at=finished)
    cutoff = START + timedelta(minutes=1)
    assert await ops.store.purge(cutoff, 1) == 1
    assert await ops.store.get_time_ticker(tickers[-1].id) is None
    assert await ops.store.purge(cutoff, 2) == 2
    assert [t.id for t in tickers if await ops.store.get_time_ticker(t.id)] == [tickers[0].id]
    assert await ops.store.purge(START + timedelta(seconds=12), 10) == 0  # ended at 13 s
    assert await ops.store.purge(cutoff, 10) == 1


async def test_purge_never_deletes_a_waiting_grandchild(app: TickerQ, ops: Ops) -> None:
    """Found (issue 9 review): the SQL stores purged an ended row whose children had
    all ended, and ON DELETE CASCADE took a grandchild still waiting with them."""
    parent = await ops.add("alpha")
    child = await ops.add("beta", parent_id=parent.id)
    grandchild = await ops.add("gamma", parent_id=child.id, execution_time=ops.at(3600))
    await ops.run(parent.id, Status.DONE)
    ops.clock.tick(5)
    await ops.run(child.id, Status.DONE)
    assert (await ops.get(grandchild.id)).status is Status.IDLE
    ops.clock.tick(600)
    cutoff = START + timedelta(minutes=5)
    while await ops.store.purge(cutoff, 100):
        pass
    assert await ops.store.get_time_ticker(grandchild.id) is not None
    assert (await ops.get(grandchild.id)).status is Status.IDLE

"""Store contract: ``depth`` (waiting and due rows by function and priority, what the
Prometheus metrics sample) and ``ping`` (what readiness probes call)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support import START
from tickerq import Priority, Status, TickerQ, TickerStateError
from tickerq.stores.reads import DepthGroup

if TYPE_CHECKING:
    from contract.conftest import Ops


async def test_depth_counts_waiting_and_due_rows_by_function_and_priority(
    app: TickerQ, ops: Ops
) -> None:
    assert await ops.store.depth(ops.now) == []
    await ops.add("alpha")  # due now
    await ops.add("alpha", execution_time=START - timedelta(minutes=5))  # overdue
    await ops.add("alpha", execution_time=START + timedelta(hours=1))  # later
    parent = await ops.add("beta", execution_time=START + timedelta(hours=2))
    await ops.add("beta", parent_id=parent.id)  # waits for its parent: not counted
    await ops.add("high")
    await ops.add("long", execution_time=START + timedelta(seconds=30))
    await ops.add("gamma")
    ended = await ops.add("gamma")
    jobs = {j.id: j for j in await ops.claim(functions=["gamma"])}  # running: not waiting
    assert len(jobs) == 2
    await ops.complete(jobs[ended.id], Status.FAILED)  # ended: not waiting either
    cancelled = await ops.add("gamma", execution_time=START + timedelta(hours=1))
    await app.time_tickers.cancel(cancelled.id)

    assert await ops.store.depth(ops.now) == [
        DepthGroup("alpha", Priority.NORMAL, waiting=3, due=2),
        DepthGroup("beta", Priority.NORMAL, waiting=1, due=0),
        DepthGroup("high", Priority.HIGH, waiting=1, due=1),
        DepthGroup("long", Priority.LONG_RUNNING, waiting=1, due=0),
    ]
    # Due is counted at the time asked for: an hour on, alpha's later row is due too.
    later = await ops.store.depth(START + timedelta(hours=1))
    assert DepthGroup("alpha", Priority.NORMAL, waiting=3, due=3) in later
    assert DepthGroup("long", Priority.LONG_RUNNING, waiting=1, due=1) in later


async def test_depth_counts_a_chain_child_once_its_parent_released_it(
    app: TickerQ, ops: Ops
) -> None:
    parent = await ops.add("beta")
    await ops.add("alpha", parent_id=parent.id)
    assert await ops.store.depth(ops.now) == [DepthGroup("beta", Priority.NORMAL, 1, 1)]
    await ops.run(parent.id, Status.DONE)  # ends 2 s on: the child is due from then
    assert await ops.store.depth(ops.at(2)) == [DepthGroup("alpha", Priority.NORMAL, 1, 1)]


async def test_depth_counts_waiting_cron_occurrences(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "0 0 1 1 *")
    await ops.store.advance_cron_ticker(
        cron.id,
        expected_next=cron.next_fire_at,
        new_next=cron.next_fire_at,
        fires=[START - timedelta(seconds=1), START + timedelta(minutes=1)],
        priority=Priority.NORMAL,
        now=ops.now,
    )
    assert await ops.store.depth(ops.now) == [
        DepthGroup("alpha", Priority.NORMAL, waiting=2, due=1)
    ]


async def test_ping_answers_while_open_and_refuses_when_closed(
    make_app: Callable[..., TickerQ], store_kind: str
) -> None:
    app = make_app()
    await app.open()
    await app.store.ping()
    await app.stop()
    if store_kind == "memory":
        await app.store.ping()  # nothing to reach: always there
    else:
        with pytest.raises(TickerStateError):
            await app.store.ping()


async def test_sqlite_ping_fails_once_the_file_is_gone(
    make_app: Callable[..., TickerQ], store_url: str, tmp_path: Path
) -> None:
    if not store_url.startswith("sqlite"):
        pytest.skip("a SQLite file")
    app = make_app()
    await app.open()
    path = Path(store_url.removeprefix("sqlite:///"))
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    away = tmp_path / "away"
    away.mkdir()
    for file in files:  # the volume is gone, say
        if file.exists():
            shutil.move(file, away / file.name)
    try:
        with pytest.raises(Exception, match="unable to open"):
            await app.store.ping()
        assert path.name not in {p.name for p in path.parent.iterdir()}  # ping made no file
        # The pool's open connections still read the moved file: only ping notices.
        assert await app.store.depth(START) == []
    finally:
        for file in files:
            if (away / file.name).exists():
                shutil.move(away / file.name, file)
    await app.store.ping()

"""A node whose event loop is blocked must not hold the SQLite write lock meanwhile.

Found by probing (issue 8, item 11): the SQL store ran SQLite write transactions
through aiosqlite, one await per statement; when a job blocked the event loop
between two of them, the transaction kept the file's write lock, and every node
sharing the file waited (10 s in the probe). Write transactions now run whole on
the store's writer thread (and the enqueue fast path runs its transaction in
one call, see tests/integration/test_sqlite_enqueue.py): node A's write here
goes through that general path (a cron ticker), node B's is an enqueue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import event

from tickerq.models import CronTicker, TimeTicker
from tickerq.stores.sql import SqlStore

BLOCK = 3.0
"""How long node A's event loop is blocked in the middle of its write."""


def ticker() -> TimeTicker:
    now = datetime.now(UTC)
    return TimeTicker(id=uuid4(), function="f", execution_time=now, created_at=now, updated_at=now)


def cron() -> CronTicker:
    now = datetime.now(UTC)
    return CronTicker(
        id=uuid4(), function="f", expression="* * * * *", timezone="UTC", created_at=now,
        updated_at=now,
    )  # fmt: skip


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread of its own: node A."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def test_a_blocked_loop_does_not_hold_up_other_nodes_writes(
    tmp_path: Path, other_loop: asyncio.AbstractEventLoop
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    def on_a(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, other_loop).result(30)

    node_a, node_b = SqlStore(url), SqlStore(url)
    await asyncio.to_thread(on_a, node_a.open())
    await node_b.open()
    inserted = threading.Event()

    def block_a_loop_mid_transaction(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if inserted.is_set() or not statement.startswith("INSERT INTO tickerq_cron_tickers"):
            return
        # A job on node A blocks its event loop right now, while A's write is under way.
        other_loop.call_soon_threadsafe(time.sleep, BLOCK)
        time.sleep(0.2)  # the loop is surely blocked before the transaction goes on
        inserted.set()

    engines = [node_a.sa_engine.sync_engine, getattr(node_a, "_writer", None)]
    for engine in engines:
        if engine is not None:
            event.listen(engine, "after_cursor_execute", block_a_loop_mid_transaction)
    try:
        writing = asyncio.get_running_loop().run_in_executor(
            None, on_a, node_a.add_cron_ticker(cron())
        )
        assert await asyncio.to_thread(inserted.wait, 10)
        began = time.monotonic()
        await node_b.add_time_tickers([ticker()])
        waited = time.monotonic() - began
        await writing
    finally:
        await asyncio.to_thread(on_a, node_a.close())
        await node_b.close()
    assert waited < BLOCK / 2, f"node B waited {waited:.2f} s for node A's blocked loop"

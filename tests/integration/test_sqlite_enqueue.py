"""The SQLite enqueue fast path (:mod:`tickerq.stores.sql.enqueue_sqlite`).

It writes rows with its own prepared statement, so these tests hold it to what
the general (SQLAlchemy) path stores, byte for byte; to the contract's errors
(duplicates, missing parents: nothing stored); to chains; and to its group
commit: concurrent adds from tasks and threads are all committed, each before
its await returns, also when the file's write lock is taken by someone else.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tickerq import (
    DuplicateTickerError,
    RunCondition,
    Status,
    TickerContext,
    TickerNotFoundError,
    TickerQ,
)
from tickerq.enums import Priority, TickerKind
from tickerq.models import TimeTicker
from tickerq.stores.sql import SqlStore

NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def ticker(**changes: Any) -> TimeTicker:
    values: dict[str, Any] = {
        "id": uuid4(),
        "function": "f",
        "execution_time": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(changes)
    return TimeTicker(**values)


def rows(path: Path, ids: list[UUID]) -> list[tuple[Any, ...]]:
    """Every column of the rows, with each value's SQLite storage class."""
    db = sqlite3.connect(path)
    try:
        names = [r[1] for r in db.execute("PRAGMA table_info(tickerq_tickers)")]
        typed = ", ".join(f"{n}, typeof({n})" for n in names if n != "id")
        return [
            db.execute(f"SELECT {typed} FROM tickerq_tickers WHERE id = ?", (i.hex,)).fetchone()
            for i in ids
        ]
    finally:
        db.close()


def count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM tickerq_tickers").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SqlStore(f"sqlite:///{tmp_path / 'q.db'}")
    await opened.open()
    yield opened
    await opened.close()


VARIED = [
    {},
    {"request": {"to": "a@b.c", "n": [1, 2.5, None, True], "ü": "ø"}},
    {"request": 1.0},
    {"request": "text"},
    {"request": 12345678901234567890},
    {"retries": 3, "retry_intervals": (10.0, 60.5, 300.0), "timeout": 2.5},
    {"priority": Priority.HIGH, "description": "with 'quotes' and\nlines"},
    {"execution_time": datetime(2031, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=2)))},
    {"execution_time": datetime(9000, 1, 1, tzinfo=UTC), "updated_at": NOW + timedelta(1)},
    {"status": Status.QUEUED, "retry_count": 2},
]


async def test_rows_are_stored_as_the_general_path_stores_them(tmp_path: Path) -> None:
    fast_path, general_path = tmp_path / "fast.db", tmp_path / "general.db"
    fast, general = SqlStore(f"sqlite:///{fast_path}"), SqlStore(f"sqlite:///{general_path}")
    await fast.open()
    await general.open()
    try:
        tickers = [ticker(**changes) for changes in VARIED]
        parent = ticker()
        children = [
            ticker(parent_id=parent.id, execution_time=None, run_condition=RunCondition.ON_SUCCESS),
            ticker(parent_id=parent.id, execution_time=NOW + timedelta(hours=1)),
        ]
        for t in tickers:
            await fast.add_time_tickers([t])
        await fast.add_time_tickers([parent, *children])
        await general._insert_time_tickers([*tickers, parent, *children], set())
        ids = [t.id for t in [*tickers, parent, *children]]
        assert rows(fast_path, ids) == rows(general_path, ids)
        for t in [*tickers, parent, *children]:
            assert await fast.get_time_ticker(t.id) == await general.get_time_ticker(t.id)
    finally:
        await fast.close()
        await general.close()


async def test_a_duplicate_id_stores_nothing_of_its_add(store: SqlStore, tmp_path: Path) -> None:
    first = ticker()
    await store.add_time_tickers([first])
    with pytest.raises(DuplicateTickerError, match=str(first.id)):
        await store.add_time_tickers([ticker(id=first.id, request=2)])
    fresh = ticker()
    with pytest.raises(DuplicateTickerError, match=str(first.id)):
        await store.add_time_tickers([fresh, ticker(id=first.id)])
    assert await store.get_time_ticker(fresh.id) is None
    assert count(tmp_path / "q.db") == 1
    assert await store.get_time_ticker(first.id) == first


async def test_a_bad_add_fails_alone_in_a_group_commit(store: SqlStore, tmp_path: Path) -> None:
    taken = ticker()
    await store.add_time_tickers([taken])
    good = [ticker() for _ in range(20)]
    fresh = ticker()
    orphan = ticker(parent_id=uuid4())
    adds = [
        *([t] for t in good),
        [fresh, ticker(id=taken.id)],  # two rows: rolled back to its savepoint
        [ticker(id=taken.id)],
        [orphan],
    ]
    outcomes = await asyncio.gather(
        *(store.add_time_tickers(a) for a in adds), return_exceptions=True
    )
    assert outcomes[:20] == [None] * 20
    assert isinstance(outcomes[20], DuplicateTickerError)
    assert isinstance(outcomes[21], DuplicateTickerError)
    assert isinstance(outcomes[22], TickerNotFoundError)
    assert str(orphan.parent_id) in str(outcomes[22])
    assert await store.get_time_ticker(fresh.id) is None
    assert count(tmp_path / "q.db") == 21


async def test_chains_through_the_fast_path(store: SqlStore) -> None:
    parent = ticker()
    child = ticker(parent_id=parent.id, execution_time=None)
    grandchild = ticker(parent_id=child.id, execution_time=None)
    await store.add_time_tickers([parent, child, grandchild])
    later = ticker(parent_id=parent.id, execution_time=None)  # parent waiting: fast path
    await store.add_time_tickers([later])
    for t in (child, grandchild, later):
        got = await store.get_time_ticker(t.id)
        assert got is not None and got.parent_id == t.parent_id and got.status is Status.IDLE
    # waiting for their parent: not due, however far the time goes
    assert await store.next_due_time() == NOW


async def test_a_child_of_an_ended_parent_is_resolved_at_once(store: SqlStore) -> None:
    parent = ticker()
    await store.add_time_tickers([parent])
    await store.cancel(TickerKind.TIME, parent.id, NOW)
    runs = ticker(parent_id=parent.id, execution_time=None, run_condition=RunCondition.ON_CANCELLED)
    skipped = ticker(
        parent_id=parent.id, execution_time=None, run_condition=RunCondition.ON_SUCCESS
    )
    await store.add_time_tickers([runs])
    await store.add_time_tickers([skipped])
    got_runs, got_skipped = (
        await store.get_time_ticker(runs.id),
        await store.get_time_ticker(skipped.id),
    )
    assert got_runs is not None and got_runs.status is Status.IDLE
    assert got_runs.execution_time is not None  # due now: its parent has ended
    assert got_skipped is not None and got_skipped.status is Status.SKIPPED


async def test_many_concurrent_enqueues_from_tasks_and_threads_are_all_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    app = TickerQ(f"sqlite:///{path}")

    @app.function()
    async def job(ctx: TickerContext[int]) -> None:
        return None

    stored: list[UUID] = []
    async with app:
        loop_added = await asyncio.gather(*(job.enqueue(n) for n in range(300)))

        def from_thread(base: int) -> list[UUID]:
            out = []
            for n in range(base, base + 50):
                t = app.sync.enqueue(job, n)
                db = sqlite3.connect(path)  # committed once the call returns
                try:
                    found = db.execute(
                        "SELECT count(*) FROM tickerq_tickers WHERE id = ?", (t.id.hex,)
                    ).fetchone()[0]
                finally:
                    db.close()
                assert found == 1
                out.append(t.id)
            return out

        threads = await asyncio.gather(
            *(asyncio.to_thread(from_thread, 1000 * (k + 1)) for k in range(4)),
            *(job.enqueue(n) for n in range(300, 400)),
        )
        stored = [t.id for t in loop_added]
        for part in threads:
            stored.extend(part if isinstance(part, list) else [part.id])
        requests = sorted(t.request for t in await app.time_tickers.query(limit=1000))
    assert len(set(stored)) == 300 + 4 * 50 + 100
    assert count(path) == len(stored)
    assert requests == sorted(
        [*range(400), *(n for k in range(4) for n in range(1000 * (k + 1), 1000 * (k + 1) + 50))]
    )


async def test_an_enqueue_waits_for_a_write_lock_held_elsewhere_without_blocking_the_loop(
    store: SqlStore, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process writing, say
    released = threading.Event()
    try:
        t = ticker()
        adding = asyncio.ensure_future(store.add_time_tickers([t]))
        ticks = 0
        for _ in range(20):  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not adding.done()
        assert ticks == 20
        other.execute("COMMIT")
        released.set()
        await asyncio.wait_for(adding, 10)
        assert await store.get_time_ticker(t.id) == t
        also = ticker()  # and the next add goes straight in again
        await store.add_time_tickers([also])
        assert await store.get_time_ticker(also.id) == also
    finally:
        if not released.is_set():
            other.execute("ROLLBACK")
        other.close()


_OPEN_WITHOUT_ALEMBIC = """
import asyncio, sys
from tickerq.stores.sql import SqlStore

async def main():
    store = SqlStore(sys.argv[1])
    await store.open()
    await store.next_due_time()
    await store.close()

asyncio.run(main())
print("alembic" in sys.modules, "mako" in sys.modules, "asyncpg" in sys.modules)
"""


def test_opening_a_current_store_does_not_import_alembic_nor_asyncpg(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_WITHOUT_ALEMBIC, url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert run() == "True True False"  # a fresh file is created through the migrations
    assert run() == "False False False"  # a migrated one is only checked

"""The SQLite store's ThreadedEngine: a plain SQLAlchemy engine used from asyncio,
each checked-out connection on a thread of its own (stores/sql/threaded.py).

Checked on a real file with the store's settings (``Dialect.create_engine``):
transactions of many tasks at once, cancellation at every point of a checkout,
errors, and dispose.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ResourceClosedError

from tickerq.stores.sql.dialects import for_url
from tickerq.stores.sql.threaded import ThreadedEngine

metadata = MetaData()
counter = Table("counter", metadata, Column("n", Integer, nullable=False))
names = Table("names", metadata, Column("name", String, primary_key=True))

THREAD_PREFIX = "tickerq-sqlite-reader"


class JobError(Exception):
    """Raised by a function run with run_sync."""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "threaded.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    conn.execute("CREATE TABLE names (name TEXT PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (parent TEXT REFERENCES names (name) DEFERRABLE INITIALLY DEFERRED)"
    )
    conn.execute("INSERT INTO counter VALUES (0)")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
async def engine(db: Path) -> AsyncIterator[ThreadedEngine]:
    made = for_url(f"sqlite:///{db}").create_engine(3)
    assert isinstance(made, ThreadedEngine)
    yield made
    await made.dispose()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def open_files(path: Path) -> list[str]:
    """This process's file descriptors on ``path`` (or its -wal/-shm files)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def write_lock_free(path: Path) -> bool:
    """Whether another connection can take the file's write lock at once."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        conn.close()


async def count(engine: ThreadedEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_transactions_of_many_tasks_run_one_at_a_time_each_on_one_thread(
    engine: ThreadedEngine,
) -> None:
    tasks = 40
    most = 0
    threads: set[int] = set()

    async def bump() -> None:
        nonlocal most
        async with engine.begin() as conn:
            most = max(most, engine.checked_out)
            seen = await conn.run_sync(lambda _: threading.get_ident())
            value = await conn.scalar(select(counter.c.n))
            await asyncio.sleep(0)  # let the other tasks try meanwhile
            await conn.execute(update(counter).values(n=value + 1))
            assert await conn.run_sync(lambda _: threading.get_ident()) == seen
            threads.add(seen)

    await asyncio.gather(*(bump() for _ in range(tasks)))

    async with engine.connect() as conn:
        # BEGIN IMMEDIATE: no read-modify-write saw another's value, none was lost
        assert await conn.scalar(select(counter.c.n)) == tasks
    assert most == 3  # the pool's size, reached and never passed
    assert threading.get_ident() not in threads
    assert 1 < len(threads) <= 3  # connections work on the engine's own threads
    assert engine.checked_out == 0
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_results_are_read_before_the_connection_is_returned(
    engine: ThreadedEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(names), [{"name": f"n{i}"} for i in range(5)])
    async with engine.connect() as conn:
        rows = await conn.execute(select(names.c.name).order_by(names.c.name))
        scalars = await conn.scalars(select(names.c.name).order_by(names.c.name.desc()))
        changed = await conn.execute(
            update(names).where(names.c.name < "n2").values(name=names.c.name + "x")
        )
        assert changed.rowcount == 2
        await conn.rollback()
    assert engine.checked_out == 0
    assert [r.name for r in rows] == ["n0", "n1", "n2", "n3", "n4"]
    assert scalars.all() == ["n4", "n3", "n2", "n1", "n0"]
    assert await count(engine, names) == 5  # the update was rolled back
    with pytest.raises(ResourceClosedError):
        await conn.execute(select(names))


async def test_a_task_cancelled_mid_transaction_leaves_no_transaction_open(
    engine: ThreadedEngine, db: Path
) -> None:
    inside = asyncio.Event()

    async def hold() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(names).values(name="cancelled"))
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await inside.wait()
    assert not write_lock_free(db)  # the transaction holds it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.checked_out == 0
    assert write_lock_free(db)
    assert await count(engine, names) == 0  # rolled back


async def test_a_task_cancelled_while_its_statement_runs_ends_the_checkout_after_it(
    engine: ThreadedEngine, db: Path
) -> None:
    running = threading.Event()
    go_on = threading.Event()

    def slow(conn: object) -> None:
        running.set()
        go_on.wait(10)

    async def work() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(names).values(name="half"))
            await conn.run_sync(slow)

    task = asyncio.create_task(work())
    await asyncio.to_thread(running.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # its rollback waits for the statement on the thread
    assert engine.checked_out == 1
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.checked_out == 0
    assert write_lock_free(db)
    assert await count(engine, names) == 0


async def test_a_second_cancel_does_not_stop_the_checkout_from_ending(
    engine: ThreadedEngine, db: Path
) -> None:
    running = threading.Event()
    go_on = threading.Event()

    def slow(conn: object) -> None:
        running.set()
        go_on.wait(10)

    async def work() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(names).values(name="twice"))
            await conn.run_sync(slow)

    task = asyncio.create_task(work())
    await asyncio.to_thread(running.wait, 10)
    task.cancel()
    await asyncio.sleep(0.02)
    task.cancel()  # now while the rollback waits
    with pytest.raises(asyncio.CancelledError):
        await task
    go_on.set()
    for _ in range(200):  # the rollback and release run on the thread, unawaited
        if engine.checked_out == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.checked_out == 0
    assert write_lock_free(db)
    assert await count(engine, names) == 0


async def test_a_task_cancelled_while_waiting_for_a_connection_takes_none(db: Path) -> None:
    engine = for_url(f"sqlite:///{db}").create_engine(1)
    assert isinstance(engine, ThreadedEngine)
    try:
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(select(1))
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        waiting = asyncio.create_task(count(engine, names))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the pool of one is taken
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        await holder
        assert engine.checked_out == 0
        assert await asyncio.wait_for(count(engine, names), 5) == 0  # not lost
    finally:
        await engine.dispose()


async def test_errors_keep_their_type_and_end_the_checkout(engine: ThreadedEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(names).values(name="taken"))

    with pytest.raises(IntegrityError) as integrity:
        async with engine.begin() as conn:
            await conn.execute(insert(names).values(name="other"))
            await conn.execute(insert(names).values(name="taken"))
    assert isinstance(integrity.value.orig, sqlite3.IntegrityError)

    with pytest.raises(OperationalError, match="no such table"):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT * FROM missing"))

    raised = JobError("from the thread")

    def fail(conn: object) -> None:
        raise raised

    with pytest.raises(JobError) as job:
        async with engine.begin() as conn:
            await conn.execute(insert(names).values(name="rolled back"))
            await conn.run_sync(fail)
    assert job.value is raised

    assert engine.checked_out == 0
    async with engine.connect() as conn:
        assert (await conn.scalars(select(names.c.name))).all() == ["taken"]


async def test_a_commit_that_fails_raises_and_rolls_back(engine: ThreadedEngine) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        async with engine.begin() as conn:  # the deferred key is checked at commit
            await conn.execute(text("INSERT INTO child VALUES ('nobody')"))
            await conn.execute(insert(names).values(name="with the child"))
    assert engine.checked_out == 0
    assert await count(engine, names) == 0


async def test_a_begin_that_cannot_take_the_write_lock_returns_its_connection(
    engine: ThreadedEngine, db: Path
) -> None:
    async with engine.connect() as conn:  # the pool's one connection so far
        await conn.execute(text("PRAGMA busy_timeout=50"))  # cut the wait short
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            async with engine.begin():
                pass
        assert engine.checked_out == 0
    finally:
        blocker.close()
    async with engine.begin() as conn:
        await conn.execute(update(counter).values(n=1))
    assert engine.checked_out == 0


async def test_dispose_closes_every_connection_and_ends_every_thread(
    engine: ThreadedEngine, db: Path
) -> None:
    before = set(reader_threads())
    release = asyncio.Event()
    held = asyncio.Event()

    async def read() -> None:
        async with engine.connect() as conn:
            await conn.execute(select(counter.c.n))
            if engine.checked_out == 3:
                held.set()
            await release.wait()

    readers = [asyncio.create_task(read()) for _ in range(3)]
    await held.wait()
    assert len(set(reader_threads()) - before) == 3
    release.set()
    await asyncio.gather(*readers)
    # one still checked out while the engine is disposed: closed when it ends
    late = engine.connect()
    await late.__aenter__()
    await late.execute(select(counter.c.n))
    await engine.dispose()
    assert len(set(reader_threads()) - before) == 1
    await late.close()
    for _ in range(200):
        if not set(reader_threads()) - before:
            break
        await asyncio.sleep(0.01)
    assert not set(reader_threads()) - before
    assert open_files(db) == []
    assert engine.checked_out == 0
    # still usable, on new connections
    assert await count(engine, counter) == 1
    await engine.dispose()
    assert open_files(db) == []

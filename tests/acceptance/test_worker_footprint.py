"""A worker (`tickerq run`) loads only what running jobs needs: no dashboard stack,
no PostgreSQL driver or dialect on SQLite, no asyncio extension of SQLAlchemy (nor
its ORM, greenlet or aiosqlite: SQLite runs on a plain engine in threads), no
memory store, no migration tool on a current database; and SQLite's connections
map no pages of the file into memory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from tickerq.stores.sql import SqlStore
from tickerq.stores.sql.hot_sqlite import SqliteHotPath

PROBE_APP = """
import json, os, sys
from pathlib import Path
from tickerq import TickerQ

app = TickerQ(os.environ["PROBE_STORE"])
HEAVY = (
    "starlette", "uvicorn", "jinja2", "pydantic", "rich", "tickerq.dashboard",
    "asyncpg", "sqlalchemy.dialects.postgresql", "tickerq.stores.sql.hot",
    "tickerq.stores.sql.enqueue_pg", "tickerq.stores.sql.crons_pg",
    "sqlalchemy.ext.asyncio", "sqlalchemy.orm", "greenlet", "aiosqlite",
    "tickerq.stores.memory", "alembic",
)  # fmt: skip


@app.function(cron="* * * * * *")
def probe() -> None:
    loaded = {name: name in sys.modules for name in HEAVY}
    Path(os.environ["PROBE_OUT"]).write_text(json.dumps(loaded))
"""


def test_a_sqlite_worker_loads_no_dashboard_postgresql_asyncio_or_migration_modules(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def create() -> None:  # a current schema: the worker only checks it
        store = SqlStore(url, auto_upgrade=True)
        await store.open()
        await store.close()

    asyncio.run(create())
    (tmp_path / "probe_app.py").write_text(PROBE_APP)
    out = tmp_path / "loaded.json"
    env = {**os.environ, "PROBE_STORE": url, "PROBE_OUT": str(out)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tickerq.cli", "run", "probe_app:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not out.exists():
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the probe job did not run"
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one call; let it land
        loaded = json.loads(out.read_text())
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    assert not any(loaded.values()), loaded


async def test_the_sqlite_store_maps_no_pages_of_its_file(tmp_path: Path) -> None:
    """mmap_size=0 on every connection the store opens: with memory-mapped I/O each
    page a connection read stayed mapped, 5 MB of a worker's RSS after 10,000 jobs
    (bench/sqlite_scale.py) and more on a bigger file."""
    store = SqlStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    try:
        async with store.sa_engine.connect() as conn:  # the pool of readers
            assert await conn.scalar(text("PRAGMA mmap_size")) == 0
        writer = await store.write_sqlite(lambda db: db.execute("PRAGMA mmap_size").fetchone())
        assert writer == (0,)
        hot = store.hot  # the worker's claims and results
        assert isinstance(hot, SqliteHotPath)
        hot_db = await asyncio.to_thread(hot._connect)  # opened on first use
        assert hot_db.execute("PRAGMA mmap_size").fetchone()[0] == 0
    finally:
        await store.close()

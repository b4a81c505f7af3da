"""PostgreSQL connections: the node's budget, the one-statement enqueue, PgBouncer mode.

Each test gets a database of its own on the server of ``$TICKERQ_TEST_POSTGRESQL``
(default ``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards;
skipped when the server cannot be reached, unless ``CI`` is ``true``. The
PgBouncer tests start a ``pgbouncer`` (transaction pooling) in front of it:
skipped when ``pgbouncer`` is not installed, unless ``CI`` is ``true``
(``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from tickerq import (
    DuplicateTickerError,
    RunCondition,
    Status,
    TickerContext,
    TickerQ,
    TimeTickerSpec,
)
from tickerq.errors import InvalidArgumentError
from tickerq.events import TickerChanged
from tickerq.stores.sql import SqlStore
from tickerq.stores.sql.dialects import ConnectionBudget, for_url

SERVER_URL = make_url(
    os.environ.get("TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
).set(drivername="postgresql")
IN_CI = os.environ.get("CI") == "true"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


async def _admin() -> Any:
    import asyncpg

    dsn = SERVER_URL.set(database="postgres").render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL is unreachable: {exc!r}")


@pytest.fixture
async def db() -> AsyncIterator[str]:
    """The name of a fresh database with tickerq's schema, dropped after the test."""
    admin = await _admin()
    name = f"tickerq_conn_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        store = SqlStore(_url(name))
        await store.open()
        await store.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _url(database: str, **query: str) -> str:
    return SERVER_URL.set(database=database, query=query).render_as_string(hide_password=False)


async def _sessions(database: str) -> int:
    admin = await _admin()
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await admin.close()


def _app(url: str, **kwargs: Any) -> TickerQ:
    app = TickerQ(url, node_id=f"node-{uuid.uuid4().hex[:6]}", **kwargs)

    @app.function()
    async def work(ctx: TickerContext[int]) -> None:
        await asyncio.sleep(0)

    return app


async def _wait_done(app: TickerQ, ids: list[uuid.UUID], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = [(await app.time_tickers.get(i)).status for i in ids]
        if all(s.is_final for s in states):
            return
        assert time.monotonic() < deadline, f"not all done: {states}"
        await asyncio.sleep(0.05)


# -- the budget -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "budget"),
    [
        ("", ConnectionBudget(3, 1, hot_path=True, listen=True)),
        ("?pool_size=10", ConnectionBudget(10, 8, hot_path=True, listen=True)),
        ("?pool_size=2", ConnectionBudget(2, 1, hot_path=False, listen=True)),
        ("?pool_size=1", ConnectionBudget(1, 1, hot_path=False, listen=False)),
        ("?pgbouncer=true", ConnectionBudget(3, 2, hot_path=True, listen=False)),
        (
            "?pgbouncer=true&listen_url=postgresql%3A%2F%2Fu%40db%3A5432%2Fjobs",
            ConnectionBudget(3, 1, hot_path=True, listen=True),
        ),
    ],
)
def test_the_budget_counts_pool_hot_path_and_listen(query: str, budget: ConnectionBudget) -> None:
    got = for_url(f"postgresql://u@pgbouncer:6432/jobs{query}").budget()
    assert got == budget
    assert got.pool + got.hot_path + got.listen == got.total


def test_store_options_are_kept_from_the_driver_and_checked() -> None:
    dialect = for_url(
        "postgresql://u:pw@h/db?pool_size=5&pgbouncer=yes&sslmode=disable"
        "&listen_url=postgresql%3A%2F%2Fu%3Asecret%40direct%2Fdb"
    )
    assert (dialect.pool_size, dialect.pgbouncer) == (5, True)
    assert dialect.listen_url == "postgresql://u:secret@direct/db"
    for url in (dialect.driver_url, dialect.plain_url):
        assert "sslmode=disable" in url
        assert "pool_size" not in url and "pgbouncer" not in url and "listen_url" not in url
    assert "secret" not in dialect.safe_url
    for bad in (
        "pool_size=0",
        "pool_size=x",
        "pool_size=1&pool_size=2",
        "pgbouncer=maybe",
        "listen_url=mysql%3A%2F%2Fh%2Fdb",
    ):
        with pytest.raises(InvalidArgumentError, match=bad.split("=")[0]):
            for_url(f"postgresql://u@h/db?{bad}")
    with pytest.raises(InvalidArgumentError, match="PostgreSQL options"):
        for_url("sqlite:///x.db?pgbouncer=true")
    assert SqlStore("postgresql://u@h/db?pool_size=5", pool_size=7).budget.total == 7


async def test_a_busy_node_stays_within_its_budget(db: str) -> None:
    """Engine running (hot path, LISTEN), enqueues and reads at once: never more
    sessions than the budget (3 by default; 22 before the budget)."""
    app = _app(_url(db), max_concurrency=8)
    peak = 0
    async with app:
        work = app.get_function("work")

        async def enqueue(n: int) -> list[uuid.UUID]:
            return [(await work.enqueue(i)).id for i in range(n)]

        async def read() -> None:
            for _ in range(30):
                await app.time_tickers.query(limit=5)

        async def watch(stop: asyncio.Event) -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, await _sessions(db))
                await asyncio.sleep(0.01)

        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        batches = await asyncio.gather(*(enqueue(40) for _ in range(6)), read(), read())
        await _wait_done(app, [i for b in batches if b for i in b])
        stop.set()
        await watcher
    assert 2 <= peak <= 3, f"{peak} sessions on {db}"


# -- single enqueue ---------------------------------------------------------------------


class _Wire:
    """Every query asyncpg sends on the pooled connection(s)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: Any) -> None:
        self.queries.append(" ".join(record.query.split()))


async def _log_pool(app: TickerQ, wire: _Wire) -> None:
    store: Any = app.store
    raw = await store.sa_engine.raw_connection()
    try:
        raw.driver_connection.add_query_logger(wire)
    finally:
        raw.close()


async def test_single_enqueue_is_one_round_trip_with_its_notice(db: str) -> None:
    import asyncpg

    app = _app(_url(db))
    await app.open()
    listener = await asyncpg.connect(_url(db))
    notices: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("tickerq", lambda *a: notices.put_nowait(a[-1]))
    events: list[Any] = []
    app.events.subscribe(events.append)
    try:
        await app.get_function("work").enqueue(0)  # warm: the pool's connection exists
        await asyncio.wait_for(notices.get(), 5)
        wire = _Wire()
        await _log_pool(app, wire)  # pool_size 3: the pool has one connection
        ticker = await app.get_function("work").enqueue(1)
        await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not at once
        assert len(wire.queries) == 1, wire.queries
        assert "INSERT INTO tickerq_tickers" in wire.queries[0]
        assert "pg_notify" in wire.queries[0]
        assert (
            await asyncio.wait_for(notices.get(), 5) == f"due {ticker.execution_time.isoformat()}"
        )
        stored = await app.time_tickers.get(ticker.id)
        assert (stored.request, stored.status, stored.function) == (1, Status.IDLE, "work")
        changed = [e for e in events if isinstance(e, TickerChanged) and e.id == ticker.id]
        assert [e.status for e in changed] == [Status.IDLE]  # the dashboard's live update
    finally:
        await listener.close()
        await app.stop()


async def test_a_loop_of_enqueues_lets_the_nodes_other_work_have_the_connection(
    db: str,
) -> None:
    """The enqueue keeps the pool's one connection while calls keep coming (no checkout
    per call), but hands it back within milliseconds to whoever else waits for it."""
    app = _app(_url(db))
    await app.open()
    work = app.get_function("work")
    stop = asyncio.Event()
    made = 0

    async def producer() -> None:
        nonlocal made
        while not stop.is_set():
            await work.enqueue(made)
            made += 1

    try:
        await work.enqueue(-1)
        task = asyncio.create_task(producer())
        await asyncio.sleep(0.2)
        waits = []
        for _ in range(10):
            began = time.monotonic()
            await app.time_tickers.count()  # needs the same pooled connection
            waits.append(time.monotonic() - began)
            await asyncio.sleep(0.02)
        stop.set()
        await task
        assert made > 50, made
        assert max(waits) < 0.5, waits
        assert await app.time_tickers.count() == made + 1
    finally:
        stop.set()
        await app.stop()


async def test_stopping_right_after_an_enqueue_leaves_no_connection_open(db: str) -> None:
    """The enqueue keeps its connection for a moment after each statement (for the
    caller's next enqueue): a stop at that moment must still close it."""
    for _ in range(3):
        app = _app(_url(db))
        await app.open()
        await app.get_function("work").enqueue(1)
        await app.stop()  # while the enqueue's sender still holds the connection
        await asyncio.sleep(0.05)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        unclosed = [w for w in caught if "unclosed connection" in str(w.message)]
        assert unclosed == [], unclosed
    assert await _sessions(db) == 0


async def test_a_taken_id_is_refused_and_announces_nothing(db: str) -> None:
    import asyncpg

    app = _app(_url(db))
    await app.open()
    listener = await asyncpg.connect(_url(db))
    notices: list[str] = []
    await listener.add_listener("tickerq", lambda *a: notices.append(a[-1]))
    try:
        first = await app.time_tickers.add("work", request=1)
        await asyncio.sleep(0.2)
        notices.clear()
        store: Any = app.store
        with pytest.raises(DuplicateTickerError, match=str(first.id)):
            await store.add_time_tickers([first.evolve(request=2)])
        await asyncio.sleep(0.2)
        assert notices == []
        assert (await app.time_tickers.get(first.id)).request == 1
    finally:
        await listener.close()
        await app.stop()


async def test_concurrent_enqueues_share_statements_and_fail_alone(db: str) -> None:
    """Enqueues waiting for the node's one pooled connection go together as rows of
    one statement (one commit); a taken id or a row the database refuses fails its
    own call only, and every other row is stored."""
    app = _app(_url(db))
    await app.open()
    try:
        taken = await app.time_tickers.add("work", request=-1)
        wire = _Wire()
        await _log_pool(app, wire)
        store: Any = app.store
        good = [taken.evolve(id=uuid.uuid4(), request=i) for i in range(200)]
        refused = taken.evolve(id=uuid.uuid4(), description="nul \x00 byte")  # not validated here
        duplicate = taken.evolve(request=-2)
        calls = [store.add_time_tickers([t]) for t in good[:100]]
        calls += [store.add_time_tickers([refused]), store.add_time_tickers([duplicate])]
        calls += [store.add_time_tickers([t]) for t in good[100:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0.05)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 2, errors
        assert isinstance(results[101], DuplicateTickerError)
        assert not isinstance(results[100], DuplicateTickerError)
        stored = await app.time_tickers.query(limit=1000)
        assert {t.id for t in stored} == {taken.id, *(t.id for t in good)}
        assert (await app.time_tickers.get(taken.id)).request == -1
        inserts = [q for q in wire.queries if "INSERT INTO tickerq_tickers" in q]
        assert len(inserts) < 30, f"{len(inserts)} statements for 202 concurrent enqueues"
    finally:
        await app.stop()


async def test_chains_and_bulk_adds_still_work(db: str) -> None:
    app = _app(_url(db), max_concurrency=4)
    async with app:
        parent = await app.time_tickers.add("work", request=1)
        child = await app.time_tickers.add(
            "work", request=2, parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS
        )
        many = await app.time_tickers.add_many(
            [TimeTickerSpec(function="work", request=i) for i in range(50)]
        )
        await _wait_done(app, [parent.id, child.id, *(t.id for t in many)])
        assert (await app.time_tickers.get(child.id)).status in (Status.DONE, Status.DUE_DONE)


def _terminate_blocking(database: str) -> None:
    """Kill every session on ``database`` without letting this loop run meanwhile, so
    asyncpg has not yet seen its connections close when the next call uses them."""
    dsn = SERVER_URL.set(database="postgres").render_as_string(hide_password=False)
    sql = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    result = subprocess.run(
        ["psql", dsn, "-Atc", sql], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and int(result.stdout) >= 1, result


async def test_an_enqueue_survives_its_connection_being_killed(db: str) -> None:
    """No pre-ping any more: a dead pooled connection is retried once instead."""
    if shutil.which("psql") is None:
        _unavailable("psql is not installed")
    app = _app(_url(db))
    await app.open()
    try:
        work = app.get_function("work")
        await work.enqueue(0)
        _terminate_blocking(db)  # the loop has not seen the socket close yet
        ticker = await work.enqueue(1)
        assert (await app.time_tickers.get(ticker.id)).request == 1
        _terminate_blocking(db)
        await asyncio.sleep(0.2)  # now it has: the checkout replaces the connection
        assert len(await app.time_tickers.query(limit=10)) == 2
        ticker = await work.enqueue(2)
        assert (await app.time_tickers.get(ticker.id)).request == 2
    finally:
        await app.stop()


# -- PgBouncer mode ---------------------------------------------------------------------


async def test_pgbouncer_mode_keeps_no_session_state(db: str) -> None:
    """With ``pgbouncer=true`` no prepared statement or setting outlives a statement
    on any connection the node holds (checked from the next transaction on the same
    session); without it, both do (so this test can tell)."""
    for mode, expect_state in (("false", True), ("true", False)):
        app = _app(_url(db, pgbouncer=mode), max_concurrency=2)
        async with app:
            work = app.get_function("work")
            tickers = [await work.enqueue(i) for i in range(3)]
            await app.time_tickers.add_many([TimeTickerSpec(function="work", request=9)])
            await _wait_done(app, [t.id for t in tickers])
            await app.time_tickers.query(limit=5)
            store: Any = app.store
            raw = await store.sa_engine.raw_connection()
            try:
                pooled = raw.driver_connection
                pooled_statements = await pooled.fetchval(
                    "SELECT count(*) FROM pg_prepared_statements"
                )
            finally:
                raw.close()
            async with store.hot._lock:  # the engine's claims use it too (polls: each second)
                hot = store.hot._conn
                hot_statements = await hot.fetchval("SELECT count(*) FROM pg_prepared_statements")
                plan_mode = await hot.fetchval("SHOW plan_cache_mode")
        assert (pooled_statements > 0) is expect_state, (mode, pooled_statements)
        assert (hot_statements > 0) is expect_state, (mode, hot_statements)
        assert (plan_mode != "auto") is expect_state, (mode, plan_mode)


@pytest.mark.parametrize("pgbouncer", ["false", "true"])
async def test_claims_under_limits_in_one_round_trip_or_three(db: str, pgbouncer: str) -> None:
    """A claim under limits is one call of a function of the hot connection's
    session; in PgBouncer mode (no session state) it is BEGIN with the locks, the
    claim, COMMIT. Either way two nodes keep a rate limit and a per-key limit: of
    12 due jobs of 3 keys (at most 1 running per key, 5 starts a minute), 5 start
    and no key runs twice at once."""
    url = _url(db, pgbouncer=pgbouncer)
    running: dict[int, int] = {}
    overlaps: list[int] = []
    apps = []
    for _ in range(2):
        app = TickerQ(url, node_id=f"node-{uuid.uuid4().hex[:6]}", max_concurrency=4)

        @app.function(rate_limit="5/m", concurrency_key=lambda n: n % 3, max_per_key=1)
        async def limited(ctx: TickerContext[int]) -> None:
            key = ctx.request % 3
            running[key] = running.get(key, 0) + 1
            if running[key] > 1:
                overlaps.append(key)
            await asyncio.sleep(0.05)
            running[key] -= 1

        apps.append(app)
    await apps[0].open()
    await apps[0].time_tickers.add_many(
        [TimeTickerSpec(function="limited", request=n) for n in range(12)]
    )
    try:
        for app in apps:
            await app.start()
        deadline = time.monotonic() + 20
        while await apps[0].time_tickers.count(status="DONE") < 5:
            assert time.monotonic() < deadline, "the first 5 did not run"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time for a sixth start, were the limit not kept
        assert await apps[0].time_tickers.count(status="DONE") == 5
        assert await apps[0].time_tickers.count(status="IDLE") == 7
        assert overlaps == []
        made = [app.store.hot._gated for app in apps]  # type: ignore[attr-defined]
        assert made == [pgbouncer == "false"] * 2, made
    finally:
        for app in apps:
            await app.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[int]:
    """A pgbouncer in transaction mode in front of the test server; its port.

    Two server connections per database, so several nodes share them and any
    session state left behind would surface as an error.
    """
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        _unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    port = _free_port()
    root = tmp_path / "pgbouncer"
    root.mkdir()
    (root / "users.txt").write_text(f'"{SERVER_URL.username or "postgres"}" ""\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={SERVER_URL.host or '127.0.0.1'} port={SERVER_URL.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        f"logfile = {root / 'pgbouncer.log'}\n"
    )
    prefix: list[str] = []
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        for path in [root, *root.iterdir()]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        for parent in root.parents:
            parent.chmod(parent.stat().st_mode | 0o001)
        prefix = ["runuser", "-u", "postgres", "--"]
    proc = subprocess.Popen([*prefix, binary, str(root / "pgbouncer.ini")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (root / "pgbouncer.log").read_text()
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_nodes_through_pgbouncer_in_transaction_mode(db: str, pgbouncer: int) -> None:
    """Three nodes through PgBouncer (two server connections for all of them):
    enqueue, chains, bulk adds, running, cancel; LISTEN goes direct."""
    direct = _url(db)
    bounced = (
        SERVER_URL.set(host="127.0.0.1", port=pgbouncer, database=db).render_as_string(
            hide_password=False
        )
        + f"?pgbouncer=true&listen_url={quote(direct, safe='')}"
    )
    apps = [_app(bounced, max_concurrency=4) for _ in range(3)]
    web = _app(bounced)
    for app in apps:
        await app.start()
    await web.open()
    try:
        work = web.get_function("work")
        singles = await asyncio.gather(*(work.enqueue(i) for i in range(60)))
        parent = await web.time_tickers.add("work", request=-1)
        child = await web.time_tickers.add(
            "work", request=-2, parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS
        )
        bulk = await web.time_tickers.add_many(
            [TimeTickerSpec(function="work", request=i) for i in range(60)]
        )
        later = await web.time_tickers.add("work", request=0, after=3600)
        await web.time_tickers.cancel(later.id)
        ids = [t.id for t in (*singles, parent, child, *bulk)]
        await _wait_done(web, ids, timeout=60)
        statuses = {(await web.time_tickers.get(i)).status for i in ids}
        assert statuses <= {Status.DONE, Status.DUE_DONE}, statuses
        assert (await web.time_tickers.get(later.id)).status is Status.CANCELLED
        assert all(app.store.budget.listen for app in apps)  # type: ignore[attr-defined]
    finally:
        for app in [*apps, web]:
            await app.stop()

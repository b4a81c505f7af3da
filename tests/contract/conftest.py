"""Fixtures of the store contract suite: every test runs once per store.

``store_url`` is parametrized over the memory store, SQLite (a file in the
test's tmp_path) and PostgreSQL (a fresh database per test, dropped
afterwards). ``make_app`` builds apps on that store with a manual clock and,
after the test, stops them and checks that no pooled connection is left open.

PostgreSQL is reached at ``$TICKERQ_TEST_POSTGRESQL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); only its server is used, each
test gets a database ``tickerq_<random>``. When the server cannot be reached the
PostgreSQL tests are skipped on a developer machine and fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tickerq import EngineOptions, Priority, Status, TickerContext, TickerQ, TickerStateError
from tickerq.limits import Gates
from tickerq.models import TimeTicker
from tickerq.stores.base import Job, Outcome, Store
from tickerq.testing import ManualClock

POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)

QUIET = EngineOptions(poll_interval=3600, heartbeat_interval=600, lease=3600)
"""Engine options for contract tests: polls and heartbeats rare in clock time, so
``advance()`` over minutes does not step through hundreds of SQL polls."""


def _server_dsn(database: str) -> str:
    """The PostgreSQL server URL of ``POSTGRESQL_URL`` with another database."""
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRESQL_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def _admin_connection() -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(_server_dsn("postgres"), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {_server_dsn('postgres')} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def _connections_to(admin: Any, database: str) -> list[Any]:
    return list(
        await admin.fetch(
            "SELECT pid, application_name, state, query FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    )


async def _assert_no_connections(admin: Any, database: str) -> None:
    """No session on ``database`` is left (a closed one may take a moment to go)."""
    deadline = time.monotonic() + 2.0
    left = await _connections_to(admin, database)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        left = await _connections_to(admin, database)
    assert left == [], f"connections to {database} leaked after the apps stopped: {left}"


def _files_open_under(prefix: str) -> list[str]:
    """Files this process has open whose path starts with ``prefix`` (Linux; else [])."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return []
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


async def _drop_database(admin: Any, database: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _create_database(admin: Any, database: str, template: str) -> None:
    """CREATE DATABASE from ``template``, waiting out a session that is just leaving it."""
    import asyncpg

    for _ in range(100):
        try:
            await admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
            return
        except asyncpg.ObjectInUseError:  # "source database is being accessed by other users"
            await asyncio.sleep(0.02)
    await admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')


async def _make_template(name: str) -> None:
    """A database holding tickerq's empty schema, copied for each test (faster than
    creating the tables every time)."""
    from tickerq.stores.sql import SqlStore

    admin = await _admin_connection()
    try:
        await _create_database(admin, name, "template0")
        store = SqlStore(_server_dsn(name))
        await store.open()
        await store.close()
        await _assert_no_connections(admin, name)
    finally:
        await admin.close()


async def _drop_template(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(_server_dsn("postgres"), timeout=3)
    try:
        await _drop_database(admin, name)
    finally:
        await admin.close()


def _in_thread(coro: Any) -> None:
    """Run a coroutine on a loop of its own, away from the test's event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a template database with tickerq's schema (made once per session)."""
    name = f"tickerq_tpl_{uuid.uuid4().hex[:12]}"
    _in_thread(_make_template(name))
    try:
        yield name
    finally:
        _in_thread(_drop_template(name))


@pytest.fixture(params=["memory", "sqlite", "sqlite-general", "postgresql", "postgresql-general"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The URL of an empty store of each kind; ``-general``: the SQL store with its
    hot paths off (every claim and result through the general path)."""
    if request.param.endswith("-general"):
        from tickerq.stores.sql import SqlStore

        monkeypatch.setattr(SqlStore, "use_hot_path", False)
    if request.param == "memory":
        yield "memory://"
        return
    if request.param.startswith("sqlite"):
        path = f"{tmp_path}/t.db"
        yield f"sqlite:///{path}"
        left = _files_open_under(path)
        assert left == [], f"SQLite connections leaked after the apps stopped: {left}"
        return
    admin = await _admin_connection()
    template: str = request.getfixturevalue("pg_template")
    database = f"tickerq_{uuid.uuid4().hex[:12]}"
    try:
        await _create_database(admin, database, template)
        try:
            yield _server_dsn(database)
            await _assert_no_connections(admin, database)
        finally:
            await _drop_database(admin, database)
    finally:
        await admin.close()


@pytest.fixture
def store_kind(store_url: str) -> str:
    """``memory``, ``sqlite`` or ``postgresql``."""
    return store_url.split(":", 1)[0]


@pytest.fixture
async def make_app(store_url: str, clock: ManualClock) -> AsyncIterator[Callable[..., TickerQ]]:
    """Build apps on the test's store; after the test they are stopped and checked
    for leaked pooled connections."""
    apps: list[TickerQ] = []

    def make(**kwargs: Any) -> TickerQ:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("node_id", "node-a")
        kwargs.setdefault("max_concurrency", 4)
        kwargs.setdefault("options", QUIET)
        app = TickerQ(store_url, **kwargs)
        apps.append(app)
        return app

    yield make

    for app in apps:
        await app.stop()
    if store_url.startswith("sqlite"):
        # A connection lost by its pool is closed when it is collected (sqlite3 warns
        # from Python 3.13): collect now so that it fails this test's teardown, not a later one.
        gc.collect()
    for app in apps:
        store: Any = app.store
        if hasattr(store, "_engine"):  # the SQL store: its engine must be disposed
            assert store._engine is None, f"{store_url}: the SQLAlchemy engine was not disposed"
            with pytest.raises(TickerStateError):
                _ = store.sa_engine


FUNCTIONS = {
    "alpha": Priority.NORMAL,
    "beta": Priority.NORMAL,
    "gamma": Priority.NORMAL,
    "low": Priority.LOW,
    "high": Priority.HIGH,
    "long": Priority.LONG_RUNNING,
}
"""Functions registered in the ``app`` fixture, with their priorities."""


async def _noop(ctx: TickerContext) -> None:
    return None


@pytest.fixture
async def app(make_app: Callable[..., TickerQ]) -> TickerQ:
    """An app whose store is open but whose engine is not running: tests drive the
    store directly (claim, complete, ...) with explicit times."""
    app = make_app()
    for name, priority in FUNCTIONS.items():
        app.function(name, priority=priority)(_noop)
    await app.open()
    return app


class Ops:
    """Short hands for driving a store the way the engine does, at explicit times."""

    def __init__(self, app: TickerQ, clock: ManualClock) -> None:
        self.app = app
        self.store: Store = app.store
        self.clock = clock

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def at(self, seconds: float) -> datetime:
        """The clock's time plus ``seconds``."""
        return self.clock.now() + timedelta(seconds=seconds)

    async def add(self, function: str = "alpha", **kwargs: Any) -> TimeTicker:
        return await self.app.time_tickers.add(function, **kwargs)

    async def get(self, ticker_id: uuid.UUID) -> TimeTicker:
        return await self.app.time_tickers.get(ticker_id)

    async def claim(
        self,
        now: datetime | None = None,
        *,
        node: str = "node-a",
        slots: int = 100,
        capacity: dict[str, int] | None = None,
        functions: Sequence[str] | None = None,
        lease: float = 60.0,
        limits: dict[str, int] | None = None,
        gates: Gates | None = None,
    ) -> list[Job]:
        now = now or self.now
        return await self.store.claim(
            now,
            node=node,
            lease_until=now + timedelta(seconds=lease),
            slots=slots,
            capacity=capacity or {},
            functions=list(FUNCTIONS) if functions is None else functions,
            limits=limits,
            gates=gates,
        )

    async def claim_one(self, ticker_id: uuid.UUID, **kwargs: Any) -> Job:
        """Claim everything due and return the job of ``ticker_id`` (asserting it came)."""
        jobs = {j.id: j for j in await self.claim(**kwargs)}
        assert ticker_id in jobs, f"{ticker_id} was not claimed; claimed {list(jobs)}"
        return jobs[ticker_id]

    def outcome(
        self,
        job: Job,
        status: Status,
        *,
        node: str = "node-a",
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        **kwargs: Any,
    ) -> Outcome:
        started_at = started_at or self.now
        return Outcome(
            job=job,
            status=status,
            node=node,
            started_at=started_at,
            finished_at=finished_at or started_at + timedelta(seconds=2),
            **kwargs,
        )

    async def complete(self, job: Job, status: Status, **kwargs: Any) -> None:
        await self.store.complete([self.outcome(job, status, **kwargs)])

    async def run(self, ticker_id: uuid.UUID, status: Status = Status.DONE, **kwargs: Any) -> Job:
        """Claim (which starts it) and complete one ticker that is due now."""
        job = await self.claim_one(ticker_id)
        await self.complete(job, status, **kwargs)
        return job


@pytest.fixture
def ops(app: TickerQ, clock: ManualClock) -> Ops:
    return Ops(app, clock)

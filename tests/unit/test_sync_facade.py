"""The blocking facade drives the same async core from plain threads.

Calls go to the event loop that owns the app: the one it was opened on (by
``async with app`` or ``app.start()`` in any thread), else a loop of the
facade's own. The cross-thread tests run on the memory store, SQLite and
PostgreSQL (``$TICKERQ_TEST_POSTGRESQL``, a fresh database per test; skipped
when the server is unreachable, failed when ``CI=true``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tickerq import (
    DuplicateJobError,
    EngineOptions,
    EnqueueOutcome,
    InvalidArgumentError,
    Status,
    TickerContext,
    TickerQ,
    TickerQError,
    TickerStateError,
)
from tickerq.managers import CronTickerManager, TimeTickerManager
from tickerq.models import TimeTicker
from tickerq.sync import SyncCronTickers, SyncTimeTickers

POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Note:
    text: str


@dataclass
class Numbered:
    n: int


def test_sync_facade_enqueue_and_query() -> None:
    app = TickerQ(max_concurrency=2)
    done = threading.Event()
    seen: list[str] = []

    @app.function()
    def write(ctx: TickerContext[Note]) -> None:
        seen.append(ctx.request.text)
        done.set()

    # Before the app opens, scheduling is refused, saying how to open it.
    with pytest.raises(TickerStateError, match=r"app\.sync\.start\(\)"):
        app.sync.enqueue(write, Note("early"))
    # Opened without the engine: scheduling is allowed; it runs once started.
    app.sync.open()
    ticker = app.sync.enqueue(write, Note("hello"))
    assert app.sync.time_tickers.get(ticker.id).status is Status.IDLE
    with app.sync:
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while app.sync.time_tickers.get(ticker.id).status is not Status.DONE:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert app.sync.run(app.time_tickers.count(status="DONE")) == 1
    assert seen == ["hello"]
    assert not app.engine.running
    assert app.loop is None


def test_sync_facade_bulk_calls() -> None:
    app = TickerQ()

    @app.function()
    def write(ctx: TickerContext[Note]) -> None:
        return None

    app.sync.open()
    waiting = [app.sync.enqueue(write, Note(str(i))).id for i in range(3)]
    moved = app.sync.time_tickers.update_many(waiting, description="bulk")
    assert moved.done == waiting
    assert app.sync.time_tickers.count(text="bulk") == 3
    cancelled = app.sync.time_tickers.cancel_many([*waiting, uuid.uuid4()])
    assert cancelled.done == waiting and len(cancelled.skipped) == 1
    assert app.sync.time_tickers.get(waiting[0]).status is Status.CANCELLED
    retried = app.sync.time_tickers.retry_many(waiting[:2])
    assert retried.done == waiting[:2]
    assert app.sync.time_tickers.get(waiting[1]).status is Status.IDLE
    assert app.sync.cron_tickers.cancel_occurrences(waiting).done == []
    app.sync.stop()


def test_sync_facade_unique_keys_report_what_the_store_did() -> None:
    # On the memory store an enqueue is otherwise handed to the loop without waiting
    # (its ticker built here); one with a key waits: only the store knows the outcome.
    app = TickerQ()

    @app.function()
    def write(ctx: TickerContext[Note]) -> None:
        return None

    app.sync.open()
    first = app.sync.enqueue(write, Note("a"), unique_key="k")
    kept = write.sync.enqueue(Note("b"), unique_key="k")
    replaced = app.sync.schedule(write, Note("c"), after=60, unique_key="k", on_conflict="replace")
    assert [t.enqueued.value if t.enqueued else None for t in (first, kept, replaced)] == [
        "ADDED",
        "KEPT",
        "REPLACED",
    ]
    assert first.id == kept.id == replaced.id
    assert app.sync.time_tickers.get(first.id).request == {"text": "c"}
    with pytest.raises(DuplicateJobError, match=str(first.id)):
        write.sync.schedule(Note("d"), after=5, unique_key="k", on_conflict="error")
    with pytest.raises(InvalidArgumentError, match="'never'"):
        app.sync.enqueue(write, Note("e"), unique_key="k", on_conflict="never")  # type: ignore[arg-type]
    plain = app.sync.enqueue(write, Note("f"))  # handed over as before
    assert plain.enqueued is EnqueueOutcome.ADDED
    assert app.sync.time_tickers.count() == 2
    app.sync.stop()


def test_sync_facade_refuses_to_deadlock_inside_its_loop() -> None:
    app = TickerQ()
    errors: list[str] = []

    @app.function()
    async def nested() -> None:
        try:
            app.sync.run(app.time_tickers.count())
        except TickerQError as exc:
            errors.append(str(exc))

    with app.sync:
        app.sync.enqueue(nested)
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(errors) == 1
    assert errors[0].startswith("app.sync cannot be used from inside the app's own event loop")


async def test_sync_call_on_the_thread_of_a_foreign_owner_loop_raises() -> None:
    """``async with app`` on this test's loop: a blocking call here would wait for itself."""
    app = TickerQ()

    @app.function()
    def job() -> None:
        pass

    async with app:
        assert app.loop is asyncio.get_running_loop()
        with pytest.raises(TickerQError, match="own event loop"):
            app.sync.time_tickers.add("job")
        with pytest.raises(TickerQError, match="own event loop"):
            job.sync.enqueue()
        # Nothing was stored by the refused calls.
        assert await app.time_tickers.count() == 0
    assert app.loop is None


def test_sync_call_after_the_owner_loop_closed_raises_instead_of_hanging() -> None:
    app = TickerQ()

    @app.function()
    def job() -> None:
        pass

    async def open_and_leave() -> None:
        await app.open()  # never closed: the loop ends with the app still open on it

    asyncio.run(open_and_leave())
    with pytest.raises(TickerQError, match="no longer running"):
        app.sync.time_tickers.count()
    with pytest.raises(TickerQError, match="no longer running"):
        job.sync.enqueue()


def test_every_manager_method_has_a_blocking_twin() -> None:
    """The sync managers cover every public coroutine method, with the same parameters."""
    pairs = [(TimeTickerManager, SyncTimeTickers), (CronTickerManager, SyncCronTickers)]
    for manager, twin in pairs:
        for name, method in inspect.getmembers(manager, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            assert hasattr(twin, name), f"{twin.__name__} lacks {name}"
            blocking = getattr(twin(_NoPortal(), manager.__new__(manager)), name)
            expected = list(inspect.signature(method).parameters)[1:]  # without self
            assert list(inspect.signature(blocking).parameters) == expected, name
            assert blocking.__doc__ == method.__doc__


class _NoPortal:
    def call(self, awaitable: Any, timeout: float | None = None) -> Any:
        raise AssertionError("not called")


# -- many threads, one app opened with ``async with app`` on a loop of its own --------


async def _admin() -> Any:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(POSTGRESQL_URL).set(drivername="postgresql", database="postgres")
    try:
        return await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {POSTGRESQL_URL} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty store of each kind."""
    if request.param == "memory":
        yield "memory://"
        return
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/sync.db"
        return
    from sqlalchemy.engine import make_url

    admin = await _admin()
    database = f"tickerq_sync_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        url = make_url(POSTGRESQL_URL).set(drivername="postgresql", database=database)
        yield url.render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


class OwnerThread:
    """Runs ``async with app`` on a fresh event loop in a thread until told to stop."""

    def __init__(self, app: TickerQ) -> None:
        self.app = app
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="owner")

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with self.app:
                self.started.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self.error = exc
            self.started.set()

    def __enter__(self) -> OwnerThread:
        self._thread.start()
        assert self.started.wait(15), "the app did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        assert not self._thread.is_alive(), "the app did not stop"
        assert self.error is None, self.error


@pytest.fixture
def loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """Every ERROR (or worse) logged meanwhile, e.g. by the engine or asyncio."""
    caplog.set_level(logging.WARNING)
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_many_threads_call_app_sync_while_another_loop_owns_the_app(
    store_url: str, loop_errors: Callable[[], list[str]]
) -> None:
    threads, per_thread = 6, 12
    app = TickerQ(
        store_url,
        max_concurrency=8,
        node_id="owner",
        options=EngineOptions(poll_interval=30, heartbeat_interval=30),
    )
    ran: Counter[int] = Counter()
    lock = threading.Lock()
    all_ran = threading.Event()
    total = threads * per_thread

    @app.function()
    def record(ctx: TickerContext[Numbered]) -> None:
        with lock:
            ran[ctx.request.n] += 1
            if sum(ran.values()) >= total:
                all_ran.set()

    @app.function()
    async def record_async(ctx: TickerContext[Numbered]) -> None:
        record.func(ctx)

    def caller(worker: int) -> list[TimeTicker]:
        made = []
        for i in range(per_thread):
            n = Numbered(worker * per_thread + i)
            match i % 4:
                case 0:
                    ticker = app.sync.time_tickers.add("record", request=n)
                case 1:
                    ticker = record.sync.enqueue(n)
                case 2:
                    ticker = app.sync.enqueue(record_async, n)
                case _:
                    ticker = record.sync.schedule(n, after=0.01)
            assert app.sync.time_tickers.get(ticker.id).function == ticker.function
            made.append(ticker)
        return made

    with OwnerThread(app) as owner:
        assert app.loop is owner._loop
        with ThreadPoolExecutor(threads) as pool:
            made = [t for f in [pool.submit(caller, w) for w in range(threads)] for t in f.result()]
        assert all_ran.wait(20), f"only {sum(ran.values())} of {total} jobs ran"
        deadline = time.monotonic() + 10
        while app.sync.time_tickers.count(status=[Status.DONE, Status.DUE_DONE]) < total:
            assert time.monotonic() < deadline, "not every ticker was recorded as done"
            time.sleep(0.02)
        statuses = {app.sync.time_tickers.get(t.id).status for t in made}
    assert len(made) == total
    assert ran == Counter(range(total)), "a job ran twice or never"
    assert statuses <= {Status.DONE, Status.DUE_DONE}
    assert loop_errors() == []
    assert app.loop is None

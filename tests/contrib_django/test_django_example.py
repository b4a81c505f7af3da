"""The Django example project (examples/django_project), driven as a user would.

On SQLite (a file) and PostgreSQL (a fresh database per run, dropped after):
``manage.py migrate``, ``manage.py tickerq check`` (fails: no tickerq tables),
``manage.py tickerq db``, ``check`` again (passes), then ``manage.py tickerq run``
as a real process. Orders are placed through the project's view (Django's test
client in ``manage.py shell``): a committed order is confirmed by the sync job
and audited by the async one, both through the ORM; a rolled-back order
enqueues nothing. On PostgreSQL, no Django connection is left open once the
jobs ended. The example's own test suite (``manage.py test``) passes on both.

PostgreSQL is reached at ``$TICKERQ_TEST_POSTGRESQL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); unreachable, its tests are skipped
on a developer machine and fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_project"
POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)
JOB_WAIT = 20.0
"""Seconds the jobs get to run once enqueued (they take milliseconds)."""

pytestmark = pytest.mark.timeout(120)


def _env(database_url: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }


def manage(database_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- databases -------------------------------------------------------------------------


def _server_url(database: str, driver: str = "postgresql") -> str:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRESQL_URL).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(_server_url("postgres"), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {_server_url('postgres')} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_rows(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(_server_url(database), timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


@dataclass
class Project:
    """The example project on one database, with its schema steps' results."""

    backend: str
    database_url: str
    rows: Callable[[str], list[tuple[Any, ...]]]
    """Run a query (no parameters) on the project's database."""
    database: str
    check_before: subprocess.CompletedProcess[str]
    db: subprocess.CompletedProcess[str]
    check_after: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Callable[[str], list[tuple[Any, ...]]], str]]:
    """(backend, DATABASE_URL, a query function, database name) of a fresh database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("django") / "db.sqlite3"

        def sqlite_rows(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                return list(conn.execute(sql))

        yield "sqlite", f"sqlite:///{path}", sqlite_rows, str(path)
        return
    name = f"tickerq_django_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))

    def pg_rows(sql: str) -> list[tuple[Any, ...]]:
        return asyncio.run(_pg_rows(name, sql))

    try:
        yield "postgresql", _server_url(name), pg_rows, name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def project(database: tuple[str, str, Callable[[str], list[tuple[Any, ...]]], str]) -> Project:
    backend, url, rows, name = database
    migrated = manage(url, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    return Project(
        backend=backend,
        database_url=url,
        rows=rows,
        database=name,
        check_before=manage(url, "tickerq", "check"),
        db=manage(url, "tickerq", "db"),
        check_after=manage(url, "tickerq", "check"),
    )


@dataclass
class Worker:
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def worker(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """``manage.py tickerq run`` on the project's database; stopped with SIGTERM after,
    which must end it with status 0."""
    assert project.db.returncode == 0, project.db.stderr
    folder = tmp_path_factory.mktemp("worker")
    log = folder / "worker.log"
    # the settings decide the store of every process: $TICKERQ_STORE must not send
    # the worker elsewhere (the jobs would never run)
    elsewhere = f"sqlite:///{folder / 'elsewhere.db'}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "tickerq", "run", "--log-level", "INFO"],
            cwd=PROJECT,
            env={**_env(project.database_url), "TICKERQ_STORE": elsewhere},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running = Worker(process, log)
    try:
        deadline = time.monotonic() + 30
        while "started" not in running.output():
            assert process.poll() is None, f"the worker ended: {running.output()}"
            assert time.monotonic() < deadline, f"the worker did not start: {running.output()}"
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert status == 0, running.output()
    assert "stopped" in running.output()
    assert f"TICKERQ_STORE ({elsewhere}) is ignored" in running.output()
    assert not (folder / "elsewhere.db").exists()


_PLACE_ORDERS = """
import json
from django.test import Client
client = Client()
placed = client.post("/orders/", {"email": "placed@example.com"})
declined = client.post("/orders/", {"email": "declined@example.com", "decline": "1"})
health = client.get("/tickerq/health")
print(json.dumps({
    "placed": [placed.status_code, placed.json()],
    "declined": [declined.status_code, declined.json()],
    "health": [health.status_code, health.json()],
}))
"""


@pytest.fixture(scope="module")
def placed(project: Project, worker: Worker) -> dict[str, Any]:
    """Two orders placed through the view (one committed, one rolled back), and the
    health view's answer, in a web process of the project (``manage.py shell``)."""
    result = manage(project.database_url, "shell", "--no-imports", "-c", _PLACE_ORDERS)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _tickers_of(project: Project, order_id: int) -> list[tuple[str, str]]:
    rows = project.rows("SELECT function, status, request FROM tickerq_tickers")
    found = []
    for function, status, request in rows:
        payload = json.loads(request) if isinstance(request, str) else request
        if payload == {"order_id": order_id}:
            found.append((function, status))
    return sorted(found)


def _wait_for(what: str, condition: Callable[[], Any], worker: Worker) -> Any:
    deadline = time.monotonic() + JOB_WAIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {JOB_WAIT:g} s; worker log:\n{worker.output()}")
        time.sleep(0.1)


# -- tests -------------------------------------------------------------------------------


def test_check_fails_until_db_creates_the_schema(project: Project) -> None:
    before = project.check_before
    assert before.returncode == 1, before.stdout + before.stderr
    assert "no tickerq tables; run `manage.py tickerq db`" in before.stderr
    assert "ok: 3 function(s): audit_order, confirm_order, purge_abandoned_orders" in before.stdout
    assert project.db.returncode == 0, project.db.stderr
    assert "upgraded none -> " in project.db.stdout
    after = project.check_after
    assert after.returncode == 0, after.stdout + after.stderr
    assert "(up to date) (from DATABASES['default'])" in after.stdout
    again = manage(project.database_url, "tickerq", "db", "current")
    assert again.returncode == 0, again.stderr
    assert "(up to date)" in again.stdout


def test_a_committed_order_is_confirmed_and_audited_by_the_worker(
    project: Project, worker: Worker, placed: dict[str, Any]
) -> None:
    status, body = placed["placed"]
    assert status == 201, body
    order_id = body["order"]

    def done() -> bool:
        return _tickers_of(project, order_id) == [
            ("audit_order", "DONE"),
            ("confirm_order", "DONE"),
        ]

    _wait_for("both jobs DONE", done, worker)
    rows = project.rows(
        f"SELECT status, confirmed_at, audited FROM orders_order WHERE id = {order_id}"
    )
    assert len(rows) == 1
    order_status, confirmed_at, audited = rows[0]
    assert order_status == "confirmed"  # the sync job's ORM update
    assert confirmed_at is not None
    assert audited in (True, 1)  # the async job's ORM update


def test_the_worker_seeds_the_cron_job_in_the_settings_timezone(
    worker: Worker, project: Project
) -> None:
    rows = project.rows("SELECT function, expression, timezone FROM tickerq_cron_tickers")
    assert rows == [("purge_abandoned_orders", "0 3 * * *", "Europe/Berlin")]  # TIME_ZONE


def test_a_rolled_back_order_enqueues_nothing(
    project: Project, worker: Worker, placed: dict[str, Any]
) -> None:
    status, body = placed["declined"]
    assert status == 402, body
    # enqueue_on_commit adds before the response returns when the transaction
    # commits: nothing there now means nothing was added
    assert _tickers_of(project, body["order"]) == []
    assert project.rows("SELECT id FROM orders_order WHERE email = 'declined@example.com'") == []
    assert ("audit_order",) in project.rows("SELECT DISTINCT function FROM tickerq_tickers")


def test_the_health_view_reports_the_store_ready(placed: dict[str, Any]) -> None:
    status, body = placed["health"]
    assert status == 200, body
    assert body == {"status": "ready", "checks": {"store": "ok", "engine": "not here"}}


def test_no_django_connection_is_left_open_after_the_jobs(
    project: Project, worker: Worker, placed: dict[str, Any]
) -> None:
    if project.backend != "postgresql":
        pytest.skip("connections are counted on PostgreSQL")
    order_id = placed["placed"][1]["order"]
    _wait_for(
        "both jobs DONE",
        lambda: [s for _, s in _tickers_of(project, order_id)] == ["DONE", "DONE"],
        worker,
    )
    sql = (
        "SELECT pid, state, query FROM pg_stat_activity "
        f"WHERE datname = '{project.database}' AND application_name = 'django-example'"
    )
    deadline = time.monotonic() + 3  # a closed session may take a moment to go
    left = project.rows(sql)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = project.rows(sql)
    assert left == [], f"the worker's jobs left Django connections open: {left}"
    assert worker.process.poll() is None


_FORK = """
import gc, os, signal, sys, time
import tickerq.contrib.django.project as tickerq_project
from tickerq.contrib.django import get_app, get_sync_app
from orders.jobs import OrderRef, confirm_order
parent_app = get_app()
get_sync_app().time_tickers.count()  # opened on this process's facade thread
pid = os.fork()
if pid == 0:
    # the function first: its app is the child's, not the parent's (whose loop is not here)
    ticker = confirm_order.sync.schedule(OrderRef(0), after=3600)
    child_app = get_app()
    print("child", child_app is not parent_app, confirm_order.app is child_app, flush=True)
    get_sync_app().time_tickers.delete(ticker.id)
    tickerq_project._state.orphans.clear()  # what the interpreter does at exit, sooner
    gc.collect()  # finalizes the parent's connections: must not affect the parent
    sys.exit(0)  # the parent's close-at-exit must not wait for its thread here
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("parent", os.waitstatus_to_exitcode(status), flush=True)
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    print("parent: the child hung", flush=True)
app = get_app()
count = app.sync.call(app.time_tickers.count(), timeout=5)  # still works here
print("parent still works", count >= 0, flush=True)
"""


def test_a_forked_web_process_builds_its_own_app_and_exits(project: Project) -> None:
    result = manage(project.database_url, "shell", "--no-imports", "-c", _FORK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "child True True" in result.stdout, result.stdout + result.stderr
    assert "parent 0" in result.stdout, result.stdout + result.stderr
    assert "parent still works True" in result.stdout, result.stdout + result.stderr


def test_the_example_projects_own_tests_pass(project: Project) -> None:
    # SQLite: Django's test database is in memory, and so is the store (memory://);
    # PostgreSQL: test_<name>, tickerq's tables created in it on first use
    result = manage(project.database_url, "test", "orders", "--noinput", "-v", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 6 tests" in result.stderr
    assert "OK" in result.stderr

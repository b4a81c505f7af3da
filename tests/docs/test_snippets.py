"""Every code example of the docs site runs, and does what its page says.

The examples live in ``docs/snippets/`` and the pages include them
(``--8<-- "docs/snippets/NAME"``), so what a reader copies is what runs here.
Each test runs one snippet as a script (``__main__``) in a fresh directory, so
its ``sqlite:///jobs.db`` is a file of that test, and checks what it printed
or left behind. PostgreSQL (for ``two_nodes.py``) gets a database of its own.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import runpy
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from asgi_server import served
from tickerq.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = ROOT / "docs" / "snippets"
POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)

TESTED: set[str] = set()
"""Snippet files a test below runs (see test_every_snippet_is_tested)."""


def runs(*names: str) -> Any:
    TESTED.update(names)
    return lambda f: f


def run_script(name: str, run_name: str = "__main__") -> dict[str, Any]:
    """Run ``docs/snippets/NAME`` like ``python NAME`` in the current directory."""
    return runpy.run_path(str(SNIPPETS / name), run_name=run_name)


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@runs("first_job.py")
def test_first_job(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("first_job.py")
    assert capsys.readouterr().out == "DONE Hello, Ada!\n"


@runs("sqlite_job.py")
def test_sqlite_job_survives_the_stop(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run_script("sqlite_job.py")
    out = lines(capsys.readouterr().out)
    assert out[0] == "sending 'Hello' to ada@example.com (attempt 1)"
    assert out[1].startswith("still waiting: send_email ")
    assert (tmp_path / "jobs.db").is_file()


@runs("jobs.py")
def test_worker_module_passes_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs.py").write_text((SNIPPETS / "jobs.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["check", "jobs:app"])
    assert result.exit_code == 0, result.output
    assert "2 function(s): nightly_cleanup, send_email" in result.output
    sys.modules.pop("jobs", None)


@runs("jobs.py")
def test_worker_module_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``tickerq run jobs:app`` as the getting-started page shows it."""
    (tmp_path / "jobs.py").write_text((SNIPPETS / "jobs.py").read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerq.cli", "run", "jobs:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        log = tmp_path / "jobs.db"
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and _node_started(tmp_path):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "seeded cron of nightly_cleanup created" in err
    assert "started: 2 function(s), max_concurrency=8" in err
    assert "get 20 s to finish" in err  # EngineOptions(grace_period=20)


def _node_started(directory: Path) -> bool:
    """Whether the worker in ``directory`` has registered its node in jobs.db."""
    import sqlite3

    try:
        with sqlite3.connect(directory / "jobs.db", timeout=1) as db:
            return bool(db.execute("SELECT count(*) FROM tickerq_nodes").fetchone()[0])
    except sqlite3.Error:
        return False


@runs("context.py")
def test_context(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("context.py")
    assert lines(capsys.readouterr().out) == [
        "import_feed TIME attempt 1 {'tenant': 'acme'}",
        "indexing https://example.com/rss",
        "DONE 42",
        "SKIPPED None",
        "CANCELLED",
    ]


@runs("retries.py")
def test_retries(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("retries.py")
    assert lines(capsys.readouterr().out) == [
        "DONE 3 ok",
        "09:00:00 FAILED ConnectionError",
        "09:00:10 FAILED ConnectionError",
        "09:01:10 FAILED ConnectionError",
        "09:02:10 DONE None",
    ]


@runs("chains.py")
def test_chains(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("chains.py")
    assert lines(capsys.readouterr().out) == [
        "30 charge DONE",
        "30 ship DONE",
        "30 refund_alert SKIPPED",
        "0 charge FAILED",
        "0 ship SKIPPED",
        "0 refund_alert DONE",
    ]


@runs("crons.py")
def test_crons(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("crons.py")
    assert lines(capsys.readouterr().out) == [
        "next: 2026-03-28T02:30:00+01:00",
        "next: 2026-03-29T03:00:00+02:00",
        "next: 2026-03-30T02:30:00+02:00",
        "nightly Sat 02:30",
        "nightly Sun 03:00",
        "nightly Mon 02:30",
        "report Mon 09:00 {'team': 'ops'}",
        "1 report occurrences",
    ]


@runs("test_reports.py")
def test_the_testing_page_example_passes() -> None:
    module = run_script("test_reports.py", run_name="test_reports")
    asyncio.run(module["test_a_week_of_reports"]())
    asyncio.run(module["test_retries_until_it_works"]())


@runs("test_reports.py")
def test_the_testing_page_example_can_fail() -> None:
    """The example's assertions bite: a clock a day short sees four reports."""
    from datetime import UTC, datetime, timedelta

    from tickerq.testing import ManualClock, advance

    module = run_script("test_reports.py", run_name="test_reports")

    async def short_week() -> list[datetime]:
        app, sent = module["make_app"](ManualClock(datetime(2026, 3, 2, tzinfo=UTC)))
        async with app:
            await advance(app, timedelta(days=4))
        return sent

    assert len(asyncio.run(short_week())) == 4


@runs("dashboard_mount.py")
async def test_dashboard_mount() -> None:
    web = run_script("dashboard_mount.py", run_name="web")
    api = web["api"]
    async with web["lifespan"](api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as c:
            ready = await c.get("/jobs/api/readyz")  # probes need no credentials
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["engine"] == "running"
            assert (await c.get("/jobs/")).status_code == 401
            created = (await c.post("/invoices/7")).json()
            ticker = await web["jobs"].time_tickers.wait(uuid.UUID(created["ticker"]), timeout=10)
            assert ticker.status == "DONE"
            page = await c.get(
                f"/jobs/api/time-tickers/{ticker.id}", auth=("support", "change-me-too")
            )
            assert page.status_code == 200
            assert page.json()["ticker"]["request"] == {"number": 7, "card_number": "****"}
            assert (await c.get("/jobs/", auth=("admin", "change-me"))).status_code == 200
            # support may operate (cancel, retry) but not delete
            delete = await c.post(
                "/jobs/api/time-tickers/delete",
                json={"ids": [str(ticker.id)]},
                auth=("support", "change-me-too"),
                headers={"Origin": "http://shop.example"},
            )
            assert delete.status_code == 403, delete.text
    assert not web["jobs"].engine.running


@runs("sync_script.py")
def test_sync_script(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("sync_script.py")
    assert lines(capsys.readouterr().out) == ["DONE cat.png at 640px", "IDLE"]


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    yield from _fresh_postgresql_database()


def _fresh_postgresql_database() -> Iterator[str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRESQL_URL).set(drivername="postgresql")
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    name = f"tickerq_docs_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {admin} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@runs("two_nodes.py")
def test_two_nodes_share_the_work(
    shared_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICKERQ_STORE", shared_store)
    run_script("two_nodes.py")
    counts, total = lines(capsys.readouterr().out)
    assert total == "40 done"
    # Counter({'worker-a': N, 'worker-b': M}): both nodes took a share
    assert "'worker-a'" in counts and "'worker-b'" in counts, counts


@runs("configuration.py")
def test_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("configuration.py")
    assert lines(capsys.readouterr().out) == ["worker-1 32 Europe/Berlin", "20 10/s"]


def test_every_snippet_is_tested_and_included() -> None:
    """A snippet no test runs, or no page shows, is a mistake."""
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    snippets = {p.name for p in SNIPPETS.iterdir() if p.is_file() and p.suffix == ".py"}
    deployment = (
        {p.name for p in (SNIPPETS / "deploy").iterdir()}
        if (SNIPPETS / "deploy").is_dir()
        else set()
    )
    assert snippets - TESTED == set(), "snippets no test runs"
    for name in sorted(snippets):
        assert f"docs/snippets/{name}" in pages, f"no page includes docs/snippets/{name}"
    for name in sorted(deployment):
        assert f"docs/snippets/deploy/{name}" in pages, (
            f"no page includes docs/snippets/deploy/{name}"
        )


@runs("producer.py")
def test_producer_enqueues_for_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "jobs.py").write_text((SNIPPETS / "jobs.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "jobs", raising=False)
    try:
        run_script("producer.py")
    finally:
        sys.modules.pop("jobs", None)
    assert capsys.readouterr().out == "1 email(s) waiting for the worker\n"
    import sqlite3

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        rows = db.execute("SELECT function, status FROM tickerq_tickers").fetchall()
    assert rows == [("send_email", "IDLE")]


@runs("producer_by_name.py")
def test_a_producer_without_the_code_enqueues_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker (jobs.py) runs, so the cluster knows send_email; the producer
    enqueues by name without importing it, and the worker runs the job."""
    (tmp_path / "jobs.py").write_text((SNIPPETS / "jobs.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "jobs", raising=False)
    try:
        worker = importlib.import_module("jobs").app
        worker.sync.start()  # its heartbeat names its functions
        try:
            run_script("producer_by_name.py")
            assert capsys.readouterr().out == (
                "send_email IDLE {'to': 'bob@example.com', 'subject': 'Hi'}\n"
            )
            [ticker] = worker.sync.time_tickers.query(function="send_email")
            assert worker.sync.time_tickers.wait(ticker.id, timeout=20).status.value == "DONE"
        finally:
            worker.sync.stop()
    finally:
        sys.modules.pop("jobs", None)


@runs("functions.py")
def test_functions(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("functions.py")
    out = lines(capsys.readouterr().out)
    assert out[0] == "['anything', 'bill', 'billing.refund', 'cleanup', 'ping', 'send_email']"
    assert out[1].startswith("function 'two_parameters': takes parameters (a, b); only one")
    assert out[2:] == ["InvalidRequestError", "{'total': 9.5}"]


@runs("from_apscheduler.py")
def test_from_apscheduler(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("from_apscheduler.py")
    assert capsys.readouterr().out == "120 1 1\n"


@runs("from_celery.py")
def test_from_celery(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("from_celery.py")
    assert lines(capsys.readouterr().out) == ["charged order 1", "DONE", "SKIPPED", "CANCELLED"]


@runs("flow_control.py")
def test_flow_control(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("flow_control.py")
    assert lines(capsys.readouterr().out) == [
        "[('partner 09:00', 100), ('partner 09:01', 50), ('smtp 09:00:00', 10), ('smtp 09:00:01', 5)]",
        "{'acme': 1, 'globex': 1}",
    ]


@runs("unique_jobs.py")
def test_unique_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("unique_jobs.py")
    assert lines(capsys.readouterr().out) == [
        "ADDED KEPT True",
        "True {'account_id': 1, 'balance': 30}",
        "1",
        "charge order-42 True",
    ]


@runs("connections.py")
def test_connections(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("connections.py")
    assert lines(capsys.readouterr().out) == [
        "ConnectionBudget(total=5, pool=3, hot_path=True, listen=True)",
        "ConnectionBudget(total=5, pool=3, hot_path=True, listen=True)",
        "ConnectionBudget(total=3, pool=1, hot_path=True, listen=True)",
        "ConnectionBudget(total=3, pool=1, hot_path=True, listen=True)",
    ]


@runs("pauses.py")
def test_pauses(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("pauses.py")
    assert lines(capsys.readouterr().out) == ["IDLE", "alice", "True", "DUE_DONE", "['*']"]


@runs("observability.py")
def test_observability(capsys: pytest.CaptureFixture[str]) -> None:
    run_script("observability.py")
    assert lines(capsys.readouterr().out) == [
        "send_email attempt 1 failed (SMTP server busy); final: False",
        "DONE sent for acme ['request-id', 'tenant', 'traceparent']",
        "['send send_email', 'process send_email', 'process send_email']",
        '[\'tickerq_jobs_finished_total{function="send_email",status="done"} 1.0\', '
        '\'tickerq_jobs_finished_total{function="send_email",status="retry"} 1.0\']',
    ]


@runs("logging_json.py")
def test_logging_json() -> None:
    """In a process of its own: it configures the root logger."""
    import json

    done = subprocess.run(
        [sys.executable, str(SNIPPETS / "logging_json.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    record = json.loads(done.stderr)
    assert {k: record[k] for k in ("level", "logger", "message", "action", "node")} == {
        "level": "INFO",
        "logger": "tickerq.app",
        "message": "hello",
        "action": "demo",
        "node": "n1",
    }


def test_every_python_example_is_a_snippet() -> None:
    """A Python block of a page holds only an include of a snippet the tests run, or
    of a file of the Django example project (which tests/contrib_django runs)."""
    import re

    include = r'--8<-- "(docs/snippets|examples/django_project)/[\w/]+\.py"\n'
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for body in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S):
            assert re.fullmatch(include, body), (
                f"{page.name}: a Python example that is not a snippet:\n{body[:200]}"
            )


@pytest.fixture
def web_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """docs/snippets/web_jobs.py as the ``jobs.py`` the web snippets import."""
    jobs = tmp_path / "jobs.py"
    jobs.write_text((SNIPPETS / "web_jobs.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "jobs", raising=False)
    yield jobs
    sys.modules.pop("jobs", None)


def worker_of(jobs: Path) -> Any:
    """The app of another copy of jobs.py: what ``tickerq run jobs:tq`` loads in the worker."""
    return runpy.run_path(str(jobs), run_name="worker_jobs")["tq"]


SENT_TO_ADA = "sent 'Welcome, Ada!' to ada@example.com"
FINISHED = {"DONE", "DUE_DONE"}


@runs("web_jobs.py", "web_fastapi.py")
async def test_fastapi_web_enqueues_and_a_worker_runs(web_jobs: Path) -> None:
    web = run_script("web_fastapi.py", run_name="main")
    tq = web["tq"]
    async with served(web["api"]) as client:  # runs the lifespan, as uvicorn does
        assert tq.store.is_open and not tq.engine.running  # producer only
        assert (await client.post("/signup", json={"to": "ada@example.com"})).status_code == 422
        accepted = await client.post("/signup", json={"to": "ada@example.com", "name": "Ada"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert (await client.get(f"/jobs/{job_id}")).json() == {"status": "IDLE"}
        assert (await client.get(f"/jobs/{uuid.uuid4()}")).status_code == 404

        async with worker_of(web_jobs) as worker:  # the worker: another app, the same store
            done = await worker.time_tickers.wait(uuid.UUID(job_id), timeout=10)
        assert done.result == SENT_TO_ADA
        assert (await client.get(f"/jobs/{job_id}")).json()["status"] in FINISHED
    assert not tq.store.is_open  # closed with the web app


@runs("web_lifespan.py")
async def test_fastapi_lifespan_with_engine_and_dashboard(
    web_jobs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_PASSWORD", "s3cret")
    web = run_script("web_lifespan.py", run_name="main")
    tq = web["tq"]
    jobs = sys.modules["jobs"]
    async with served(web["api"]) as client:
        assert (await client.get("/ready")).json() == {"jobs": True, "http": True}
        assert (await client.get("/admin/jobs/")).status_code == 401
        assert (await client.get("/admin/jobs/", auth=("admin", "s3cret"))).status_code == 200
        email = jobs.WelcomeEmail(to="ada@example.com", name="Ada")
        ticker = await jobs.send_welcome_email.enqueue(email)
        done = await tq.time_tickers.wait(ticker.id, timeout=10)  # run by the web process
        assert done.status in FINISHED and done.result == SENT_TO_ADA
    assert not tq.engine.running and not tq.store.is_open


@runs("web_flask.py")
def test_flask_web_enqueues_and_a_worker_runs(web_jobs: Path) -> None:
    web = run_script("web_flask.py", run_name="web")
    tq, background = web["tq"], web["background"]
    try:
        client = web["create_app"]().test_client()
        refused = client.post("/signup", json={"to": "ada@example.com"})
        assert refused.status_code == 422
        assert [e["loc"] for e in refused.json["errors"]] == [["name"]]
        accepted = client.post("/signup", json={"to": "ada@example.com", "name": "Ada"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json["job_id"]
        assert client.get(f"/jobs/{job_id}").json == {"status": "IDLE"}
        assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
        assert background.opened and not tq.engine.running  # producer only

        worker = worker_of(web_jobs)
        worker.sync.start()
        try:
            done = worker.sync.time_tickers.wait(uuid.UUID(job_id), timeout=10)
        finally:
            worker.sync.stop()
        assert done.result == SENT_TO_ADA
        assert client.get(f"/jobs/{job_id}").json["status"] in FINISHED
    finally:
        background.close()
    assert not tq.store.is_open

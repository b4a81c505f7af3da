"""examples/flask_app runs as its README says: the web app (producer only, through
Flask's test client) and a worker (``tickerq run jobs:tq``) on one SQLite store; and
with the jobs run in a background thread of the web process (RUN_JOBS_IN_WEB=1)."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from example_runner import attempts, example_modules, node_of, poll, worker

FINISHED = {"DONE", "DUE_DONE"}  # DUE_DONE: it started late (the worker came later)
MARCH_NORTH = {"month": "2026-03", "region": "north"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "TICKERQ_STORE": f"sqlite:///{tmp_path}/jobs.db",
        "REPORTS_DIR": str(tmp_path / "reports"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def web(env: dict[str, str]) -> Iterator[ModuleType]:
    """The example's web module, imported fresh; its tickerq closed afterwards (the
    test process does not exit between tests)."""
    with example_modules("flask_app", "jobs", "web") as (_, web):
        try:
            yield web
        finally:
            web.background.close()


def check_report(result: Any, tmp_path: Path) -> None:
    path = tmp_path / "reports" / "sales-2026-03-north.csv"
    assert result["file"] == str(path)
    with path.open(newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert len(rows) == result["rows"] == 28
    assert sum(int(row["sales"]) for row in rows) == result["total"]


def test_web_enqueues_and_the_worker_runs_the_job(
    web: ModuleType, env: dict[str, str], tmp_path: Path
) -> None:
    client = web.create_app().test_client()
    refused = client.post("/reports", json={"month": "2026-13", "region": "north"})
    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json["errors"]] == [["month"]]
    accepted = client.post("/reports", json=MARCH_NORTH)
    assert accepted.status_code == 202, accepted.text
    job_id, status_url = accepted.json["job_id"], accepted.json["status_url"]
    assert status_url == f"/reports/{job_id}"
    assert client.get(status_url).json["status"] == "IDLE"
    assert not web.tq.engine.running  # producer only
    assert client.get(f"/reports/{uuid.uuid4()}").status_code == 404

    worker_process = worker("flask_app", env)
    try:
        done = poll(lambda: client.get(status_url).json, FINISHED)
    finally:
        assert worker_process.stop() == 0, worker_process.text()
    assert done["function"] == "build_sales_report" and done["error"] is None
    check_report(done["result"], tmp_path)
    assert [a.node for a in attempts(env["TICKERQ_STORE"], job_id)] == [node_of(worker_process.pid)]


def test_jobs_run_in_the_web_process_when_asked(
    web: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUN_JOBS_IN_WEB", "1")
    client = web.create_app().test_client()
    job_id = client.post("/reports", json=MARCH_NORTH).json["job_id"]
    assert web.tq.engine.running
    web.tq.sync.time_tickers.wait(job_id, timeout=10)
    done = client.get(f"/reports/{job_id}").json
    assert done["status"] == "DONE"
    check_report(done["result"], tmp_path)
    assert [a.node for a in web.tq.sync.time_tickers.attempts(job_id)] == [web.tq.node_id]

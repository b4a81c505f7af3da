"""`tickerq run MODULE:APP --metrics-port` end to end (issue 11, items 5 and 7).

A real worker process on a SQLite file runs jobs that succeed, fail and retry;
the test scrapes its ``/metrics`` over HTTP with urllib and parses the answer
with prometheus_client's parser, checks ``/healthz`` and ``/readyz``, takes the
database file away (``/readyz`` turns 503, ``/healthz`` stays 200) and back,
then stops the worker with SIGTERM: exit 0 and the port closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from acceptance.test_cli_signals import Command, refuses_connections
from tickerq import EngineOptions, TickerContext, TickerQ

JOBS_APP = """
import os
from tickerq import EngineOptions, TickerContext, TickerQ
from tickerq.contrib.prometheus import PrometheusMiddleware

app = TickerQ(
    os.environ["JOBS_STORE"],
    max_concurrency=3,
    options=EngineOptions(heartbeat_interval=1.0),
)
app.add_middleware(PrometheusMiddleware(depth_interval=0.5))


@app.function()
def greet(ctx: TickerContext[str]) -> str:
    return "hello " + ctx.request


@app.function(retries=1, retry_intervals=[0.5])
async def flaky() -> None:
    raise RuntimeError("not today")
"""


def _enqueue(url: str) -> None:
    """Tickers for the worker, added from this process (as a web app would)."""

    async def add() -> None:
        app = TickerQ(url, options=EngineOptions())

        @app.function("greet")
        def greet(ctx: TickerContext[str]) -> str:
            raise AssertionError("runs in the worker")

        @app.function("flaky", retries=1, retry_intervals=[0.5])
        async def flaky() -> None:
            raise AssertionError("runs in the worker")

        await app.open()
        for i in range(5):
            await greet.enqueue(f"n{i}")
        await flaky.enqueue()
        await greet.schedule("later", at=datetime.now(UTC) + timedelta(hours=1))
        await app.stop()

    asyncio.run(add())


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["content-type"], error.read().decode()


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def wait_until(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_worker_serves_metrics_and_probes_over_http(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    url = f"sqlite:///{db}"
    (tmp_path / "jobs_app.py").write_text(JOBS_APP)
    _enqueue(url)
    worker = Command("run", "jobs_app:app", "--metrics-port", "0", cwd=tmp_path, JOBS_STORE=url)
    try:
        found = worker.wait_for_line(r"metrics and probes on (http://127\.0\.0\.1:\d+)/metrics")
        base = found.group(1)

        def finished(function: str, status: str) -> float:
            return samples.get(
                (
                    "tickerq_jobs_finished_total",
                    frozenset({("function", function), ("status", status)}),
                ),
                0.0,
            )

        def all_ran() -> bool:
            nonlocal samples
            samples = scrape(base)
            # a start later than the lateness threshold (a loaded machine) ends due_done
            ended_well = finished("greet", "done") + finished("greet", "due_done")
            return ended_well == 5 and finished("flaky", "failed") == 1

        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        wait_until(all_ran, "the jobs to run")

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, frozenset(labels.items())))

        assert value("tickerq_jobs_started_total", function="greet") == 5
        assert value("tickerq_jobs_started_total", function="flaky") == 2
        assert finished("flaky", "retry") == 1
        assert value("tickerq_job_retries_total", function="flaky") == 1
        assert value("tickerq_job_duration_seconds_count", function="greet") == 5
        assert value("tickerq_job_lateness_seconds_count", function="greet") == 5
        assert value("tickerq_jobs_in_flight", function="greet") == 0
        assert value("tickerq_engine_slots") == 3
        assert value("tickerq_engine_running") == 1
        assert value("tickerq_engine_heartbeat_age_seconds") is not None
        assert value("process_resident_memory_bytes") is not None  # the global registry
        wait_until(
            lambda: (
                (s := scrape(base)).get(
                    (
                        "tickerq_waiting_jobs",
                        frozenset({("function", "greet"), ("priority", "NORMAL")}),
                    )
                )
                == 1
                and s.get(
                    ("tickerq_due_jobs", frozenset({("function", "greet"), ("priority", "NORMAL")}))
                )
                == 0
            ),
            "the depth sample to show the later ticker only",
        )

        status, content_type, body = get(f"{base}/healthz")
        assert (status, content_type, json.loads(body)) == (
            200,
            "application/json",
            {"status": "ok"},
        )
        status, _, body = get(f"{base}/readyz")
        ready = json.loads(body)
        assert status == 200, ready
        assert ready["status"] == "ready"
        assert ready["checks"]["store"] == "ok"
        assert ready["checks"]["engine"] == "running"
        assert ready["checks"]["heartbeat"] == "fresh"

        # The database file goes away (a volume lost): not ready, still alive.
        away = tmp_path / "away"
        away.mkdir()
        files = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
        for file in files:
            if file.exists():
                shutil.move(file, away / file.name)
        try:
            status, _, body = get(f"{base}/readyz")
            assert status == 503, body
            assert json.loads(body)["reason"] == "store unreachable"
            assert get(f"{base}/healthz")[0] == 200
        finally:
            for file in files:
                if (away / file.name).exists():
                    shutil.move(away / file.name, file)
        assert wait_until(lambda: get(f"{base}/readyz")[0] == 200, "ready again")

        worker.proc.send_signal(signal.SIGTERM)
        code, out, err = worker.finish(30)
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.finish(5)
    assert code == 0, (out, err)
    assert refuses_connections(base)


def _tickerq(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickerq.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_a_metrics_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "jobs_app.py").write_text(JOBS_APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _tickerq(
            "run",
            "jobs_app:app",
            "--metrics-port",
            str(port),
            cwd=tmp_path,
            JOBS_STORE=f"sqlite:///{tmp_path / 'jobs.db'}",
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"Error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert not (tmp_path / "jobs.db").exists()  # refused before the store was opened


def test_metrics_without_prometheus_client_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "plain_app.py").write_text("from tickerq import TickerQ\napp = TickerQ()\n")
    missing = tmp_path / "missing"
    (missing / "prometheus_client").mkdir(parents=True)
    (missing / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('No module named prometheus_client')\n"
    )
    path = os.pathsep.join([str(missing), os.environ.get("PYTHONPATH", "")])
    result = _tickerq("run", "plain_app:app", "--metrics-port", "0", cwd=tmp_path, PYTHONPATH=path)
    assert result.returncode == 2, result.stderr
    assert "pip install 'tickerq[prometheus]'" in result.stderr

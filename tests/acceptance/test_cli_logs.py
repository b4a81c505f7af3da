"""`tickerq run --log-format json|text --log-level LEVEL`, run as a user would.

A worker on a SQLite file runs a job that succeeds and one that fails, is
retried and fails for good; every line it writes is then read back.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

APP = """
import asyncio, os, sys
from tickerq import TickerQ

app = TickerQ("sqlite:///" + os.environ["TICKERQ_TEST_DB"], node_id="logger-1")


@app.function()
async def fine() -> str:
    return "ok"


@app.function(retries=1, retry_intervals=[0.2])
def flaky() -> None:
    raise ValueError("flaky is broken")


async def seed() -> None:
    await app.open()
    try:
        for function in ("fine", "flaky"):
            ticker = await app.time_tickers.add(function)
            print(function, ticker.id)
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(seed())
"""


class Worker:
    """``tickerq ARGS`` in the background; its stderr read line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickerq.cli", *args],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.err}"
                continue
            self.err.append(line)
            if text in line:
                return
        raise AssertionError(f"no line with {text!r}: {''.join(self.err)}")

    def stop(self) -> tuple[int, str, list[str]]:
        """SIGTERM, wait: (exit status, stdout, stderr lines)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        while not self.lines.empty():
            self.err.append(self.lines.get())
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, out, self.err


def seeded(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    (tmp_path / "jobs.py").write_text(APP)
    env = {"TICKERQ_TEST_DB": str(tmp_path / "jobs.db")}
    seed = subprocess.run(
        [sys.executable, "jobs.py"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    ids = dict(line.split() for line in seed.stdout.splitlines())
    return env, ids


def test_json_logs_are_one_object_per_line_with_the_job_fields(tmp_path: Path) -> None:
    env, ids = seeded(tmp_path)
    worker = Worker("run", "jobs:app", "--log-format", "json", "--log-level", "info",
                    cwd=tmp_path, env=env)  # fmt: skip
    worker.wait_for('"job_failed"')
    status, out, err = worker.stop()
    assert status == 0, "".join(err)
    lines = [line for line in [*out.splitlines(), *err] if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # each one is JSON
    for r in records:
        assert {"time", "level", "logger", "message"} <= r.keys(), r
        datetime.fromisoformat(r["time"])
    by_action: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_action.setdefault(r.get("action", ""), []).append(r)

    jobs = [r for r in records if r.get("action", "").startswith("job_")]
    for r in jobs:
        assert r["logger"] == "tickerq.engine" and r["node"] == "logger-1", r
        assert r["ticker_id"] == ids[r["function"]], r
    assert sorted((r["function"], r["attempt"]) for r in by_action["job_started"]) == [
        ("fine", 1),
        ("flaky", 1),
        ("flaky", 2),
    ]
    [succeeded] = by_action["job_succeeded"]
    assert (succeeded["level"], succeeded["function"], succeeded["attempt"]) == ("INFO", "fine", 1)
    assert isinstance(succeeded["duration_ms"], float) and succeeded["duration_ms"] >= 0
    [retry] = by_action["job_retry"]
    assert (retry["level"], retry["function"], retry["attempt"]) == ("WARNING", "flaky", 1)
    assert "attempt 1 of 2 failed" in retry["message"]
    assert f"retry at {retry['retry_at']}" in retry["message"]
    assert datetime.fromisoformat(retry["retry_at"]) > datetime.fromisoformat(retry["time"])
    assert "traceback" not in retry
    [failed] = by_action["job_failed"]
    assert (failed["level"], failed["function"], failed["attempt"]) == ("ERROR", "flaky", 2)
    assert failed["traceback"].startswith("Traceback (most recent call last)")
    assert failed["traceback"].endswith("ValueError: flaky is broken")
    assert isinstance(failed["duration_ms"], float)
    # the node's life, and what the command itself said
    [run] = by_action["cli_run"]
    assert run["logger"] == "tickerq.cli" and run["node"] == "logger-1"
    [started] = by_action["node_started"]
    [requested] = by_action["stop_requested"]
    assert requested["signal"] == "SIGTERM"
    [stopping] = by_action["node_stopping"]
    [stopped] = by_action["node_stopped"]
    assert [started["node"], stopping["node"], stopped["node"]] == ["logger-1"] * 3
    order = [r.get("action") for r in records]
    assert order.index("node_started") < order.index("job_started")
    assert (
        order.index("stop_requested") < order.index("node_stopping") < order.index("node_stopped")
    )


def test_text_logs_show_the_fields_and_the_level_filters(tmp_path: Path) -> None:
    env, ids = seeded(tmp_path)
    worker = Worker("run", "jobs:app", "--log-level", "WARNING", cwd=tmp_path, env=env)
    worker.wait_for("failed for good")
    status, out, err = worker.stop()
    assert status == 0, "".join(err)
    text = "".join(err)
    assert " WARNING tickerq.engine: job flaky " in text
    assert f"action=job_retry function=flaky ticker_id={ids['flaky']} attempt=1" in text
    assert " ERROR tickerq.engine: job flaky " in text and "ValueError: flaky is broken" in text
    assert " INFO " not in text  # below the level
    assert "tickerq: running jobs:app as node logger-1" in out  # the command still talks
    assert "SIGTERM received, stopping gracefully" in text


def test_bad_log_options_are_named(tmp_path: Path) -> None:
    for args, named in (
        (["run", "jobs:app", "--log-level", "LOUD"], "'LOUD'"),
        (["run", "jobs:app", "--log-format", "xml"], "'xml'"),
        (["demo", "--log-level", "verbose"], "'verbose'"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "tickerq.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, result
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: ") and named in line, line
        assert "--log-" in line


def test_a_runtime_error_is_a_json_line_too(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(APP)
    (tmp_path / "jobs.db").write_text("not a database")
    result = subprocess.run(
        [sys.executable, "-m", "tickerq.cli", "run", "jobs:app", "--log-format", "json"],
        cwd=tmp_path,
        env={**os.environ, "TICKERQ_TEST_DB": str(tmp_path / "jobs.db")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result
    records = [json.loads(line) for line in (result.stdout + result.stderr).splitlines()]
    last = records[-1]
    assert (last["level"], last["action"], last["exit_status"]) == ("ERROR", "exit", 1)
    assert "jobs.db" in last["message"]

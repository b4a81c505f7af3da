"""The `tickerq` command, run as a user would: a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).parent / "sample"


def tickerq(
    *args: str, cwd: Path = SAMPLE, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickerq.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env, "COLUMNS": "120"},
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = tickerq("--help")
    assert result.returncode == 0
    for command in ("run", "check", "cron", "demo"):
        assert f"  {command}" in result.stdout


def test_check_reports_all_three_mistakes() -> None:
    result = tickerq("check", "broken_app:app")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 3, result.stderr
    assert "'nightly'" in lines[0] and "hour" in lines[0] and "25" in lines[0]
    assert "'two_params'" in lines[1] and "extra" in lines[1]
    assert "'hopeless'" in lines[2] and "retries" in lines[2] and "-1" in lines[2]
    assert "3 problem(s) found" in result.stderr


def test_check_passes_a_good_app() -> None:
    result = tickerq("check", "good_app")
    assert result.returncode == 0, result.stderr
    assert "ok: 2 function(s): every_second, greet" in result.stdout


def test_check_names_a_missing_module() -> None:
    result = tickerq("check", "no_such_module:app")
    assert result.returncode == 2
    assert "no_such_module" in result.stderr


def test_cron_next_prints_fires_in_the_timezone() -> None:
    result = tickerq(
        "cron",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "-n",
        "3",
        "--after",
        "2026-03-27T12:00",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[0] == "2026-03-28T02:30:00+01:00"
    assert lines[2].split()[0] == "2026-03-29T03:00:00+02:00"  # the spring-forward gap
    assert lines[3].split()[0] == "2026-03-30T02:30:00+02:00"


def test_cron_next_rejects_a_bad_field() -> None:
    result = tickerq("cron", "next", "61 * * * *")
    assert result.returncode == 2
    assert "minute" in result.stderr and "61" in result.stderr


def test_run_executes_jobs_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "TICKERQ_TEST_MARKERS": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerq.cli", "run", "good_app:app"],
        cwd=SAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not list(tmp_path.glob("cron-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the cron never ran"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "running good_app:app" in out


def test_demo_shows_jobs_running_and_keeps_history(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/demo.db"
    first = tickerq("demo", "--duration", "4", "--store", store, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "tickerq demo" in first.stdout
    assert "charge_card" in first.stdout
    assert "DONE" in first.stdout
    assert "sync_inventory" in first.stdout
    assert "order 100" in first.stdout
    after_first = asyncio.run(_orders(store))
    assert after_first, "the first run stored no orders"
    waiting = asyncio.run(_waiting(store))
    # Started again on the same file, the history is still there and new orders follow it.
    second = tickerq("demo", "--duration", "3", "--store", store, timeout=60)
    assert second.returncode == 0, second.stderr
    after_second = asyncio.run(_orders(store))
    assert set(after_first) <= set(after_second)
    assert max(after_second) > max(after_first)
    # the screen shows new orders, numbered after the first run's (the very newest
    # may be stored after the last frame was drawn, so it is not required)
    shown = {int(n) for n in re.findall(r"order (\d+)", second.stdout)}
    assert any(n > max(after_first) for n in shown), (sorted(shown), max(after_first))
    # Work left waiting (and due) when the first run stopped ran in the second.
    assert not set(waiting) & set(asyncio.run(_waiting(store)))


async def _waiting(store: str) -> list[str]:
    from datetime import UTC, datetime

    from tickerq import Status, TickerQ

    app = TickerQ(store)
    await app.open()
    try:
        idle = await app.time_tickers.query(status=Status.IDLE, limit=1000)
    finally:
        await app.store.close()
    now = datetime.now(UTC)
    return [str(t.id) for t in idle if t.execution_time and t.execution_time <= now]


async def _orders(store: str) -> list[int]:
    from tickerq import TickerQ

    app = TickerQ(store)
    await app.open()
    try:
        tickers = await app.time_tickers.query(function="charge_card", limit=1000)
    finally:
        await app.store.close()
    return [int(t.description.split()[-1]) for t in tickers]

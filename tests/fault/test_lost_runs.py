"""Real processes frozen, crashing and stopped mid-job (issue 8, items 2, 3 and 4).

* A node frozen (SIGSTOP) past its lease: another node takes the row over and
  runs it; when the frozen node wakes, its stale run is cancelled and its result
  never lands on the row.
* A poison job that kills its node (``os._exit``) every time: the nodes are
  restarted as a supervisor would, and the row ends FAILED after
  ``max_stale_restarts`` lost runs instead of going round forever; the other
  work still gets done.
* SIGTERM while a sync job hangs in its thread: the process exits within the
  grace period plus the stop margin; the row keeps the node's claim (no overlap),
  and a node starting under the same id takes it back at once and runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fault.harness import WORKER, Worker, cluster, query, wait_for, wait_ready

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'faults.db'}"
    return str(request.getfixturevalue("pg_url"))


def add(url: str, *tickers: tuple[str, Any]) -> list[str]:
    """Add time tickers due now (function, request); returns their ids."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from worker import build_app
    finally:
        sys.path.remove(str(WORKER.parent))

    async def go() -> list[str]:
        app = build_app(url, node_id="seeder", records=None)
        await app.open()
        try:
            return [str((await app.time_tickers.add(f, request=r)).id) for f, r in tickers]
        finally:
            await app.stop()

    return asyncio.run(go())


def row(url: str, ticker_id: str) -> dict[str, Any]:
    key = ticker_id if url.startswith("postgresql") else ticker_id.replace("-", "")
    (found,) = query(url, f"SELECT * FROM tickerq_tickers WHERE id = '{key}'")
    return found


def attempts(url: str, ticker_id: str) -> list[dict[str, Any]]:
    key = ticker_id if url.startswith("postgresql") else ticker_id.replace("-", "")
    return query(url, f"SELECT * FROM tickerq_attempts WHERE ticker_id = '{key}' ORDER BY id")


def records(directory: Path, ticker_id: str) -> list[list[str]]:
    lines = []
    for path in sorted((directory / "records").glob("*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[1] == ticker_id:
                lines.append(parts)
    return lines


def test_a_frozen_node_loses_its_claim_and_its_stale_run(url: str, tmp_path: Path) -> None:
    fast = ("--lease", "2", "--heartbeat", "0.5", "--poll", "0.2")
    frozen, other = Worker(tmp_path, url, "w1", *fast), Worker(tmp_path, url, "w2", *fast)
    with cluster([frozen]), contextlib.ExitStack() as later:
        later.callback(other.force_kill)
        wait_ready([frozen])
        (ticker,) = add(url, ("job", {"sleep": 6}))
        wait_for(lambda: records(tmp_path, ticker), 20, "w1 to start the job")
        frozen.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            other.start()
            wait_ready([other])
            wait_for(
                lambda: any(r[0] == "start" and r[3] == "w2" for r in records(tmp_path, ticker)),
                20,
                "w2 to take the row over after w1's lease ran out",
            )
        finally:
            frozen.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        wait_for(lambda: row(url, ticker)["status"] == "DONE", 30, "the row to end")
        time.sleep(2)  # w1 is awake: give its stale run time to do harm, if it can
        final = row(url, ticker)
        runs = records(tmp_path, ticker)
        tries = attempts(url, ticker)
        assert frozen.alive() and other.alive()
    assert (final["status"], final["stale_restarts"], final["lock_holder"]) == ("DONE", 1, None)
    assert [(a["node"], a["status"], a["error_type"]) for a in tries] == [
        ("w1", "FAILED", "LeaseExpired"),
        ("w2", "DONE", None),
    ]
    w1_runs = [r for r in runs if r[3] == "w1"]
    assert [r[0] for r in w1_runs] == ["start"], f"w1's stale run went on or ran twice: {runs}"
    assert "lost its claim" in frozen.stderr() or "lease ran out" in frozen.stderr()


def test_a_job_that_kills_its_node_ends_failed(url: str, tmp_path: Path) -> None:
    args = ("--lease", "2", "--heartbeat", "0.5", "--poll", "0.2", "--max-stale-restarts", "2")
    workers = [Worker(tmp_path, url, f"w{i}", *args) for i in (1, 2)]
    with cluster(workers):
        wait_ready(workers)
        poison, *fine = add(url, ("poison", None), *[("job", {"sleep": 0.01})] * 5)
        deaths = 0
        deadline = time.monotonic() + 60
        while row(url, poison)["status"] != "FAILED":
            assert time.monotonic() < deadline, f"poison still {row(url, poison)['status']}"
            for w in workers:
                if not w.alive():  # a supervisor restarts it (same node id)
                    assert w.proc is not None and w.proc.returncode == 17
                    deaths += 1
                    w.restart()
            time.sleep(0.1)
        try:
            wait_for(
                lambda: all(row(url, t)["status"] not in ("IDLE", "IN_PROGRESS") for t in fine),
                30,
                "the other jobs",
            )
        except AssertionError:
            raise AssertionError(
                f"{[row(url, t) for t in fine]}\n{[w.alive() for w in workers]}\n"
                + "\n".join(w.all_stderr()[-3000:] for w in workers)
            ) from None
        final = row(url, poison)
        others = [row(url, t) for t in fine]
    assert deaths == 3  # max_stale_restarts=2: the third lost run ends it
    assert (final["status"], final["stale_restarts"], final["error_type"]) == (
        "FAILED",
        3,
        "LeaseExpired",
    )
    assert "max_stale_restarts=2" in final["error_message"]
    assert len([r for r in records(tmp_path, poison) if r[0] == "start"]) == 3
    assert [(o["status"], o["error_message"]) for o in others] == [("DONE", None)] * len(fine)
    assert [(o["status"], o["error_message"]) for o in others] == [("DONE", None)] * len(fine)


def test_sigterm_during_a_hung_sync_job_is_bounded_and_keeps_the_claim(
    url: str, tmp_path: Path
) -> None:
    args = ("--lease", "30", "--heartbeat", "0.5", "--poll", "0.2", "--grace", "1")
    worker = Worker(tmp_path, url, "w1", *args)
    marker = tmp_path / "slept-once"
    with cluster([worker]):
        wait_ready([worker])
        (ticker,) = add(url, ("job_sync", {"sleep": 120, "once": str(marker)}))
        wait_for(lambda: records(tmp_path, ticker), 20, "the job to start")
        began = time.monotonic()
        code = worker.stop(timeout=15)
        took = time.monotonic() - began
        assert code == 0, f"exit {code} after {took:.1f} s:\n{worker.stderr()[-2000:]}"
        assert took < 1 + 1 + 4, f"stop took {took:.1f} s (grace 1 s + margin 1 s)"
        held = row(url, ticker)
        assert (held["status"], held["lock_holder"]) == ("IN_PROGRESS", "w1")
        assert "did not return" in worker.stderr()

        worker.restart()  # same node id: takes its rows back at once (lease is 30 s)
        wait_ready([worker])
        wait_for(lambda: row(url, ticker)["status"] == "DONE", 20, "the re-run")
        final = row(url, ticker)
    assert final["stale_restarts"] == 1
    assert [r[0] for r in records(tmp_path, ticker)] == ["start", "start", "end"]

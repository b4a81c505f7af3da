"""Fault tests: real worker processes on real databases, killed and cut off.

Each test starts ``tests/fault/worker.py`` processes (a TickerQ app in
``app.run()``, lease 3 s, heartbeat 1 s, poll 0.5 s, 32 slots) and checks
the database and the workers' execution records afterwards:

* every time ticker ended with the status its function asked for (DONE or
  DUE_DONE; FAILED for the ones that fail on purpose);
* every second of the cron window has exactly one occurrence, and it ran;
* nothing ran twice, except a run whose lease expired (its attempts show a
  ``LeaseExpired`` attempt, then the run that counted);
* runs that were in progress on a killed process ran again elsewhere.

Load (the machine has 2 cores, shared with the database and maybe another
test run): ``TICKERS`` time tickers due over ``SPREAD`` seconds (defaults
5,000 over 20 s, i.e. 250 per second; override with ``TICKERQ_FAULT_TICKERS``
and ``TICKERQ_FAULT_SPREAD``), 5 % of them sleep 2 s (so a kill finds some
running), 2 % fail on purpose, a third are sync functions (thread pool);
plus 5 crons firing every second.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fault.harness import (
    Plan,
    PrivateServer,
    Worker,
    as_time,
    check_run,
    cluster,
    create_database,
    disable_crons,
    drop_database,
    query,
    read_records,
    seed,
    snapshot,
    utcnow,
    wait_all_final,
    wait_for,
    wait_ready,
)

TICKERS = int(os.environ.get("TICKERQ_FAULT_TICKERS", "5000"))
SPREAD = float(os.environ.get("TICKERQ_FAULT_SPREAD", "20"))
DELAY = 1.0
"""Seconds from seeding to the first time ticker."""
WORKER_ARGS = ("--lease", "3", "--heartbeat", "1", "--poll", "0.5", "--concurrency", "32")
SETTLE_TIMEOUT = 60.0
"""How long the rest may take after the window ends (lease expiries included)."""


def _sleep_until(moment: datetime) -> None:
    delay = (moment - utcnow()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _problems_in_stderr(workers: list[Worker]) -> str:
    lines = []
    for w in workers:
        for line in w.all_stderr().splitlines():
            if "deliberate failure" in line:
                continue
            if any(
                word in line for word in ("ERROR", "Traceback", "CRITICAL", "Error:", "WARNING")
            ):
                lines.append(f"{w.node_id}: {line}")
    return "\n".join(lines[:40])


def _heartbeating_since(url: str, moment: datetime) -> set[str]:
    rows = query(url, "SELECT id, last_heartbeat FROM tickerq_nodes")
    return {r["id"] for r in rows if (as_time(r["last_heartbeat"]) or moment) > moment}


def _finish(
    url: str, workers: list[Worker], plan: Plan
) -> tuple[str | None, dict[str, int | None]]:
    """End of the window: disable the crons, wait for the rest, check liveness, stop."""
    _sleep_until(plan.started + timedelta(seconds=DELAY + SPREAD + 1.0))
    disable_crons(url, plan)
    stuck = wait_all_final(url, SETTLE_TIMEOUT)
    dead = [w.node_id for w in workers if not w.alive()]
    assert not dead, f"worker(s) {dead} died during the run:\n{_problems_in_stderr(workers)}"
    codes = {w.node_id: w.stop(timeout=20) for w in workers}
    return stuck, codes


def _kill_and_restart(url: str, tmp_path: Path, restart: str) -> None:
    """Three nodes; 40 % into the window node w1 gets kill -9 and is started again at once,
    as a supervisor would: with the same node id (``restart="same-node-id"``: a container
    restarted in place keeps its hostname and pid 1) or as a new node w4."""
    workers = [Worker(tmp_path, url, f"w{i}", *WORKER_ARGS) for i in (1, 2, 3)]
    started = time.monotonic()
    with cluster(workers):
        wait_ready(workers, timeout=60)
        plan = seed(url, count=TICKERS, spread=SPREAD, delay=DELAY)
        # kill -9 a node 40 % into the window, when it runs some of the 2 s jobs
        _sleep_until(plan.started + timedelta(seconds=DELAY + 0.4 * SPREAD))
        victim = workers[0]
        killed_pid = victim.kill9()
        if restart == "same-node-id":
            victim.restart()
        else:
            workers.append(Worker(tmp_path, url, "w4", *WORKER_ARGS).start())
        wait_ready(workers[-1:] if restart != "same-node-id" else [victim], timeout=60)
        live = [w for w in workers if w.alive()]
        stuck, codes = _finish(url, live, plan)
    elapsed = time.monotonic() - started
    snap = snapshot(url)
    report = check_run(
        snap, plan, read_records(tmp_path), killed_pids={killed_pid}, killed_node=victim.node_id
    )
    report.facts["elapsed_s"] = round(elapsed, 1)
    if stuck:
        report.add("stuck", stuck)
    # the database stayed up: no node may log an error (deadlock, failed heartbeat, ...)
    for line in _problems_in_stderr(workers).splitlines():
        if "ERROR" in line and "reclaimed" not in line:
            report.add("stderr", line)
    (tmp_path / "report.txt").write_text(report.text(limit=400))
    print(report.text())
    assert not report.problems, report.text()
    assert codes == {w.node_id: 0 for w in live}, f"exit codes {codes}"
    assert report.facts["interrupted_by_kill"] > 0, (
        "the kill found no job running on the victim; the takeover was not exercised"
    )


RESTARTS = pytest.mark.parametrize("restart", ["same-node-id", "new-node-id"])


@pytest.mark.fault
@pytest.mark.timeout(180)
@RESTARTS
def test_kill9_and_restart_postgresql(pg_url: str, tmp_path: Path, restart: str) -> None:
    """PostgreSQL, three nodes, one killed with -9 mid-run and started again."""
    _kill_and_restart(pg_url, tmp_path, restart)


@pytest.mark.fault
@pytest.mark.timeout(180)
@RESTARTS
def test_kill9_and_restart_sqlite(tmp_path: Path, restart: str) -> None:
    """SQLite file, three processes on one host, one killed with -9 mid-run and started again."""
    _kill_and_restart(f"sqlite:///{tmp_path / 'tickerq.db'}", tmp_path, restart)


@pytest.mark.fault
@pytest.mark.timeout(180)
def test_database_outage(private_pg: PrivateServer, tmp_path: Path) -> None:
    """PostgreSQL stops (pg_ctl stop -m fast) for 10 s mid-run: the workers live through it
    and nothing is lost. The crons use misfire RUN_ALL, so every second must still run."""
    admin = private_pg.url("postgres")
    name = create_database(admin)
    url = private_pg.url(name)
    workers = [Worker(tmp_path, url, f"w{i}", *WORKER_ARGS) for i in (1, 2, 3)]
    started = time.monotonic()
    try:
        with cluster(workers):
            wait_ready(workers, timeout=60)
            plan = seed(url, count=TICKERS, spread=SPREAD, delay=DELAY, misfire="RUN_ALL")
            _sleep_until(plan.started + timedelta(seconds=DELAY + 0.25 * SPREAD))
            down_at = utcnow()
            private_pg.stop("fast")
            time.sleep(10)
            assert all(w.alive() for w in workers), (
                "a worker died while the database was down:\n"
                + "\n".join(
                    f"{w.node_id}: exit {w.proc.returncode if w.proc else None}" for w in workers
                )
                + "\n"
                + _problems_in_stderr(workers)
            )
            private_pg.start()
            up_at = utcnow()
            # every node resumes: it heartbeats again (not just: its process is alive)
            wait_for(
                lambda: _heartbeating_since(url, up_at) >= {w.node_id for w in workers},
                20,
                "every node to heartbeat again after the outage",
            )
            stuck, codes = _finish(url, workers, plan)
        elapsed = time.monotonic() - started
        snap = snapshot(url)
        report = check_run(snap, plan, read_records(tmp_path), killed_node=None)
        report.facts["elapsed_s"] = round(elapsed, 1)
        report.facts["outage"] = f"{down_at:%H:%M:%S}-{up_at:%H:%M:%S}"
        if stuck:
            report.add("stuck", stuck)
        (tmp_path / "report.txt").write_text(report.text(limit=400))
        print(report.text())
        assert not report.problems, report.text() + "\n" + _problems_in_stderr(workers)
        assert codes == {w.node_id: 0 for w in workers}, f"exit codes {codes}"
    finally:
        if private_pg.running():
            drop_database(admin, name)


@pytest.mark.fault
@pytest.mark.timeout(120)
@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_concurrent_start_seeds_each_cron_once(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Five processes start at once on a fresh database with the same decorated crons:
    one cron ticker per function, schema created once, no errors anywhere."""
    url = (
        request.getfixturevalue("pg_url")
        if store == "postgresql"
        else f"sqlite:///{tmp_path / 'tickerq.db'}"
    )
    decorated = 5
    start_at = str(time.time() + 3.0)  # after every process has imported tickerq
    crons_args = ("--decorated-crons", str(decorated), "--start-at", start_at)
    workers = [Worker(tmp_path, url, f"s{i}", *WORKER_ARGS, *crons_args) for i in range(5)]
    with cluster(workers):  # all five open the fresh database in the same instant
        wait_ready(workers, timeout=60)
        time.sleep(3.0)  # let the every-second crons fire a few times on five nodes
        codes = {w.node_id: w.stop(timeout=20) for w in workers}
    crons = query(url, "SELECT function, expression FROM tickerq_cron_tickers")
    by_function: dict[str, int] = {}
    for row in crons:
        by_function[row["function"]] = by_function.get(row["function"], 0) + 1
    assert by_function == {f"seeded_{i}": 1 for i in range(decorated)}, crons
    assert codes == {w.node_id: 0 for w in workers}, f"exit codes {codes}\n" + "\n".join(
        w.all_stderr() for w in workers
    )
    stderr = {w.node_id: w.stderr() for w in workers}
    assert all(not text.strip() for text in stderr.values()), stderr
    # the every-second cron ran, each fire once across the five nodes
    occurrences = query(
        url,
        "SELECT t.id, t.fire_time, t.status FROM tickerq_tickers t "
        "JOIN tickerq_cron_tickers c ON c.id = t.cron_ticker_id WHERE c.function = 'seeded_0'",
    )
    assert occurrences, "the every-second cron never fired"
    records = read_records(tmp_path)
    runs: dict[str, int] = {}
    for e in records:
        if e.event == "start" and e.function == "seeded_0":
            runs[str(e.ticker)] = runs.get(str(e.ticker), 0) + 1
    assert all(n == 1 for n in runs.values()), {k: n for k, n in runs.items() if n > 1}
    assert not [o for o in occurrences if o["status"] not in ("DONE", "DUE_DONE", "IDLE")]

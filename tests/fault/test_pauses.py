"""Pauses across processes: three worker processes obey a pause stored by a fourth.

Three ``tests/fault/worker.py`` nodes (poll 0.5 s) run a steady stream of time
tickers (``job`` and ``job_sync``, 60 a second for 14 s). From the test process:
``job`` is paused for 3 s, then the whole cluster for 3 s. Measured from the
database (each attempt's ``started_at`` is the claim's time on its node, the
pause's ``paused_at`` the time just before it was stored):

* no run of a paused function starts after ``pause()`` returned (each claim reads
  the pauses in its own transaction), while the others go on (the function
  pause) or nothing starts (the cluster's);
* after each resume the held-back work starts again within 1 s;
* every ticker ends as its function says, each with one attempt: waiting out a
  pause uses no attempt.

The measured lags are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fault.harness import (
    WORKER,
    Worker,
    as_time,
    cluster,
    query,
    seed,
    utcnow,
    wait_all_final,
    wait_ready,
)

WORKER_ARGS = ("--lease", "3", "--heartbeat", "1", "--poll", "0.5", "--concurrency", "16")
TICKERS, SPREAD, DELAY = 840, 14.0, 1.0
LIMIT = 1.0
"""Seconds within which every node starts the held-back work after a resume."""

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]


def _admin(url: str, action: Callable[[Any], Coroutine[Any, Any, Any]]) -> tuple[Any, datetime]:
    """Run ``action(app)`` on an app of the test process (another node: it runs
    nothing); what it returned and the time it returned."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from worker import build_app
    finally:
        sys.path.remove(str(WORKER.parent))

    async def go() -> tuple[Any, datetime]:
        app = build_app(url, node_id="admin", records=None)
        await app.open()
        try:
            return await action(app), utcnow()
        finally:
            await app.stop()

    return asyncio.run(go())


def _sleep_until(moment: datetime) -> None:
    delay = (moment - utcnow()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _starts(url: str) -> list[tuple[datetime, str]]:
    rows = query(
        url,
        "SELECT a.started_at, t.function FROM tickerq_attempts a "
        "JOIN tickerq_tickers t ON t.id = a.ticker_id",
    )
    out = []
    for r in rows:
        started = as_time(r["started_at"])
        assert started is not None
        out.append((started, r["function"]))
    return sorted(out)


def _check_window(
    starts: list[tuple[datetime, str]],
    paused_at: datetime,
    stored_at: datetime,
    resumed_at: datetime,
    paused: Callable[[str], bool],
    what: str,
) -> tuple[float, float]:
    """The last start of a paused function after the pause began (seconds after
    it; 0 if none: none may start after ``pause()`` returned, at ``stored_at``) and
    the first start of one after the resume (seconds after it)."""
    during = [(t, f) for t, f in starts if paused_at <= t < resumed_at and paused(f)]
    late = max(((t - paused_at).total_seconds() for t, _ in during), default=0.0)
    after_stored = [t for t, _ in during if t > stored_at]
    assert not after_stored, (
        f"{what}: a paused function started {(after_stored[-1] - stored_at).total_seconds():.3f}"
        " s after pause() returned"
    )
    after = [t for t, f in starts if t >= resumed_at and paused(f)]
    assert after, f"{what}: nothing started after the resume"
    restart = (after[0] - resumed_at).total_seconds()
    assert restart <= LIMIT, f"{what}: work started again {restart:.3f} s after the resume"
    return late, restart


def _run(url: str, tmp_path: Path) -> None:
    workers = [Worker(tmp_path, url, f"w{i}", *WORKER_ARGS) for i in (1, 2, 3)]
    with cluster(workers):
        wait_ready(workers, timeout=60)
        plan = seed(url, count=TICKERS, spread=SPREAD, delay=DELAY, crons=0)
        begin = plan.started + timedelta(seconds=DELAY)

        _sleep_until(begin + timedelta(seconds=2))
        fn_pause, fn_stored_at = _admin(url, lambda app: app.pauses.pause("job", by="test"))
        _sleep_until(begin + timedelta(seconds=5))
        fn_resumed_at = utcnow()
        assert _admin(url, lambda app: app.pauses.resume("job"))[0] is True

        _sleep_until(begin + timedelta(seconds=7))
        cluster_pause, cluster_stored_at = _admin(
            url, lambda app: app.pauses.pause_cluster(by="test")
        )
        _sleep_until(begin + timedelta(seconds=10))
        cluster_resumed_at = utcnow()
        assert _admin(url, lambda app: app.pauses.resume_cluster())[0] is True

        stuck = wait_all_final(url, timeout=90)
        assert stuck is None, stuck
        dead = [w.node_id for w in workers if not w.alive()]
        assert not dead, f"worker(s) {dead} died"

    starts = _starts(url)
    fn = _check_window(
        starts, fn_pause.paused_at, fn_stored_at, fn_resumed_at, lambda f: f == "job", "job"
    )
    held_from = fn_stored_at
    meanwhile = {f for t, f in starts if held_from < t < fn_resumed_at}
    assert meanwhile == {"job_sync"}, f"while job was paused, started: {meanwhile}"
    whole = _check_window(
        starts,
        cluster_pause.paused_at,
        cluster_stored_at,
        cluster_resumed_at,
        lambda f: True,
        "cluster",
    )
    rows = query(url, "SELECT id, function, status, retry_count FROM tickerq_tickers")
    assert len(rows) == TICKERS
    attempts = query(
        url, "SELECT ticker_id, count(*) AS n FROM tickerq_attempts GROUP BY ticker_id"
    )
    assert {r["n"] for r in attempts} == {1}, "a row waited out a pause and used an attempt"
    assert {r["retry_count"] for r in rows} == {0}
    expected = {"DONE", "DUE_DONE", "FAILED"}
    assert {r["status"] for r in rows} <= expected
    print(
        f"\n{url.partition(':')[0]}: last start of a paused function {fn[0]:.3f} s after its "
        f"pause, {whole[0]:.3f} s after the cluster's; work started again "
        f"{fn[1]:.3f} s / {whole[1]:.3f} s after the resumes"
    )


def test_a_pause_holds_on_every_sqlite_process(tmp_path: Path) -> None:
    _run(f"sqlite:///{tmp_path}/pauses.db", tmp_path)


def test_a_pause_holds_on_every_postgresql_node(tmp_path: Path, pg_url: str) -> None:
    _run(pg_url, tmp_path)

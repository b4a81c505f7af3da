"""Rate limits and per-key concurrency hold across real worker processes (issue 12).

Three ``tests/fault/worker.py`` nodes share one database (PostgreSQL, or one
SQLite file); one is killed with ``kill -9`` while it runs limited jobs. The
checks read what the database recorded, as an operator would: every attempt's
start (the claim's time, what the limit counts) and end.

* rate limit ``RATE`` on ``limited``: no window of its period holds more starts
  than its limit, lost runs and their re-runs included;
* ``keyed`` (``max_per_key=1``): the attempts of one key never overlap; a run
  lost with the killed node holds its key until its lease ran out;
* every ticker ends DONE, each with one successful run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fault.harness import (
    WORKER,
    Worker,
    as_time,
    cluster,
    query,
    wait_all_final,
    wait_for,
    wait_ready,
)

RATE = "8/s"
LIMIT, PER = 8, timedelta(seconds=1)
LIMITED = 48
KEYS, PER_KEY = 4, 6
SLEEP = 0.3
KEYED_SLEEP = 0.8
CLOCK_SLACK = timedelta(milliseconds=100)
"""How far two nodes' readings of one key's consecutive runs may cross (see below)."""
WORKER_ARGS = ("--lease", "3", "--heartbeat", "1", "--poll", "0.5", "--concurrency", "8")


@dataclass(frozen=True)
class Flow:
    """One configuration of the cluster run."""

    rate: str
    limit: int
    per: timedelta
    limited: int
    sleep: float
    keys: int
    per_key: int
    keyed_runs: int
    keyed_sleep: float
    concurrency: int


SMALL = Flow(RATE, LIMIT, PER, LIMITED, SLEEP, KEYS, PER_KEY, KEYS * PER_KEY, KEYED_SLEEP, 8)
"""Limits that bind all the time (one run per key; a rate of 8/s)."""

AHEAD = Flow("60/s", 60, timedelta(seconds=1), 300, 0.05, 1, 10, 90, 0.3, 4)
"""Limits with room to hold ahead on PostgreSQL (see tickerq.stores.sql.prepaid):
one node may lease room for its 4 slots of the 10 runs per key, and a node may
reserve starts while a second holds at most 30; 3 nodes of 4 slots make both
bind, now and then."""


def _seed(url: str, flow: Flow) -> None:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from worker import build_app
    finally:
        sys.path.remove(str(WORKER.parent))

    async def go() -> None:
        app = build_app(
            url, node_id="seeder", records=None, flow_rate=flow.rate, flow_per_key=flow.per_key
        )
        await app.open()
        try:
            for _ in range(flow.limited):
                await app.time_tickers.add("limited", request={"sleep": flow.sleep})
            for n in range(flow.keyed_runs):
                await app.time_tickers.add(
                    "keyed", request={"key": f"k{n % flow.keys}", "sleep": flow.keyed_sleep}
                )
        finally:
            await app.stop()

    asyncio.run(go())


def _run(url: str, tmp_path: Path, flow: Flow = SMALL) -> tuple[list[dict[str, object]], int]:
    args = ("--flow-rate", flow.rate, "--flow-per-key", str(flow.per_key), *WORKER_ARGS)
    args = (*args, "--concurrency", str(flow.concurrency))
    workers = [Worker(tmp_path, url, f"w{i}", *args) for i in (1, 2, 3)]
    with cluster(workers):
        wait_ready(workers, timeout=60)
        _seed(url, flow)
        # kill w1 while it runs jobs (its runs are lost with it: a key must stay held
        # until its lease ran out); whichever node took the keyed jobs, w1 runs some
        wait_for(
            lambda: query(
                url,
                "SELECT count(*) AS n FROM tickerq_tickers "
                "WHERE status = 'IN_PROGRESS' AND lock_holder = 'w1'",
            )[0]["n"],
            timeout=60,
            what="w1 to run a job",
            interval=0.05,
        )
        workers[0].kill9()
        leases = 0  # the most rows of room held ahead under the per-key limit seen
        for _ in range(20):
            found = query(url, "SELECT count(*) AS n FROM tickerq_key_leases")[0]["n"]
            leases = max(leases, int(str(found)))
            time.sleep(0.05)
        stuck = wait_all_final(url, timeout=90)
        for w in workers[1:]:
            w.stop(timeout=20)
    assert stuck is None, stuck
    rows = query(
        url,
        "SELECT t.id, t.function, t.status, t.concurrency_key, a.status AS attempt, "
        "a.started_at, a.finished_at, a.node FROM tickerq_tickers t "
        "JOIN tickerq_attempts a ON a.ticker_id = t.id",
    )
    _check(rows, flow)
    return rows, leases


def _check(rows: list[dict[str, object]], flow: Flow) -> None:
    tickers = {(r["id"], r["function"], r["status"]) for r in rows}
    assert Counter(f for _, f, _ in tickers) == {"limited": flow.limited, "keyed": flow.keyed_runs}
    assert {s for _, _, s in tickers} <= {"DONE", "DUE_DONE"}, Counter(s for _, _, s in tickers)
    ok = Counter(r["id"] for r in rows if r["attempt"] in ("DONE", "DUE_DONE"))
    assert set(ok.values()) == {1}, "a ticker ran to success more than once"
    # The kill lost runs: they show as attempts that did not succeed, run again.
    lost = [r for r in rows if r["attempt"] not in ("DONE", "DUE_DONE")]
    assert lost, "the kill found no run to lose: the takeover was not exercised"

    starts = sorted(_time(r["started_at"]) for r in rows if r["function"] == "limited")
    for i, end in enumerate(starts):
        window = [s for s in starts[: i + 1] if s > end - flow.per]
        assert len(window) <= flow.limit, (
            f"{len(window)} starts of 'limited' in the {flow.per.total_seconds():g} s up to {end}"
        )

    by_key: dict[object, list[tuple[datetime, datetime]]] = defaultdict(list)
    for r in rows:
        if r["function"] == "keyed":
            by_key[r["concurrency_key"]].append((_time(r["started_at"]), _time(r["finished_at"])))
    assert sorted(by_key) == [f"k{k}" for k in range(flow.keys)]
    for key, runs in by_key.items():
        # second_start is the claim's clock reading, taken before it waited for the
        # limit's lock; an end is read before that run's end was written: the order
        # of the commits holds, the readings may cross by that wait. Runs truly at
        # once overlap by most of a run (keyed_sleep).
        events = sorted(
            [(start + CLOCK_SLACK, 1) for start, _ in runs] + [(end, -1) for _, end in runs]
        )
        at_once = most = 0
        for _, change in events:  # at one instant, ends go first
            at_once += change
            most = max(most, at_once)
        assert most <= flow.per_key, f"{most} runs of key {key} at once: {sorted(runs)}"


def _time(value: object) -> datetime:
    moment = as_time(value)
    assert moment is not None
    return moment


@pytest.mark.fault
@pytest.mark.timeout(180)
def test_limits_hold_across_nodes_postgresql(pg_url: str, tmp_path: Path) -> None:
    _run(pg_url, tmp_path)


@pytest.mark.fault
@pytest.mark.timeout(180)
def test_limits_hold_across_nodes_sqlite(tmp_path: Path) -> None:
    _run(f"sqlite:///{tmp_path / 'tickerq.db'}", tmp_path)


@pytest.mark.fault
@pytest.mark.timeout(180)
def test_limits_with_room_held_ahead_hold_across_nodes_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    """Limits loose enough for nodes to hold room ahead (rate reserves, per-key
    leases), tight enough to bind at times: the same checks, one node killed."""
    rows, leases = _run(pg_url, tmp_path, AHEAD)
    keyed = Counter(r["concurrency_key"] for r in rows if r["function"] == "keyed")
    assert keyed == {"k0": keyed["k0"]} and keyed["k0"] >= AHEAD.keyed_runs
    assert leases >= 1, "no node held room ahead under the per-key limit"

"""Unique keys hold across real worker processes (issue 12, part 3).

Three ``tests/fault/worker.py`` nodes share one database (PostgreSQL, or one
SQLite file). Each enqueues ``uniq`` jobs with a handful of keys as fast as it
can, "keep" or "replace" at random, now or a moment later, while all three run
them (three at once with one key, so that they race); one node is killed with
``kill -9`` while it runs one (its enqueues stop with it). A watcher reads the database all along, as an operator would. Checks:

* never two tickers holding one key (waiting or running), never two runs of one
  key at once (``request["key"]``: a ticker chained behind a running one has the
  key, the one running gave it up), in the watcher's reads and in the attempts
  the database recorded (a run lost with the killed node ends when its lease
  ran out, and its re-run starts after that);
* every enqueue stored at most one ticker: the rows of the table are those the
  enqueuers were told ADDED or CHAINED (plus at most those the killed node was
  adding), and each KEPT or REPLACED names a ticker of that key;
* every ticker ends DONE, with one successful run.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fault.harness import (
    Worker,
    as_time,
    as_uuid,
    cluster,
    query,
    wait_all_final,
    wait_for,
    wait_ready,
)

KEYS = 5
BURST = 3
"""Enqueues a node makes at once (worker.py): the killed node may have had so many under way."""
ENQUEUE_SECONDS = 8.0
WORKER_ARGS = (
    "--lease", "3", "--heartbeat", "1", "--poll", "0.5", "--concurrency", "8",
    "--unique-keys", str(KEYS), "--enqueue-seconds", str(ENQUEUE_SECONDS),
)  # fmt: skip
HOLDING = "('IDLE', 'QUEUED', 'IN_PROGRESS')"


def _key_sql(url: str) -> str:
    """The request's key as SQL text, per dialect."""
    return "request->>'key'" if url.startswith("postgresql") else "json_extract(request, '$.key')"


class Watcher(threading.Thread):
    """Reads the database every few milliseconds until stopped; keeps what broke the
    promise: two holders of a key, or two running tickers of a key."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.reads = 0
        self.busy_keys: set[str] = set()

    def run(self) -> None:
        holders = (
            "SELECT function, unique_key, count(*) AS n FROM tickerq_tickers "
            f"WHERE unique_key IS NOT NULL AND status IN {HOLDING} "
            "GROUP BY function, unique_key HAVING count(*) > 1"
        )
        running = (
            f"SELECT {_key_sql(self.url)} AS k, count(*) AS n FROM tickerq_tickers "
            "WHERE function = 'uniq' AND status = 'IN_PROGRESS' GROUP BY k"
        )
        while not self.stop.is_set():
            try:
                doubled = query(self.url, holders)
                busy = query(self.url, running)
            except Exception as exc:  # the database is busy: read again
                if "locked" not in str(exc):
                    self.problems.append(f"watcher read failed: {exc!r}")
                time.sleep(0.01)
                continue
            self.reads += 1
            self.problems.extend(f"two holders at once: {r}" for r in doubled)
            self.problems.extend(f"two runs of a key at once: {r}" for r in busy if r["n"] > 1)
            self.busy_keys.update(str(r["k"]) for r in busy)
            time.sleep(0.005)


def _outcomes(directory: Path) -> tuple[list[list[str]], int]:
    """Every enqueue's line (key, on_conflict, outcome, id), and how many loops ended."""
    lines: list[list[str]] = []
    finished = 0
    for path in sorted((directory / "records").glob("*.enq")):
        for line in path.read_text().splitlines():
            if line == "done":
                finished += 1
            elif line:
                lines.append(line.split(maxsplit=3))
    return lines, finished


def _run(url: str, tmp_path: Path) -> None:
    workers = [Worker(tmp_path, url, f"w{i}", *WORKER_ARGS) for i in (1, 2, 3)]
    watcher = Watcher(url)
    with cluster(workers):
        wait_ready(workers, timeout=60)
        watcher.start()
        try:
            wait_for(
                lambda: query(
                    url,
                    "SELECT count(*) AS n FROM tickerq_tickers "
                    "WHERE function = 'uniq' AND status = 'IN_PROGRESS' AND lock_holder = 'w1'",
                )[0]["n"],
                timeout=60,
                what="w1 to run a uniq job",
                interval=0.05,
            )
            workers[0].kill9()
            wait_for(
                lambda: _outcomes(tmp_path)[1] >= 2,
                timeout=ENQUEUE_SECONDS + 30,
                what="the live nodes to end their enqueues",
            )
            stuck = wait_all_final(url, timeout=90)
        finally:
            watcher.stop.set()
            watcher.join(10)
        for w in workers[1:]:
            w.stop(timeout=20)
    assert stuck is None, stuck
    assert watcher.reads > 20, f"the watcher read the database only {watcher.reads} times"
    assert watcher.problems == [], watcher.problems[:10]
    assert len(watcher.busy_keys) > 1, "jobs of several keys should have run while watched"
    _check(url, tmp_path)


def _check(url: str, tmp_path: Path) -> None:
    lines, _ = _outcomes(tmp_path)
    errors = [" ".join(line) for line in lines if line[2] == "ERROR"]
    assert errors == [], f"{len(errors)} enqueue(s) raised: {errors[:5]}"
    rows = {
        as_uuid(r["id"]): r
        for r in query(
            url,
            f"SELECT id, status, unique_key, parent_id, {_key_sql(url)} AS k "
            "FROM tickerq_tickers WHERE function = 'uniq'",
        )
    }
    said = Counter(outcome for _, _, outcome, _ in lines)
    assert said["KEPT"] and said["REPLACED"] and said["ADDED"], said  # every path was taken
    made = [uuid.UUID(i) for _, _, outcome, i in lines if outcome in ("ADDED", "CHAINED")]
    assert len(made) == len(set(made)), "an enqueue was told ADDED for a ticker that existed"
    unknown = set(made) - rows.keys()
    assert not unknown, f"tickers the enqueuers were told were stored are missing: {unknown}"
    extra = rows.keys() - set(made)
    assert len(extra) <= BURST, (
        f"rows no enqueue was told about (beyond the killed node's): {extra}"
    )
    for key, _, outcome, i in lines:
        row = rows.get(uuid.UUID(i))
        assert row is not None and row["k"] == key, f"{outcome} {i} for {key}: {row}"
        if outcome == "CHAINED":
            assert row["parent_id"] is not None, f"chained ticker {i} has no parent"
    statuses = Counter(r["status"] for r in rows.values())
    assert set(statuses) <= {"DONE", "DUE_DONE"}, statuses

    attempts = query(
        url,
        f"SELECT a.ticker_id, a.status, a.started_at, a.finished_at, {_key_sql(url)} AS k "
        "FROM tickerq_attempts a JOIN tickerq_tickers t ON t.id = a.ticker_id "
        "WHERE t.function = 'uniq'",
    )
    ok = Counter(as_uuid(a["ticker_id"]) for a in attempts if a["status"] in ("DONE", "DUE_DONE"))
    assert set(ok) == rows.keys() and set(ok.values()) == {1}, "each ticker ran to success once"
    lost = [a for a in attempts if a["status"] not in ("DONE", "DUE_DONE")]
    assert lost, "the kill found no run to lose: the takeover was not exercised"
    runs: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for a in attempts:
        runs[a["k"]].append((_time(a["started_at"]), _time(a["finished_at"])))
    assert len(runs) == KEYS
    for key, spans in runs.items():
        spans.sort()
        for (_, first_end), (second_start, _) in itertools.pairwise(spans):
            assert second_start >= first_end, f"two runs of key {key} overlapped: {spans}"


def _time(value: Any) -> datetime:
    moment = as_time(value)
    assert moment is not None
    return moment


@pytest.mark.fault
@pytest.mark.timeout(240)
def test_unique_keys_hold_across_nodes_postgresql(pg_url: str, tmp_path: Path) -> None:
    _run(pg_url, tmp_path)


@pytest.mark.fault
@pytest.mark.timeout(240)
def test_unique_keys_hold_across_nodes_sqlite(tmp_path: Path) -> None:
    _run(f"sqlite:///{tmp_path / 'tickerq.db'}", tmp_path)

"""Helpers of the fault tests: worker processes, databases, and the final checks.

Imported by the tests as ``fault.harness`` (``tests`` is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).resolve().parents[2]

POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)

FINAL = {"DONE", "DUE_DONE", "FAILED", "CANCELLED", "SKIPPED"}
SUCCESS = {"DONE", "DUE_DONE"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- worker processes ------------------------------------------------------------------


class Worker:
    """One ``tests/fault/worker.py`` process, its output in files."""

    def __init__(self, directory: Path, store: str, node_id: str, *args: str) -> None:
        self.directory = directory
        self.store = store
        self.node_id = node_id
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.history: list[tuple[int, str, int | None]] = []
        """(pid, stderr path, exit code) of the processes before the current one."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _paths(self) -> tuple[Path, Path]:
        stem = f"{self.node_id}.{self.generation}"
        return self.directory / f"{stem}.out", self.directory / f"{stem}.err"

    def start(self) -> Worker:
        out, err = self._paths()
        cmd = [
            sys.executable,
            str(WORKER),
            "--store",
            self.store,
            "--node-id",
            self.node_id,
            "--records",
            str(self.directory / "records"),
            *self.args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            self.proc = subprocess.Popen(
                cmd, stdout=stdout, stderr=stderr, cwd=REPO, env=env, start_new_session=True
            )
        return self

    def ready(self) -> bool:
        out, _ = self._paths()
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker {self.node_id} exited with {self.proc.returncode} before it was ready:\n"
                + self.stderr()[-3000:]
            )
        return out.exists() and b"READY" in out.read_bytes()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout(self) -> str:
        return self._paths()[0].read_text(errors="replace")

    def stderr(self) -> str:
        return self._paths()[1].read_text(errors="replace")

    def all_stderr(self) -> str:
        texts = []
        for generation in range(self.generation + 1):
            path = self.directory / f"{self.node_id}.{generation}.err"
            if path.exists():
                texts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(texts)

    def kill9(self) -> int:
        """kill -9; returns the dead process's pid."""
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.history.append((pid, str(self._paths()[1]), self.proc.returncode))
        return pid

    def restart(self) -> Worker:
        """Start the same command again (same node id)."""
        assert self.proc is not None and self.proc.poll() is not None
        self.generation += 1
        return self.start()

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; None if it did not exit in time (then it is killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def force_kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def cluster(workers: Sequence[Worker]) -> Iterator[Sequence[Worker]]:
    """Start ``workers``; kill whatever is still running on the way out."""
    try:
        for w in workers:
            w.start()
        yield workers
    finally:
        for w in workers:
            w.force_kill()


def wait_ready(workers: Sequence[Worker], timeout: float = 30.0) -> None:
    wait_for(lambda: all(w.ready() for w in workers), timeout, "the workers to start")


# -- databases ---------------------------------------------------------------------------


def server_dsn(database: str, base: str = POSTGRESQL_URL) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(base).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def _admin(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, timeout=5)


def postgres_reachable_or_skip() -> None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(server_dsn("postgres"), timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {server_dsn('postgres')} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def create_database(admin_dsn: str) -> str:
    name = f"tickerq_fault_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await _admin(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    async def drop() -> None:
        conn = await _admin(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def query(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts, read directly with the driver (not through tickerq)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    async def fetch() -> list[dict[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def as_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- the run: seeding and snapshot -----------------------------------------------------------


@dataclass
class Plan:
    """What the test put in the database."""

    started: datetime
    tickers: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    """Time ticker id -> its request."""
    crons: dict[uuid.UUID, datetime] = field(default_factory=dict)
    """Cron ticker id -> its first fire."""
    crons_disabled_at: datetime | None = None


def job_request(i: int) -> tuple[str, dict[str, Any]]:
    """Function and request of the i-th time ticker: mostly short, some long, some failing."""
    function = "job_sync" if i % 3 == 0 else "job"
    if i % 50 == 7:
        return function, {"sleep": 0.01, "fail": True}
    if i % 20 == 0:
        return function, {"sleep": 2.0}
    return function, {"sleep": 0.02}


def seed(
    url: str,
    *,
    count: int,
    spread: float,
    delay: float = 1.0,
    crons: int = 5,
    cron_expression: str = "* * * * * *",
    misfire: str = "RUN_ONCE",
) -> Plan:
    """Add ``count`` time tickers due from now+delay over ``spread`` s, and the crons."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from worker import TICK_FUNCTIONS, build_app
    finally:
        sys.path.remove(str(WORKER.parent))
    from tickerq import MisfirePolicy, TimeTickerSpec

    async def go() -> Plan:
        app = build_app(url, node_id="seeder", records=None)
        await app.open()
        try:
            now = utcnow()
            plan = Plan(started=now)
            specs = []
            for i in range(count):
                function, request = job_request(i)
                at = now + timedelta(seconds=delay + spread * i / count)
                specs.append(TimeTickerSpec(function=function, request=request, execution_time=at))
            for chunk in range(0, len(specs), 1000):
                added = await app.time_tickers.add_many(specs[chunk : chunk + 1000])
                for t in added:
                    plan.tickers[t.id] = t.request
            for i in range(crons):
                cron = await app.cron_tickers.add(
                    TICK_FUNCTIONS[i], cron_expression, misfire=MisfirePolicy(misfire)
                )
                assert cron.next_fire_at is not None
                plan.crons[cron.id] = cron.next_fire_at
            return plan
        finally:
            await app.stop()

    return asyncio.run(go())


def disable_crons(url: str, plan: Plan) -> None:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from worker import build_app
    finally:
        sys.path.remove(str(WORKER.parent))

    async def go() -> None:
        app = build_app(url, node_id="seeder", records=None)
        await app.open()
        try:
            plan.crons_disabled_at = utcnow()
            for cron_id in plan.crons:
                await app.cron_tickers.disable(cron_id)
        finally:
            await app.stop()

    asyncio.run(go())


@dataclass
class Snapshot:
    tickers: dict[uuid.UUID, dict[str, Any]]
    attempts: dict[uuid.UUID, list[dict[str, Any]]]
    cron_tickers: dict[uuid.UUID, dict[str, Any]]

    def unfinished(self) -> list[dict[str, Any]]:
        return [t for t in self.tickers.values() if t["status"] not in FINAL]


def snapshot(url: str) -> Snapshot:
    tickers = {}
    for r in query(
        url,
        "SELECT id, kind, function, status, retry_count, fire_time, execution_time, "
        "cron_ticker_id, lock_holder, lease_until, error_type, error_message "
        "FROM tickerq_tickers",
    ):
        r["id"] = as_uuid(r["id"])
        r["cron_ticker_id"] = as_uuid(r["cron_ticker_id"]) if r["cron_ticker_id"] else None
        r["fire_time"] = as_time(r["fire_time"])
        r["lease_until"] = as_time(r["lease_until"])
        tickers[r["id"]] = r
    attempts: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for r in query(
        url,
        "SELECT id, ticker_id, number, node, status, started_at, finished_at, error_type "
        "FROM tickerq_attempts ORDER BY started_at, id",
    ):
        r["ticker_id"] = as_uuid(r["ticker_id"])
        r["started_at"] = as_time(r["started_at"])
        attempts[r["ticker_id"]].append(r)
    crons = {}
    for r in query(url, "SELECT id, function, enabled, next_fire_at FROM tickerq_cron_tickers"):
        r["id"] = as_uuid(r["id"])
        r["next_fire_at"] = as_time(r["next_fire_at"])
        crons[r["id"]] = r
    return Snapshot(tickers, dict(attempts), crons)


def wait_all_final(url: str, timeout: float, stall: float = 12.0) -> str | None:
    """Wait until no row is waiting or running. Give up after ``timeout`` s, or when the
    rows left have not changed for ``stall`` s (several leases: nothing will move them);
    then say which rows are stuck (the final checks report each of them)."""
    deadline = time.monotonic() + timeout
    last: set[tuple[Any, Any, Any]] = set()
    changed = time.monotonic()
    while True:
        left = snapshot(url).unfinished()
        if not left:
            return None
        now = time.monotonic()
        current = {(t["id"], t["status"], t["lock_holder"]) for t in left}
        if current != last:
            last, changed = current, now
        if now > deadline or now - changed > stall:
            by_status = Counter((t["status"], t["lock_holder"]) for t in left)
            why = f"after {timeout:.0f} s" if now > deadline else f"unchanged for {stall:.0f} s"
            return (
                f"{len(left)} row(s) still not final ({why}): "
                f"(status, lock_holder) counts {dict(by_status)}"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class Execution:
    event: str
    ticker: uuid.UUID
    retry: int
    node: str
    pid: int
    function: str
    scheduled: str


def read_records(directory: Path) -> list[Execution]:
    out = []
    for path in sorted((directory / "records").glob("*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            out.append(
                Execution(
                    parts[0],
                    uuid.UUID(parts[1]),
                    int(parts[2]),
                    parts[3],
                    int(parts[4]),
                    parts[5],
                    parts[6],
                )
            )
    return out


# -- the checks ------------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.problems.append(f"[{kind}] {detail}")

    def text(self, limit: int = 40) -> str:
        lines = [f"{len(self.problems)} problem(s); facts: {self.facts}"]
        kinds = Counter(p.split("]", 1)[0] + "]" for p in self.problems)
        lines.append(f"by kind: {dict(kinds)}")
        lines += self.problems[:limit]
        return "\n".join(lines)


def check_run(
    snap: Snapshot,
    plan: Plan,
    records: list[Execution],
    *,
    killed_pids: Collection[int] = (),
    killed_node: str | None = None,
) -> Report:
    """Everything final, every cron second once, nothing run twice unless its lease expired.

    ``killed_pids``: processes killed with -9 (their unfinished runs must have run again);
    ``killed_node``: the node id they ran as (LeaseExpired attempts are allowed only on it;
    None: allowed on any node, as after a database outage).
    """
    report = Report()
    _check_time_tickers(report, snap, plan)
    _check_crons(report, snap, plan)
    starts: dict[uuid.UUID, list[Execution]] = defaultdict(list)
    ended: dict[uuid.UUID, set[tuple[int, int]]] = defaultdict(set)
    for e in records:
        if e.event == "start":
            starts[e.ticker].append(e)
        else:
            ended[e.ticker].add((e.pid, e.retry))
    runnable = set(plan.tickers) | {
        r["id"] for r in snap.tickers.values() if r["kind"] == "CRON_OCCURRENCE"
    }
    interrupted = rerun = 0
    for tid in runnable:
        runs = starts.get(tid, [])
        tries = snap.attempts.get(tid, [])
        row = snap.tickers.get(tid)
        _check_executions(report, tid, row, runs, tries, killed_node)
        cut = _check_takeover(report, tid, row, runs, tries, ended[tid], killed_pids)
        interrupted += cut
        if len(runs) > 1 and any(a["error_type"] == "LeaseExpired" for a in tries):
            rerun += 1
    report.facts["interrupted_by_kill"] = interrupted
    report.facts["rerun_after_lease_expiry"] = rerun
    report.facts["executions"] = sum(len(v) for v in starts.values())
    return report


def _check_time_tickers(report: Report, snap: Snapshot, plan: Plan) -> None:
    """Every time ticker is final, with the status its function asked for."""
    statuses: Counter[str] = Counter()
    for tid, request in plan.tickers.items():
        row = snap.tickers.get(tid)
        if row is None:
            report.add("lost", f"time ticker {tid} is gone from the database")
            continue
        statuses[row["status"]] += 1
        want = {"FAILED"} if request.get("fail") else SUCCESS
        if row["status"] not in want:
            report.add(
                "status",
                f"time ticker {tid} ({row['function']}, {request}) is {row['status']}, "
                f"expected {'/'.join(sorted(want))}; lock_holder={row['lock_holder']} "
                f"error={row['error_type']}: {row['error_message']}",
            )
    report.facts["time_ticker_statuses"] = dict(statuses)


def _check_crons(report: Report, snap: Snapshot, plan: Plan) -> None:
    """Each second from a cron's first fire until it was disabled has exactly one
    occurrence, which succeeded. The last seconds before the disable may race with it
    (a node that read the cron before it was disabled), so the window ends 1 s earlier."""
    disabled = plan.crons_disabled_at
    assert disabled is not None, "disable the crons before checking"
    until = disabled - timedelta(seconds=1)
    occurrences: dict[uuid.UUID, dict[datetime, dict[str, Any]]] = defaultdict(dict)
    for row in snap.tickers.values():
        if row["kind"] == "CRON_OCCURRENCE":
            cron_id = row["cron_ticker_id"]
            if row["fire_time"] in occurrences[cron_id]:
                report.add(
                    "cron-double", f"cron {cron_id} has two occurrences at {row['fire_time']}"
                )
            occurrences[cron_id][row["fire_time"]] = row
    total = 0
    for cron_id, first in plan.crons.items():
        got = occurrences.get(cron_id, {})
        total += len(got)
        expected = []
        second = first
        while second <= until:
            expected.append(second)
            second += timedelta(seconds=1)
        missing = [s for s in expected if s not in got]
        if missing:
            report.add(
                "cron-missing",
                f"cron {cron_id}: {len(missing)} of {len(expected)} seconds in "
                f"[{first:%H:%M:%S}, {until:%H:%M:%S}] have no occurrence: "
                + ", ".join(f"{s:%H:%M:%S}" for s in missing[:20]),
            )
        odd = [s for s in got if s < first or s > disabled + timedelta(seconds=1)]
        if odd:
            report.add("cron-outside", f"cron {cron_id} fired outside its window: {odd}")
        for fire, row in sorted(got.items()):
            if row["status"] not in SUCCESS:
                report.add(
                    "status",
                    f"occurrence {row['id']} of cron {cron_id} at {fire:%H:%M:%S} is "
                    f"{row['status']} ({row['error_type']}: {row['error_message']})",
                )
    report.facts["cron_occurrences"] = total


def _attempts_text(tries: list[dict[str, Any]]) -> str:
    return "; ".join(f"#{a['number']} {a['node']} {a['status']} {a['error_type']}" for a in tries)


def _check_executions(
    report: Report,
    tid: uuid.UUID,
    row: dict[str, Any] | None,
    runs: list[Execution],
    tries: list[dict[str, Any]],
    killed_node: str | None,
) -> None:
    """Ran once, or once more per LeaseExpired attempt; attempts agree with the row."""
    lease_lost = [a for a in tries if a["error_type"] == "LeaseExpired"]
    if row is not None and row["status"] in SUCCESS | {"FAILED"} and not runs:
        report.add("never-ran", f"{row['kind']} {tid} is {row['status']} but never ran")
    if len(runs) > 1 + len(lease_lost):
        report.add(
            "double",
            f"{tid} ran {len(runs)} times with {len(lease_lost)} LeaseExpired attempt(s): "
            + "; ".join(f"{e.node}/{e.pid} retry {e.retry}" for e in runs)
            + " | attempts: "
            + _attempts_text(tries),
        )
    if killed_node is not None:
        for a in lease_lost:
            if a["node"] != killed_node:
                report.add(
                    "lease-lost-on-live-node",
                    f"{tid}: its attempt on live node {a['node']} lost its lease "
                    f"(runs: {', '.join(f'{e.node}/{e.pid}' for e in runs)})",
                )
    if row is None or row["status"] not in FINAL:
        return
    still_open = [a for a in tries if a["status"] in ("IN_PROGRESS", "QUEUED")]
    if still_open:
        report.add(
            "attempt-open", f"{tid} is {row['status']} with open attempts: {_attempts_text(tries)}"
        )
    outcomes = [a for a in tries if a["error_type"] != "LeaseExpired"]
    if tries and (len(outcomes) != 1 or outcomes[-1]["status"] != row["status"]):
        report.add("attempts", f"{tid} is {row['status']}; attempts: {_attempts_text(tries)}")


def _check_takeover(
    report: Report,
    tid: uuid.UUID,
    row: dict[str, Any] | None,
    runs: list[Execution],
    tries: list[dict[str, Any]],
    ended: set[tuple[int, int]],
    killed_pids: Collection[int],
) -> int:
    """A run of a killed process that never ended ran again after a LeaseExpired attempt.
    Returns how many such interrupted runs the ticker had."""
    cut = [e for e in runs if e.pid in killed_pids and (e.pid, e.retry) not in ended]
    if not cut:
        return 0
    lease_lost = [a for a in tries if a["error_type"] == "LeaseExpired"]
    later = [r for r in runs if r.pid not in killed_pids]
    status = row["status"] if row else None
    if not lease_lost or not later or status not in SUCCESS | {"FAILED"}:
        report.add(
            "not-taken-over",
            f"{tid} was running on killed {cut[0].node}/{cut[0].pid}; LeaseExpired attempts: "
            f"{len(lease_lost)}, runs elsewhere afterwards: {len(later)}; status {status}",
        )
    return len(cut)


# -- a throwaway PostgreSQL server --------------------------------------------------------


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the ``postgres`` user (initdb and postgres refuse root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *cmd], capture_output=True, text=True, timeout=timeout, check=False
    )


class PrivateServer:
    """A PostgreSQL cluster in a test's tmp_path, on a free port; stop and start it at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()

    def _prepare_dirs(self) -> None:
        # postgres must reach the directory: every ancestor needs o+x, the root is its own
        for parent in [self.root, *self.root.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        self._prepare_dirs()
        result = as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"initdb failed: {result.stdout}\n{result.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "30", "start",
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(
                f"pg_ctl start failed: {result.stdout}\n{result.stderr}\n{self.log_text()}"
            )

    def stop(self, mode: str = "fast") -> None:
        result = as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )
        if result.returncode != 0 and "is the server running" not in result.stderr:
            raise AssertionError(f"pg_ctl stop failed: {result.stdout}\n{result.stderr}")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

"""Benchmark tickerq on PostgreSQL (and SQLite) against Procrastinate.

``python bench/pg.py`` writes ``bench/pg-results.{md,json}``. It needs a local
PostgreSQL (``--server``, default ``postgresql://postgres@127.0.0.1:5432``) on
which it may create databases: every measurement gets a fresh
``tickerq_bench_<random>`` database, dropped afterwards. Worker processes are
``bench/pg_workers.py``.

1. drain: N no-op async jobs already due (``add_many`` before the workers start),
   drained by 1 and by 2 worker processes with ``max_concurrency`` 10 (``--n``,
   20,000) and 1 (``--n-c1``, 5,000: one slot is slow);
   jobs/s from the moment the workers are told to start until the parent's poll
   sees every row DONE/DUE_DONE;
2. the same workload on Procrastinate (``batch_defer_async`` beforehand, one
   worker with concurrency 1 and 10), same polling;
3. cross-node lateness: two idle worker processes, the parent (a TickerQ app
   whose engine is not started) schedules probes due 0.3-1 s ahead at ~50/s,
   then enqueues probes due now at ~50/s; each probe records how late it started;
4. SQL sent per job by the worker during the 1-worker drains (SQLAlchemy
   ``before_cursor_execute``: cursor executes and executemany rows);
5. the SQLite drain (one process) with ``max_concurrency`` 16 and 64.

``--quick`` is a smoke test with small numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from run import cpu_model, version_of  # shared with the in-memory benchmark
from workers import lateness_figures, percentile

from tickerq import TickerContext, TickerQ, TimeTickerSpec

HERE = Path(__file__).resolve().parent
WORKER = HERE / "pg_workers.py"
RESULTS_MD = HERE / "pg-results.md"
RESULTS_JSON = HERE / "pg-results.json"
DONE_SQL = "SELECT count(*) FROM tickerq_tickers WHERE status IN ('DONE', 'DUE_DONE')"
XACT_SQL = "SELECT xact_commit FROM pg_stat_database WHERE datname = $1"
PROC_DONE_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
POLL = 0.05
ISSUE_PROCRASTINATE = {1: 540.0, 10: 890.0}

Record = dict[str, Any]


# -- databases and processes -----------------------------------------------------------


@asynccontextmanager
async def fresh_db(server: str) -> AsyncIterator[str]:
    """A new empty database on ``server``; its name. Dropped on exit."""
    name = f"tickerq_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Workers:
    """Worker subprocesses speaking the ready/go/stop protocol of pg_workers.py."""

    def __init__(self, argvs: list[list[str]]) -> None:
        self.argvs = argvs
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        for argv in self.argvs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            if line.strip() != b"ready":
                raise SystemExit(f"worker did not start: {line!r}")

    async def send(self, word: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(word.encode() + b"\n")
            await proc.stdin.drain()

    async def stop(self) -> list[Record]:
        await self.send("stop")
        out: list[Record] = []
        for proc in self.procs:
            try:
                stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
            except TimeoutError:
                proc.kill()
                stdout, _ = await proc.communicate()
            lines = [x for x in stdout.decode().splitlines() if x.strip().startswith("{")]
            out.append(json.loads(lines[-1]) if lines else {})
        return out


async def wait_count(
    conn: asyncpg.Connection, sql: str, n: int, timeout: float, polls: list[int] | None = None
) -> float:
    """Poll ``sql`` until it reaches ``n``; the perf_counter time it was first seen."""
    deadline = time.perf_counter() + timeout
    while True:
        count = await conn.fetchval(sql)
        if polls is not None:
            polls.append(count)
        now = time.perf_counter()
        if count >= n:
            return now
        if now > deadline:
            raise SystemExit(f"timed out: {count} of {n} done")
        await asyncio.sleep(POLL)


def tickerq_app(url: str) -> TickerQ:
    app = TickerQ(url, max_concurrency=1)

    @app.function()
    async def noop() -> None:
        return None

    @app.function()
    async def probe(ctx: TickerContext[float]) -> None:
        return None

    return app


# -- 1 and 4: tickerq drain ------------------------------------------------------------


async def tickerq_drain(server: str, n: int, processes: int, concurrency: int) -> Record:
    async with fresh_db(server) as db:
        url = f"{server}/{db}"
        app = tickerq_app(url)
        await app.open()
        await app.time_tickers.add_many([TimeTickerSpec(function="noop") for _ in range(n)])
        await app.stop()
        argv = ["tickerq", "--url", url, "--concurrency", str(concurrency)]
        if processes == 1:
            argv.append("--count-sql")
        workers = Workers([argv] * processes)
        await workers.start()
        conn = await asyncpg.connect(f"{server}/{db}")
        try:
            commits_before = await conn.fetchval(XACT_SQL, db)
            polls: list[int] = []
            t_start = time.perf_counter()
            await workers.send("go")
            t_end = await wait_count(conn, DONE_SQL, n, timeout=300, polls=polls)
            reports = await workers.stop()
            commits = None
            if processes == 1:
                await asyncio.sleep(1.5)  # the server publishes its counters at most once a second
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                # minus the parent's polls and its own queries in between
                commits = await conn.fetchval(XACT_SQL, db) - commits_before - len(polls) - 2
            finished = await conn.fetchval(DONE_SQL)
            due_done = await conn.fetchval(
                "SELECT count(*) FROM tickerq_tickers WHERE status = 'DUE_DONE'"
            )
            total = await conn.fetchval("SELECT count(*) FROM tickerq_tickers")
        finally:
            await conn.close()
    if finished != n or total != n:
        raise SystemExit(f"tickerq drain: {finished} of {n} DONE/DUE_DONE ({total} rows)")
    seconds = t_end - t_start
    out: Record = {
        "impl": "tickerq",
        "processes": processes,
        "concurrency": concurrency,
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "finished": finished,
        "due_done": due_done,
    }
    if processes == 1 and reports and reports[0]:
        rep = reports[0]
        out["sql"] = {
            "round_trips": rep["round_trips"],
            "statements": rep["statements"],
            "hot_statements": rep.get("hot_statements", 0),
            "transaction_control": rep.get("transaction_control", 0),
            "pings": rep.get("pings", 0),
            "round_trips_per_job": rep["round_trips"] / n,
            "statements_per_job": rep["statements"] / n,
            "by_kind": dict(sorted(rep["by_kind"].items(), key=lambda kv: -kv[1])),
            "transactions": commits,
            "transactions_per_job": None if commits is None else commits / n,
        }
    return out


# -- 2: Procrastinate drain ------------------------------------------------------------


async def procrastinate_drain(server: str, n: int, concurrency: int) -> Record:
    import procrastinate

    async with fresh_db(server) as db:
        conninfo = f"{server}/{db}"
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

        @app.task(name="noop")
        async def noop() -> None:
            return None

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for start in range(0, n, 1000):
                await noop.batch_defer_async(*({} for _ in range(min(1000, n - start))))
        workers = Workers([["procrastinate", "--url", conninfo, "--concurrency", str(concurrency)]])
        await workers.start()
        conn = await asyncpg.connect(conninfo)
        try:
            t_start = time.perf_counter()
            await workers.send("go")
            t_end = await wait_count(conn, PROC_DONE_SQL, n, timeout=300)
            await workers.stop()
            finished = await conn.fetchval(PROC_DONE_SQL)
        finally:
            await conn.close()
    if finished != n:
        raise SystemExit(f"procrastinate drain: {finished} of {n} succeeded")
    seconds = t_end - t_start
    return {
        "impl": "procrastinate",
        "processes": 1,
        "concurrency": concurrency,
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "finished": finished,
    }


# -- 3: cross-node lateness ------------------------------------------------------------


async def lateness(server: str, n: int, rate: float, mode: str) -> Record:
    """``mode`` "future": probes due 0.3-1.0 s after they are scheduled; "now": enqueued."""
    async with fresh_db(server) as db:
        url = f"{server}/{db}"
        app = tickerq_app(url)
        await app.open()
        probe = app.get_function("probe")
        with tempfile.TemporaryDirectory() as tmp:
            files = [str(Path(tmp) / f"late-{i}.json") for i in range(2)]
            workers = Workers(
                [["tickerq", "--url", url, "--concurrency", "10", "--out", f] for f in files]
            )
            await workers.start()
            await workers.send("go")
            await asyncio.sleep(1.0)  # both engines started and idle
            call_ms: list[float] = []
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                before = time.perf_counter()
                if mode == "future":
                    due = time.time() + 0.3 + (i % 8) * 0.1
                    await probe.schedule(due, at=datetime.fromtimestamp(due, UTC))
                else:
                    await probe.enqueue(time.time())
                call_ms.append((time.perf_counter() - before) * 1000.0)
            conn = await asyncpg.connect(url)
            try:
                await wait_count(conn, DONE_SQL, n, timeout=60)
            finally:
                await conn.close()
            await workers.stop()
            late: list[float] = []
            per_process = []
            for f in files:
                values = json.loads(await asyncio.to_thread(Path(f).read_text))
                per_process.append(len(values))
                late.extend(values)
        await app.stop()
    if len(late) != n:
        raise SystemExit(f"lateness {mode}: {len(late)} of {n} probes reported")
    call_ms.sort()
    return {
        "mode": mode,
        "n": n,
        "rate": rate,
        "per_process": per_process,
        **lateness_figures(late),
        "parent_call_p50_ms": percentile(call_ms, 0.5),
        "parent_call_p99_ms": percentile(call_ms, 0.99),
    }


# -- 5: SQLite -------------------------------------------------------------------------


async def sqlite_drain(n: int, concurrency: int) -> Record:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        "sqlite-drain",
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"sqlite drain failed ({proc.returncode})")
    record: Record = json.loads(stdout.decode().strip().splitlines()[-1])
    return record


# -- report ----------------------------------------------------------------------------


async def machine_info(server: str) -> Record:
    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        pg = await conn.fetchval("SHOW server_version")
        preload = await conn.fetchval("SHOW shared_preload_libraries")
    finally:
        await conn.close()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "postgresql": pg,
        "shared_preload_libraries": preload,
        "tickerq": version_of("tickerq"),
        "procrastinate": version_of("procrastinate"),
        "sqlalchemy": version_of("sqlalchemy"),
        "asyncpg": version_of("asyncpg"),
        "psycopg": version_of("psycopg"),
    }


def drain_key(r: Record) -> str:
    return f"{r['impl']}/{r['processes']}x{r['concurrency']}"


def targets(data: Record) -> list[Record]:
    drains = {drain_key(r): r for r in data["drains"]}
    out: list[Record] = []
    for slots in (1, 10):
        t, p = drains.get(f"tickerq/1x{slots}"), drains.get(f"procrastinate/1x{slots}")
        if t and p:
            ratio = t["rate"] / p["rate"]
            out.append(
                {
                    "target": f"PostgreSQL drain >= 3x Procrastinate, {slots} slot(s), 1 process",
                    "measured": f"{ratio:.2f}x ({t['rate']:.0f} vs {p['rate']:.0f} jobs/s)",
                    "passed": ratio >= 3.0,
                }
            )
    for lat in data["lateness"]:
        out.append(
            {
                "target": f"cross-node lateness p99 <= 50 ms ({lat['mode']})",
                "measured": f"{lat['p99_ms']:.1f} ms",
                "passed": lat["p99_ms"] <= 50.0,
            }
        )
    for r in data["sqlite"]:
        out.append(
            {
                "target": f"SQLite drain >= 2,000 jobs/s (max_concurrency={r['concurrency']})",
                "measured": f"{r['rate']:.0f} jobs/s",
                "passed": r["rate"] >= 2000.0,
            }
        )
    for r in data["drains"]:
        if "sql" in r:
            spj = r["sql"]["statements_per_job"]
            out.append(
                {
                    "target": f"statements per job <= 2 (1 process x {r['concurrency']}, "
                    f"{r['n']:,} jobs)",
                    "measured": f"{spj:.2f} ({r['sql']['round_trips_per_job']:.2f} round trips)",
                    "passed": spj <= 2.0,
                }
            )
    return out


def render(data: Record) -> str:
    m = data["machine"]
    lines = [
        "# tickerq on PostgreSQL vs Procrastinate",
        "",
        f"- date: {data['date']} (took {data['bench_seconds']:.0f} s)",
        f"- command: `{data['command']}`",
        f"- machine: {m['cpu_model']}, {m['cores']} cores, {m['platform']}",
        f"- Python {m['python']}, PostgreSQL {m['postgresql']} (local, trust auth), "
        f"tickerq {m['tickerq']}, Procrastinate {m['procrastinate']}, "
        f"SQLAlchemy {m['sqlalchemy']}, asyncpg {m['asyncpg']}, psycopg {m['psycopg']}",
        "- every measurement on a fresh database; jobs/s from telling the workers to start "
        f"until the parent's poll (every {POLL * 1000:.0f} ms) sees all rows done; "
        "one run each",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['target']} | {t['measured']} | {'PASS' if t['passed'] else 'FAIL'} |"
        for t in data["targets"]
    ]
    lines += [
        "",
        "## Drain of due no-op async jobs (PostgreSQL)",
        "",
        f"{data['config']['n']:,} jobs with 10 slots per process; {data['config']['n_c1']:,} "
        "with 1 slot (one slot is slow for Procrastinate: a 20,000-job drain would take it "
        "minutes). Each implementation runs the same jobs on a fresh database of the same "
        "server in the same run; compare ratios, not absolute figures, across machines.",
        "",
        "| implementation | processes x slots | jobs | seconds | jobs/s | DUE_DONE |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["drains"]:
        lines.append(
            f"| {r['impl']} | {r['processes']} x {r['concurrency']} | {r['n']:,} | "
            f"{r['seconds']:.2f} | "
            f"{r['rate']:,.0f} | {r.get('due_done', '')} |"
        )
    lines += [
        "",
        "Procrastinate figures quoted in the issue: ~540 jobs/s with 1 slot, ~890 with 10.",
        "",
        "## SQL sent per job by the worker (1-process drains)",
        "",
        "pg_stat_statements is not loaded on this server "
        f"(shared_preload_libraries = {m['shared_preload_libraries']!r}), so the worker "
        "counts in two places, between start and stop of its engine: a SQLAlchemy "
        "`before_cursor_execute` listener on `app.store.sa_engine.sync_engine` (what the "
        "store sends through SQLAlchemy; an executemany counts one statement per row) "
        "and asyncpg's query logger on every connection the process opens (BEGIN/"
        "COMMIT/ROLLBACK, pool pre-pings, and the store's hot-path statement, which "
        "goes out on a raw asyncpg connection: one statement that writes the ended "
        "jobs' results and claims the next ones). Statements = SQLAlchemy statements "
        "+ hot-path statements; round trips = everything sent, transaction control "
        "and pings included.",
        "",
        "Transactions = the database's `xact_commit` delta (pg_stat_database) over the "
        "drain, minus the parent's polls: each costs a BEGIN and a COMMIT round trip on "
        "top of the executes.",
        "",
        "| slots | round trips | statements | round trips/job | statements/job | "
        "transactions/job |",
        "|---|---|---|---|---|---|",
    ]
    kinds: list[str] = []
    for r in data["drains"]:
        if "sql" in r:
            s = r["sql"]
            lines.append(
                f"| {r['concurrency']} | {s['round_trips']:,} | {s['statements']:,} | "
                f"{s['round_trips_per_job']:.2f} | {s['statements_per_job']:.2f} | "
                f"{s['transactions_per_job'] or 0:.2f} |"
            )
            kinds.append(f"By statement (slots={r['concurrency']}): ")
            kinds[-1] += ", ".join(f"`{k}` {v:,}" for k, v in s["by_kind"].items())
    lines += ["", *[f"- {k}" for k in kinds]]
    lines += [
        "",
        "## Cross-node schedule-to-start lateness (PostgreSQL, NOTIFY)",
        "",
        "Two idle worker processes (max_concurrency 10); the parent, a TickerQ app with "
        "its engine not started, adds probes one at a time at the given rate. "
        "future: `schedule(at=due)` with due 0.3-1.0 s ahead, lateness = start - due; "
        "now: `enqueue()`, lateness = start - the time just before the enqueue call.",
        "",
        "| mode | jobs | rate/s | p50 ms | p99 ms | max ms | ran per process | "
        "parent call p50/p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["lateness"]:
        lines.append(
            f"| {r['mode']} | {r['count']} | {r['rate']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['per_process']} | "
            f"{r['parent_call_p50_ms']:.1f} / {r['parent_call_p99_ms']:.1f} |"
        )
    lines += [
        "",
        "Procrastinate's delayed jobs were not measured (the issue quotes 2.8 s p50, "
        "5 s p99: its worker polls every 5 s).",
        "",
        f"## SQLite drain ({data['config']['n']:,} due no-op jobs, 1 process)",
        "",
        "| max_concurrency | seconds | jobs/s | DUE_DONE |",
        "|---|---|---|---|",
    ]
    for r in data["sqlite"]:
        lines.append(
            f"| {r['concurrency']} | {r['seconds']:.2f} | {r['rate']:,.0f} | {r['due_done']} |"
        )
    if data.get("notes"):
        lines += ["", "## Notes", "", *data["notes"]]
    return "\n".join(lines) + "\n"


# -- entry point -----------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--n", type=int, default=20_000, help="jobs per drain (10 slots)")
    parser.add_argument(
        "--n-c1", type=int, default=5_000, help="jobs per 1-slot drain (slow: kept short)"
    )
    parser.add_argument("--lateness-n", type=int, default=500)
    parser.add_argument("--lateness-rate", type=float, default=50.0, help="adds per second")
    parser.add_argument("--quick", action="store_true", help="smoke test: small numbers")
    parser.add_argument("--notes", default="", help="markdown file appended as Notes")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_c1, args.lateness_n = 2_000, 500, 100
    return args


async def run(args: argparse.Namespace, command: str) -> Record:
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"  [{time.perf_counter() - started:6.1f} s] {text}", file=sys.stderr)

    drains: list[Record] = []
    for processes, conc in ((1, 10), (1, 1), (2, 10), (2, 1)):
        n = args.n if conc > 1 else args.n_c1
        drains.append(await tickerq_drain(args.server, n, processes, conc))
        log(f"tickerq {processes}x{conc}: {drains[-1]['rate']:.0f} jobs/s")
    for conc in (1, 10):
        n = args.n if conc > 1 else args.n_c1
        drains.append(await procrastinate_drain(args.server, n, conc))
        log(f"procrastinate 1x{conc}: {drains[-1]['rate']:.0f} jobs/s")
    late = []
    for mode in ("future", "now"):
        late.append(await lateness(args.server, args.lateness_n, args.lateness_rate, mode))
        log(f"lateness {mode}: p99 {late[-1]['p99_ms']:.1f} ms")
    sqlite = []
    for conc in (16, 64):
        sqlite.append(await sqlite_drain(args.n, conc))
        log(f"sqlite {conc}: {sqlite[-1]['rate']:.0f} jobs/s")
    data: Record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": await machine_info(args.server),
        "config": {
            "n": args.n,
            "n_c1": args.n_c1,
            "lateness_n": args.lateness_n,
            "lateness_rate": args.lateness_rate,
        },
        "drains": drains,
        "procrastinate_issue_figures": ISSUE_PROCRASTINATE,
        "lateness": late,
        "sqlite": sqlite,
        "bench_seconds": time.perf_counter() - started,
    }
    if args.notes:
        data["notes"] = (await asyncio.to_thread(Path(args.notes).read_text)).splitlines()
    data["targets"] = targets(data)
    return data


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = "python bench/pg.py" + ("" if not argv else " " + " ".join(argv))
    data = asyncio.run(run(args, command))
    text = render(data)
    RESULTS_MD.write_text(text)
    RESULTS_JSON.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(text)
    print("wrote bench/pg-results.md, bench/pg-results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""PostgreSQL at scale: single enqueue, and 25 nodes on one default server.

``python bench/pg_scale.py`` writes ``bench/pg-scale-results.md`` (and ``.json``).

1. Single enqueue, one await at a time (a web handler's ``enqueue()``), on a
   fresh database of ``--server`` (default ``postgresql://postgres@127.0.0.1:5432``):
   tickerq (a TickerQ app whose engine is not started, default connection
   budget), the general path it took before (pool pre-ping, BEGIN, INSERT,
   ``pg_notify``, COMMIT: the same store with its one-statement path switched
   off and a pre-pinging pool of 10 + 10) and Procrastinate (``defer_async``),
   in alternating rounds of ``--n`` enqueues; the median round of each. As the
   ceiling, tickerq's statement alone on a plain asyncpg connection. Round trips
   per enqueue are counted for tickerq from asyncpg's query log and SQLAlchemy's
   ``before_cursor_execute`` (like bench/pg.py).
2. 25 nodes: a throwaway PostgreSQL cluster made by ``initdb`` with its defaults
   (max_connections 100, 3 reserved for superusers), 25 worker processes (each
   a TickerQ app with its default budget and ``max_concurrency`` 4, engine
   running) and one dashboard-like client (an app without engine that enqueues
   jobs one by one and in bulk, and reads the pages' queries meanwhile). All
   jobs must end DONE, no process may see "too many connections", and the
   largest number of client sessions seen in ``pg_stat_activity`` (sampled every
   20 ms) is reported.

``--quick`` is a smoke test with small numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
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

from tickerq import TickerContext, TickerQ, TimeTickerSpec

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "pg-scale-results.md"
RESULTS_JSON = HERE / "pg-scale-results.json"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TARGET_RATE = 3000.0

Record = dict[str, Any]


@asynccontextmanager
async def fresh_db(server: str) -> AsyncIterator[str]:
    """A new empty database on ``server``; its name. Dropped on exit."""
    name = f"pgconn_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- 1: single enqueue -------------------------------------------------------------------


class Wire:
    """Counts what the process sends: asyncpg's query log on every connection it opens
    (raw statements, BEGIN/COMMIT, pings) plus SQLAlchemy's cursor executes (which
    go out as prepared statements asyncpg does not log)."""

    def __init__(self) -> None:
        self.active = False
        self.asyncpg = 0
        self.sqlalchemy = 0

    def log(self, _record: Any) -> None:
        if self.active:
            self.asyncpg += 1

    def cursor(self, *_args: Any) -> None:
        if self.active:
            self.sqlalchemy += 1

    def install(self) -> None:
        connect = asyncpg.connect

        async def logged_connect(*args: Any, **kwargs: Any) -> Any:
            conn = await connect(*args, **kwargs)
            conn.add_query_logger(self.log)
            return conn

        asyncpg.connect = logged_connect  # type: ignore[assignment]


PRODUCERS = 32
"""Concurrent producers in the concurrent enqueue measurement."""


def tickerq_app(url: str) -> TickerQ:
    app = TickerQ(url)

    @app.function()
    async def noop(ctx: TickerContext[int]) -> None:
        return None

    return app


async def enqueue_round(app: TickerQ, n: int) -> float:
    noop = app.get_function("noop")
    started = time.perf_counter()
    for i in range(n):
        await noop.enqueue(i)
    return n / (time.perf_counter() - started)


async def concurrent_round(enqueue: Any, n: int, producers: int) -> float:
    """``producers`` tasks enqueue ``n`` jobs together, each one await at a time (the
    requests of a busy web app)."""

    async def producer(count: int) -> None:
        for i in range(count):
            await enqueue(i)

    started = time.perf_counter()
    await asyncio.gather(*(producer(n // producers) for _ in range(producers)))
    return (n // producers * producers) / (time.perf_counter() - started)


async def raw_round(conn: Any, template: Any, n: int) -> float:
    """tickerq's one statement sent on a plain asyncpg connection: the ceiling for any
    enqueue on this server (its cost is the server's commit, WAL flush included)."""
    from uuid import uuid4

    from tickerq.stores.sql.enqueue_pg import _INSERT_AND_NOTIFY, _arguments

    started = time.perf_counter()
    for i in range(n):
        args = _arguments([template.evolve(id=uuid4(), request=i)])
        await conn.execute(_INSERT_AND_NOTIFY, *args)
    return n / (time.perf_counter() - started)


def as_before(app: TickerQ) -> None:
    """The store's general path with a pre-pinging pool of 10 + 10: enqueue as it was."""
    from sqlalchemy.ext.asyncio import create_async_engine

    store: Any = app.store
    store._pg_enqueue = None
    store._engine = create_async_engine(
        store.dialect.driver_url, pool_size=10, max_overflow=10, pool_pre_ping=True
    )


async def single_enqueue(server: str, n: int, rounds: int) -> Record:
    from sqlalchemy import event

    wire = Wire()
    wire.install()
    import procrastinate

    rates: dict[str, list[float]] = {
        "tickerq": [],
        "tickerq, general path": [],
        "procrastinate": [],
        "asyncpg alone": [],
        f"tickerq, {PRODUCERS} producers": [],
        f"procrastinate, {PRODUCERS} producers": [],
    }
    per_enqueue: dict[str, Record] = {}
    async with fresh_db(server) as db_new, fresh_db(server) as db_old, fresh_db(server) as db_p:
        new = tickerq_app(f"{server}/{db_new}")
        old = tickerq_app(f"{server}/{db_old}")
        await new.open()
        await old.open()
        old_engine: Any = old.store
        await old_engine.sa_engine.dispose()
        as_before(old)
        for app in (new, old):
            store: Any = app.store
            event.listen(store.sa_engine.sync_engine, "before_cursor_execute", wire.cursor)
        proc = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=f"{server}/{db_p}")
        )

        @proc.task(name="noop")
        async def noop(i: int) -> None:
            return None

        async with proc.open_async():
            await proc.schema_manager.apply_schema_async()
            for app in (new, old):  # warm up: connections made, statements prepared
                await enqueue_round(app, 200)
            for i in range(200):
                await noop.defer_async(i=i)

            async def proc_round(count: int) -> float:
                started = time.perf_counter()
                for i in range(count):
                    await noop.defer_async(i=i)
                return count / (time.perf_counter() - started)

            # round trips and transactions per enqueue, one counted round each
            for name, app in (("tickerq", new), ("tickerq, general path", old)):
                wire.asyncpg = wire.sqlalchemy = 0
                wire.active = True
                await enqueue_round(app, n)
                wire.active = False
                per_enqueue[name] = {"round_trips": (wire.asyncpg + wire.sqlalchemy) / n}
            per_enqueue["procrastinate"] = per_enqueue["asyncpg alone"] = {"round_trips": None}
            raw = await asyncpg.connect(f"{server}/{db_new}")
            template = await new.time_tickers.add("noop", request=0)
            for _ in range(rounds):
                rates["tickerq"].append(await enqueue_round(new, n))
                rates["procrastinate"].append(await proc_round(n))
                rates["tickerq, general path"].append(await enqueue_round(old, n))
                rates["asyncpg alone"].append(await raw_round(raw, template, n))
                rates[f"tickerq, {PRODUCERS} producers"].append(
                    await concurrent_round(new.get_function("noop").enqueue, n, PRODUCERS)
                )
                rates[f"procrastinate, {PRODUCERS} producers"].append(
                    await concurrent_round(lambda i: noop.defer_async(i=i), n, PRODUCERS)
                )
            await raw.close()
        await new.stop()
        await old.stop()
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "n": n,
        "rounds": rounds,
        "rates": rates,
        "median": medians,
        "per_enqueue": per_enqueue,
        "vs_procrastinate": medians["tickerq"] / medians["procrastinate"],
        "vs_general_path": medians["tickerq"] / medians["tickerq, general path"],
        "vs_ceiling": medians["tickerq"] / medians["asyncpg alone"],
        "concurrent_vs_procrastinate": medians[f"tickerq, {PRODUCERS} producers"]
        / medians[f"procrastinate, {PRODUCERS} producers"],
    }


# -- 2: 25 nodes on a default server ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as ``postgres`` when root (initdb and postgres refuse root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, check=False)


class DefaultServer:
    """A PostgreSQL cluster made by initdb with its defaults, on a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()

    def start(self) -> None:
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            for parent in self.root.parents:
                parent.chmod(parent.stat().st_mode | 0o001)
        data = str(self.root / "data")
        for cmd in (
            [str(PG_BIN / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            [str(PG_BIN / "pg_ctl"), "-D", data, "-l", str(self.root / "log"), "-w", "-o",
             f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}", "start"],
        ):  # fmt: skip
            result = as_postgres(*cmd)
            if result.returncode != 0:
                raise SystemExit(f"{cmd[0]} failed: {result.stdout}{result.stderr}")

    def stop(self) -> None:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


async def node_main(url: str, concurrency: int) -> int:
    """One worker node: engine running until stdin closes; prints its errors as JSON."""
    import logging

    errors: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                errors.append(record.getMessage()[:300])

    logging.getLogger("tickerq").addHandler(Catch())
    app = TickerQ(url, max_concurrency=concurrency)

    @app.function()
    async def noop(ctx: TickerContext[int]) -> None:
        await asyncio.sleep(0.005)

    try:
        await app.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await app.stop()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
    print(json.dumps({"errors": errors}), flush=True)
    return 0


async def sample_sessions(server_url: str, stop: asyncio.Event, seen: list[int]) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        while not stop.is_set():
            seen.append(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                )
            )
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def many_nodes(nodes: int, jobs: int, concurrency: int) -> Record:
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"{PG_BIN}/initdb not found: the 25-node run needs PostgreSQL 15 tools")
    with tempfile.TemporaryDirectory(prefix="pg-scale-") as tmp:
        server = DefaultServer(Path(tmp))
        server.start()
        try:
            return await _many_nodes(server, nodes, jobs, concurrency)
        finally:
            server.stop()


async def _many_nodes(server: DefaultServer, nodes: int, jobs: int, concurrency: int) -> Record:
    admin = await asyncpg.connect(server.url("postgres"))
    settings = {
        k: await admin.fetchval(f"SHOW {k}")
        for k in ("max_connections", "superuser_reserved_connections")
    }
    await admin.execute("CREATE DATABASE jobs")
    await admin.close()
    url = server.url("jobs")
    client = tickerq_app(url)  # the dashboard-like client: no engine
    await client.open()  # creates the schema before the nodes start
    seen: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_sessions(server.url("postgres"), stop, seen))
    procs = []
    started = time.perf_counter()
    for _ in range(nodes):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, __file__, "node", "--url", url, "--concurrency", str(concurrency),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        )  # fmt: skip
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 120)
        if line.strip() != b"ready":
            _, err = await p.communicate()
            raise SystemExit(f"a node did not start: {line!r} {err.decode()[-2000:]}")
    ready_s = time.perf_counter() - started
    noop = client.get_function("noop")
    t0 = time.perf_counter()
    singles = [(await noop.enqueue(i)).id for i in range(jobs // 2)]
    await client.time_tickers.add_many(
        [TimeTickerSpec(function="noop", request=i) for i in range(jobs - len(singles))]
    )
    reads = 0
    while True:  # the dashboard's reads while the nodes work
        await client.time_tickers.query(limit=25)
        done = await client.time_tickers.count(status=["DONE", "DUE_DONE"])
        reads += 2
        if done >= jobs:
            break
        if time.perf_counter() - t0 > 300:
            raise SystemExit(f"timed out: {done} of {jobs} done")
        await asyncio.sleep(0.1)
    drain_s = time.perf_counter() - t0
    conn = await asyncpg.connect(url)
    ran_on = await conn.fetchval("SELECT count(DISTINCT node) FROM tickerq_attempts")
    await conn.close()
    errors: list[str] = []
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        out, err = await asyncio.wait_for(p.communicate(), 60)
        lines = [x for x in out.decode().splitlines() if x.startswith("{")]
        errors += json.loads(lines[-1])["errors"] if lines else ["no report"]
        if "too many" in err.decode():
            errors.append(err.decode()[-300:])
    stop.set()
    await sampler
    await client.stop()
    too_many = [e for e in errors if "too many" in e.lower()]
    return {
        "nodes": nodes,
        "jobs": jobs,
        "concurrency": concurrency,
        "server": settings,
        "max_sessions": max(seen),
        "samples": len(seen),
        "nodes_that_ran_jobs": ran_on,
        "too_many_connections": len(too_many),
        "errors": errors[:20],
        "start_seconds": ready_s,
        "drain_seconds": drain_s,
        "dashboard_reads": reads,
    }


# -- report ----------------------------------------------------------------------------


async def machine(server: str) -> Record:
    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        pg = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "postgresql": pg,
        "synchronous_commit": sync,
        "tickerq": version_of("tickerq"),
        "procrastinate": version_of("procrastinate"),
        "sqlalchemy": version_of("sqlalchemy"),
        "asyncpg": version_of("asyncpg"),
        "psycopg": version_of("psycopg"),
    }


def render(data: Record) -> str:
    m, e, s = data["machine"], data["enqueue"], data["nodes"]
    med = e["median"]
    fast = e["per_enqueue"]["tickerq"]
    lines = [
        "# tickerq on PostgreSQL: single enqueue, and 25 nodes on one default server",
        "",
        f"- date: {data['date']} (took {data['bench_seconds']:.0f} s)",
        f"- command: `{data['command']}`",
        f"- machine: {m['cpu_model']}, {m['cores']} cores, {m['platform']}; other work may "
        "share the cores: compare ratios measured in the same run",
        f"- Python {m['python']}, PostgreSQL {m['postgresql']} (local, trust auth, "
        f"synchronous_commit={m['synchronous_commit']}: every enqueue waits for its WAL "
        f"flush), tickerq {m['tickerq']}, Procrastinate {m['procrastinate']}, "
        f"SQLAlchemy {m['sqlalchemy']}, asyncpg {m['asyncpg']}, psycopg {m['psycopg']}",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        f"| single enqueue >= {TARGET_RATE:,.0f}/s | {med['tickerq']:,.0f}/s | "
        f"{'PASS' if med['tickerq'] >= TARGET_RATE else 'FAIL'} |",
        f"| single enqueue ahead of Procrastinate (same run) | {e['vs_procrastinate']:.2f}x "
        f"({med['tickerq']:,.0f} vs {med['procrastinate']:,.0f}/s) | "
        f"{'PASS' if e['vs_procrastinate'] > 1 else 'FAIL'} |",
        f"| concurrent enqueue ({PRODUCERS} producers) >= {TARGET_RATE:,.0f}/s | "
        f"{med[f'tickerq, {PRODUCERS} producers']:,.0f}/s | "
        f"{'PASS' if med[f'tickerq, {PRODUCERS} producers'] >= TARGET_RATE else 'FAIL'} |",
        f"| concurrent enqueue ahead of Procrastinate (same run) | "
        f"{e['concurrent_vs_procrastinate']:.2f}x | "
        f"{'PASS' if e['concurrent_vs_procrastinate'] > 1 else 'FAIL'} |",
        f"| one round trip per enqueue | {fast['round_trips']:.2f} | "
        f"{'PASS' if fast['round_trips'] <= 1.0 else 'FAIL'} |",
        f"| {s['nodes']} nodes + 1 dashboard client on a default server, no 'too many "
        f"connections' | {s['too_many_connections']} errors, at most {s['max_sessions']} "
        f"sessions of {s['server']['max_connections']} | "
        f"{'PASS' if s['too_many_connections'] == 0 and not s['errors'] else 'FAIL'} |",
        "",
        "## Single enqueue, one await at a time",
        "",
        f"{e['n']:,} `enqueue()` calls per round, {e['rounds']} rounds alternating between "
        "them, median round shown (each on its own fresh database of the same server; "
        "the tickerq apps have their engine off, like a web process). Round trips: "
        "everything the process sent (asyncpg's query log + SQLAlchemy's cursor executes). "
        "`asyncpg alone` sends tickerq's statement on a plain connection with no tickerq "
        "code around it: the most any enqueue can do on this server, whose cost is mostly "
        "the commit's WAL flush.",
        "",
        "| implementation | enqueues/s (median) | rounds | round trips/enqueue |",
        "|---|---|---|---|",
    ]
    for name in ("tickerq", "tickerq, general path", "procrastinate", "asyncpg alone"):
        pe = e["per_enqueue"][name]
        rt = "not counted" if pe["round_trips"] is None else f"{pe['round_trips']:.2f}"
        lines.append(
            f"| {name} | {med[name]:,.0f} | {', '.join(f'{r:,.0f}' for r in e['rates'][name])} "
            f"| {rt} |"
        )
    lines += [
        "",
        f"tickerq vs Procrastinate: **{e['vs_procrastinate']:.2f}x**; vs its general path "
        f"(what enqueue did before: pre-ping, BEGIN, INSERT, pg_notify, COMMIT): "
        f"**{e['vs_general_path']:.2f}x**; share of the ceiling (asyncpg alone): "
        f"**{e['vs_ceiling']:.2f}**.",
        "",
        f"## Concurrent enqueue: {PRODUCERS} producers",
        "",
        f"The same {e['n']:,} enqueues per round made by {PRODUCERS} tasks at once, each one "
        "await at a time (a web app's concurrent requests), in the same rounds. tickerq's "
        "node has one pooled connection (the default budget): enqueues that wait for it go "
        "as rows of one statement, one commit for all. Procrastinate uses its connector's "
        "pool.",
        "",
        "| implementation | enqueues/s (median) | rounds |",
        "|---|---|---|",
    ]
    for name in (f"tickerq, {PRODUCERS} producers", f"procrastinate, {PRODUCERS} producers"):
        lines.append(
            f"| {name} | {med[name]:,.0f} | {', '.join(f'{r:,.0f}' for r in e['rates'][name])} |"
        )
    lines += [
        "",
        f"## {s['nodes']} nodes on one default PostgreSQL server",
        "",
        f"A cluster made by `initdb` with its defaults (max_connections "
        f"{s['server']['max_connections']}, superuser_reserved_connections "
        f"{s['server']['superuser_reserved_connections']}). {s['nodes']} worker processes, "
        f"each a TickerQ app with the default connection budget and max_concurrency "
        f"{s['concurrency']}, engine running; one dashboard-like client (engine off) "
        f"enqueues {s['jobs']:,} jobs (half one by one, half with add_many) and reads a "
        "page and a count every 100 ms until all are done; a monitor samples "
        "`pg_stat_activity` (client backends) every 20 ms.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| most client sessions seen (all nodes + client + monitor) | {s['max_sessions']} |",
        f"| samples | {s['samples']:,} |",
        f"| nodes that ran jobs | {s['nodes_that_ran_jobs']} of {s['nodes']} |",
        f"| 'too many connections' errors | {s['too_many_connections']} |",
        f"| other warnings logged by nodes | {len(s['errors'])} |",
        f"| nodes started in | {s['start_seconds']:.1f} s |",
        f"| {s['jobs']:,} jobs enqueued and done in | {s['drain_seconds']:.1f} s |",
        "",
        f"Budget: 3 connections per node x {s['nodes']} = {3 * s['nodes']}, + the client's "
        "pool (1) + the monitor (1), within the 97 that non-superusers may open. Before the "
        "budget a node could open 22 (10 + 10 overflow, hot path, LISTEN).",
    ]
    if s["errors"]:
        lines += ["", "Warnings logged by nodes (first 20):", ""]
        lines += [f"- `{x}`" for x in s["errors"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--n", type=int, default=2000, help="enqueues per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=25)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="smoke test: small numbers")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds, args.jobs = 300, 2, 500
    return args


async def run(args: argparse.Namespace, command: str) -> Record:
    started = time.perf_counter()
    enqueue = await single_enqueue(args.server, args.n, args.rounds)
    print(f"  enqueue: {enqueue['median']}", file=sys.stderr)
    nodes = await many_nodes(args.nodes, args.jobs, 4)
    print(f"  nodes: max sessions {nodes['max_sessions']}", file=sys.stderr)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": await machine(args.server),
        "enqueue": enqueue,
        "nodes": nodes,
        "bench_seconds": time.perf_counter() - started,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["node"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--url", required=True)
        parser.add_argument("--concurrency", type=int, default=4)
        args = parser.parse_args(argv[1:])
        return asyncio.run(node_main(args.url, args.concurrency))
    if shutil.which("runuser") is None and os.geteuid() == 0:
        raise SystemExit("runuser is needed to start PostgreSQL as the postgres user")
    args = parse_args(argv)
    command = "python bench/pg_scale.py" + ("" if not argv else " " + " ".join(argv))
    data = asyncio.run(run(args, command))
    RESULTS_MD.write_text(render(data))
    RESULTS_JSON.write_text(json.dumps(data, indent=2) + "\n")
    print(render(data))
    print("wrote bench/pg-scale-results.md, bench/pg-scale-results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

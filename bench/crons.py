"""Benchmark: many every-minute crons due at once (issue 9), before and after.

``python bench/crons.py`` writes ``bench/crons-results.md`` (and ``.json``). For
each store (PostgreSQL at ``--server``, in a fresh ``crons_bench_<random>``
database dropped afterwards; SQLite in a temporary file) and each code version
(``before``: the tree at ``--baseline`` extracted with ``git archive``, the
per-cron path; ``after``: this checkout's ``src``; ``lead``: the same with
``EngineOptions(cron_lead=CRON_LEAD)``, occurrences made ahead), a child process:

1. materialize: ``--crons`` (10,000) ``* * * * *`` cron tickers all due at one
   instant; the seconds one ``fire_due_crons`` round takes (engine not running);
2. on time: the same crons due ``LEAD`` seconds ahead, with ``--tickers`` (200)
   HIGH-priority time tickers due over the ``--spread`` (2 s) that follows, then the engine
   (real clock, ``max_concurrency`` 64) drains everything (no-op jobs), for at
   most ``ENGINE_TIMEOUT`` seconds. Reported: runs finished, lateness (start time
   minus due time, from the rows) p50/p99/max of the cron runs and of the time
   tickers; claimed before the crons' runs, they show whether claims wait for
   the crons to be materialized.

The versions run in the same invocation, one after the other, on the same
machine. ``--quick`` is a smoke test with small numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_MD = HERE / "crons-results.md"
RESULTS_JSON = HERE / "crons-results.json"
BASELINE = "4f12aca"
"""The commit before batched crons (one transaction per cron, round inline in the loop)."""
LEAD = 3.0
ENGINE_TIMEOUT = 120.0
"""The engine phase stops here (the per-cron path on PostgreSQL takes far longer)."""
CONCURRENCY = 64
CRON_LEAD = 2.0
"""``EngineOptions.cron_lead`` of the ``lead`` version: occurrences made 2 s ahead."""

Record = dict[str, Any]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(values: list[float]) -> Record:
    """p50, p99 and max of ``values``, and how many exceed the late threshold (1 s)."""
    return {
        "n": len(values),
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values, default=float("nan")),
        "late": sum(v > 1.0 for v in values),
    }


# -- the child: one store, one code version ---------------------------------------------


async def _insert_crons(app: Any, count: int, due: datetime) -> None:
    """``count`` every-minute cron tickers whose next fire is ``due`` (one statement)."""
    from sqlalchemy import insert

    from tickerq.stores.sql.rows import cron_values
    from tickerq.stores.sql.schema import cron_tickers

    template = await app.cron_tickers.add("tick", "* * * * *")
    await app.cron_tickers.delete(template.id)

    rows = [cron_values(template.evolve(id=uuid.uuid4(), next_fire_at=due)) for _ in range(count)]
    await app.store.write(lambda conn: conn.execute(insert(cron_tickers), rows))


async def _reset(app: Any) -> None:
    from sqlalchemy import delete

    from tickerq.stores.sql.schema import attempts, cron_tickers, tickers

    def tx(conn: Any) -> None:
        conn.execute(delete(attempts))
        conn.execute(delete(tickers))
        conn.execute(delete(cron_tickers))

    await app.store.write(tx)


def _sa_engine(app: Any) -> Any:
    """The store's SQLAlchemy engine (``engine`` in the baseline, ``sa_engine`` since)."""
    store = app.store
    return getattr(store, "sa_engine", None) or store.engine


async def child(url: str, crons: int, tickers: int, spread: float, lead: float) -> Record:
    from sqlalchemy import func, select

    from tickerq import EngineOptions, Priority, TickerQ
    from tickerq.firing import fire_due_crons
    from tickerq.stores.sql.schema import tickers as table

    app = TickerQ(
        url,
        node_id="bench",
        max_concurrency=CONCURRENCY,
        # (the baseline has no cron_lead: pass it only when set)
        options=EngineOptions(
            heartbeat_interval=30, lease=300, **({"cron_lead": lead} if lead else {})
        ),
    )

    @app.function()
    async def tick() -> None:
        return None

    @app.function(priority=Priority.HIGH)  # claimed first once due: shows claims not held up
    async def probe() -> None:
        return None

    await app.open()
    out: Record = {}
    try:
        # 1. one round, engine not running
        now = datetime.now(UTC)
        await _insert_crons(app, crons, now - timedelta(seconds=1))
        started = time.perf_counter()
        fired = await fire_due_crons(app.store, now, lambda _f: Priority.NORMAL, 5.0)
        out["materialize_s"] = time.perf_counter() - started
        out["materialized"] = fired.created
        await _reset(app)

        # 2. the engine at work: crons and a stream of time tickers due meanwhile
        fire = datetime.now(UTC) + timedelta(seconds=LEAD)
        await _insert_crons(app, crons, fire)
        for i in range(tickers):
            await app.time_tickers.add(
                "probe", execution_time=fire + timedelta(seconds=spread * i / max(tickers, 1))
            )
        total = crons + tickers
        T = table.c
        # (A slow round may reach the next minute: its fires are not counted.)
        finished = select(func.count()).where(
            T.status.in_(["DONE", "DUE_DONE"]),
            (T.kind == "TIME") | (T.fire_time == fire),
        )
        async with app:
            deadline = time.monotonic() + LEAD + ENGINE_TIMEOUT
            while time.monotonic() < deadline:
                async with _sa_engine(app).connect() as conn:
                    done = (await conn.execute(finished)).scalar() or 0
                if done >= total:
                    break
                await asyncio.sleep(0.1)
            async with _sa_engine(app).connect() as conn:
                rows = (
                    await conn.execute(
                        select(T.kind, T.execution_time, T.executed_at, T.status).where(
                            (T.kind == "TIME") | (T.fire_time == fire)
                        )
                    )
                ).all()
        cron_late = [
            (r.executed_at - r.execution_time).total_seconds()
            for r in rows
            if r.kind == "CRON_OCCURRENCE" and r.executed_at is not None
        ]
        ticker_late = [
            (r.executed_at - r.execution_time).total_seconds()
            for r in rows
            if r.kind != "CRON_OCCURRENCE" and r.executed_at is not None
        ]
        out["engine_occurrences"] = sum(r.kind == "CRON_OCCURRENCE" for r in rows)
        out["finished"] = sum(r.status in ("DONE", "DUE_DONE") for r in rows)
        out["total"] = total
        out["cron_lateness"] = figures(cron_late)
        out["ticker_lateness"] = figures(ticker_late)
    finally:
        await app.stop()
        await app.store.close()
    return out


# -- the parent ----------------------------------------------------------------------


def extract_baseline(rev: str, into: Path) -> Path:
    """The ``src`` tree of ``rev``, extracted under ``into``."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_child(src: Path, url: str, args: argparse.Namespace, lead: float) -> Record:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run(
        [
            *(sys.executable, __file__, "--child", url, "--crons", str(args.crons)),
            *("--tickers", str(args.tickers), "--spread", str(args.spread)),
            *("--lead", str(lead)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed on {url}:\n{proc.stderr[-4000:]}")
    result: Record = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def measure(store: str, src: Path, args: argparse.Namespace, lead: float) -> Record:
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return run_child(src, f"sqlite:///{tmp}/bench.db", args, lead)
    name = f"crons_bench_{secrets.token_hex(6)}"
    asyncio.run(_admin(args.server, f'CREATE DATABASE "{name}"'))
    try:
        return run_child(src, f"{args.server}/{name}", args, lead)
    finally:
        asyncio.run(_admin(args.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def report(results: dict[str, dict[str, Record]], args: argparse.Namespace, command: str) -> str:
    from run import cpu_model

    lines = [
        f"# Many crons: {args.crons:,} every-minute cron tickers due at once (issue 9)",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}  ",
        f"Crons: {args.crons:,}; HIGH-priority time tickers: {args.tickers} due over "
        f"{args.spread} s after "
        f"the fire; engine max_concurrency {CONCURRENCY}, no-op jobs, real clock.  ",
        f"Before: the tree at `{args.baseline}` (one transaction per cron, the round "
        "inline in the claim loop); after: this checkout; after, cron_lead: this checkout "
        f"with `EngineOptions(cron_lead={CRON_LEAD})` (occurrences made {CRON_LEAD:g} s ahead "
        "of their fire). Same run, same machine.",
        "",
        "| store | version | materialize one minute (s) | engine: runs finished "
        "| cron runs late p50 / p99 / max (s) | cron runs > 1 s late | HIGH time tickers late "
        "p50 / p99 / max (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for store, by_version in results.items():
        for version, r in by_version.items():
            c, t = r["cron_lateness"], r["ticker_lateness"]
            lines.append(
                f"| {store} | {version} | {r['materialize_s']:.2f} "
                f"| {r['finished']:,} of {r['total']:,} "
                f"| {c['p50']:.2f} / {c['p99']:.2f} / {c['max']:.2f} | {c['late']:,} of {c['n']:,} "
                f"| {t['p50']:.3f} / {t['p99']:.3f} / {t['max']:.3f} |"
            )
        if {"before", "after"} <= by_version.keys():
            b, a = by_version["before"], by_version["after"]
            ratio = b["materialize_s"] / a["materialize_s"]
            if b["finished"] < b["total"]:
                probes = (
                    f"before: {b['total'] - b['finished']:,} runs not finished after "
                    f"{ENGINE_TIMEOUT:.0f} s (its lateness figures cover only those started)"
                )
            else:
                probes = (
                    f"time tickers p99: {b['ticker_lateness']['p99']:.2f} s -> "
                    f"{a['ticker_lateness']['p99']:.3f} s"
                )
            lines.append(
                f"| {store} | **after vs before** | **{ratio:.1f}x faster** | | | | {probes} |"
            )
    lines += [
        "",
        "Lateness is a run's start time minus its due time, read from the rows "
        "(`executed_at - execution_time`); a run more than 1 s late ends DUE_DONE. "
        f"The cron runs' lateness includes draining {args.crons:,} no-op jobs on one node "
        "(64 slots); the time tickers due meanwhile show whether claims wait for the "
        "crons to be materialized (HIGH priority, they are claimed before the cron runs "
        f"as soon as they are due). The engine phase stops after {ENGINE_TIMEOUT:.0f} s: "
        "rows not started by then are not in the lateness figures (see runs finished).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="URL")
    parser.add_argument("--crons", type=int, default=10_000)
    parser.add_argument("--tickers", type=int, default=200)
    parser.add_argument("--spread", type=float, default=2.0)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--stores", default="postgresql,sqlite")
    parser.add_argument("--versions", default="before,after,lead")
    parser.add_argument("--lead", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--quick", action="store_true", help="small numbers, no results file")
    args = parser.parse_args()
    if args.child:
        record = asyncio.run(child(args.child, args.crons, args.tickers, args.spread, args.lead))
        print(json.dumps(record))
        return
    if args.quick:
        args.crons, args.tickers = 1_000, 50
    sys.path.insert(0, str(HERE))
    results: dict[str, dict[str, Record]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        here = ROOT / "src"
        versions = {
            "before": ("before", extract_baseline(args.baseline, Path(tmp)), 0.0),
            "after": ("after", here, 0.0),
            "lead": (f"after, cron_lead {CRON_LEAD:g} s", here, CRON_LEAD),
        }
        for store in args.stores.split(","):
            for version in args.versions.split(","):
                name, src, lead = versions[version]
                print(f"{store} {name} ...", file=sys.stderr, flush=True)
                results.setdefault(store, {})[name] = measure(store, src, args, lead)
                print(json.dumps(results[store][name]), file=sys.stderr, flush=True)
    command = "python bench/crons.py " + " ".join(sys.argv[1:])
    text = report(results, args, command.strip())
    print(text)
    if not args.quick:
        RESULTS_MD.write_text(text)
        RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

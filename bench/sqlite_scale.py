"""SQLite at scale: single enqueue rate and worker memory, tickerq against its peers.

Usage: ``python bench/sqlite_scale.py [--enqueue-n N] [--rounds R] [--jobs J] [--out PATH]``
(``make bench-sqlite-scale``). Writes ``bench/sqlite-scale-results.md``.

(a) Single enqueue: N jobs added one call at a time (each call returns once its
    row is committed), on a fresh file, in a fresh process per measurement,
    the implementations interleaved for R rounds; the median rate is reported.
    tickerq: ``await noop.enqueue()`` with the app opened (engine not started).
    huey: ``noop()`` of a ``SqliteHuey`` task, as configured by default
    (SQLite's default ``synchronous=FULL``: an fsync per commit), and with
    ``synchronous=NORMAL``, tickerq's setting (durable when the process dies,
    not on power loss).
(b) Worker RSS: J jobs are enqueued, then the worker command starts and runs
    them; once all have run (and 1 s later) its RSS is read from
    /proc/PID/status. tickerq: ``tickerq run``; huey: ``huey_consumer`` (one
    thread worker); APScheduler 3: a BlockingScheduler with a
    SQLAlchemyJobStore on the file (J date jobs, due now).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENQUEUERS = ("tickerq", "huey", "huey-normal")
WORKERS = ("tickerq", "huey", "apscheduler")


# -- measurements, each in a process of its own -------------------------------------------


def enqueue_rate(impl: str, n: int) -> float:
    """Jobs per second, one enqueue at a time (run in a fresh process)."""
    import asyncio

    import sqlite_scale_apps as apps

    if impl == "tickerq":
        app = apps.tickerq_app()
        noop = app.get_function("noop")

        async def run() -> float:
            await app.open()
            for _ in range(100):  # warm up
                await noop.enqueue()
            began = time.perf_counter()
            for _ in range(n):
                await noop.enqueue()
            elapsed = time.perf_counter() - began
            await app.stop()
            return elapsed

        elapsed = asyncio.run(run())
    else:
        huey = apps.huey_app("NORMAL" if impl == "huey-normal" else None)
        for _ in range(100):
            huey.noop()
        began = time.perf_counter()
        for _ in range(n):
            huey.noop()
        elapsed = time.perf_counter() - began
    return n / elapsed


def fill(impl: str, jobs: int) -> None:
    """Enqueue ``jobs`` for the worker (run in a fresh process)."""
    import asyncio

    import sqlite_scale_apps as apps

    if impl == "tickerq":
        app = apps.tickerq_app()
        noop = app.get_function("noop")

        async def run() -> None:
            await app.open()
            for _ in range(jobs):
                await noop.enqueue()
            await app.stop()

        asyncio.run(run())
    elif impl == "huey":
        huey = apps.huey_app()
        for _ in range(jobs):
            huey.noop()
    else:
        scheduler = apps.aps_scheduler(blocking=False)
        scheduler.start(paused=True)
        now = datetime.now(UTC)
        for _ in range(jobs):
            scheduler.add_job(apps.aps_noop, "date", run_date=now, misfire_grace_time=None)
        scheduler.shutdown(wait=False)


def aps_worker() -> None:
    """APScheduler's worker process: run the stored jobs until stopped."""
    import sqlite_scale_apps as apps

    scheduler = apps.aps_scheduler(blocking=True)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    scheduler.start()


def _left(impl: str, db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        if impl == "tickerq":
            sql = "SELECT count(*) FROM tickerq_tickers WHERE status NOT IN ('DONE', 'DUE_DONE')"
        elif impl == "huey":
            sql = "SELECT count(*) FROM task"
        else:
            sql = "SELECT count(*) FROM apscheduler_jobs"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _memory(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    }


def worker_rss(impl: str, jobs: int, folder: Path) -> dict[str, Any]:
    db = folder / f"{impl}-worker.db"
    env = dict(os.environ, SQLITE_SCALE_DB=str(db), SQLITE_SCALE_IMPL=impl)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, __file__, "--fill", impl, "--jobs", str(jobs)], env=env, check=True
    )
    command = {
        "tickerq": [sys.executable, "-c", "from tickerq.cli import main; main()", "run",
                    "sqlite_scale_apps:app"],
        "huey": [sys.executable, "-m", "huey.bin.huey_consumer", "sqlite_scale_apps.huey",
                 "-w", "1", "-q"],
        "apscheduler": [sys.executable, __file__, "--aps-worker"],
    }[impl]  # fmt: skip
    worker = subprocess.Popen(
        command, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    began = time.perf_counter()
    try:
        while _left(impl, db) > 0:
            if worker.poll() is not None:
                raise RuntimeError(f"{impl} worker exited with {worker.returncode}")
            if time.perf_counter() - began > 600:
                raise RuntimeError(f"{impl} worker: {_left(impl, db)} jobs left after 600 s")
            time.sleep(0.1)
        seconds = time.perf_counter() - began
        time.sleep(1.0)
        memory = _memory(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return {"impl": impl, "jobs": jobs, "seconds": seconds, **memory}


# -- the run ------------------------------------------------------------------------------


def _one_rate(impl: str, n: int, folder: Path, round_: int) -> float:
    db = folder / f"{impl}-enqueue-{round_}.db"
    env = dict(os.environ, SQLITE_SCALE_DB=str(db))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, __file__, "--rate", impl, "--enqueue-n", str(n)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def report(
    args: argparse.Namespace, rates: dict[str, list[float]], rss: list[dict[str, Any]]
) -> str:
    median = {impl: statistics.median(values) for impl, values in rates.items()}
    lines = [
        "# SQLite at scale: single enqueue and worker memory",
        "",
        f"Command: `python bench/sqlite_scale.py --enqueue-n {args.enqueue_n} "
        f"--rounds {args.rounds} --jobs {args.jobs}` (`make bench-sqlite-scale`)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.platform()}  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ",
        "Load: other work may share the machine; every figure below comes from this one run, "
        "the implementations interleaved.",
        "",
        f"## (a) Single enqueue, one call at a time ({args.enqueue_n:,} jobs, "
        f"median of {args.rounds} rounds)",
        "",
        "| implementation | jobs/s (median) | rounds | tickerq / this |",
        "| --- | ---: | --- | ---: |",
    ]
    titles = {
        "tickerq": "tickerq `await fn.enqueue()` (synchronous=NORMAL)",
        "huey": "huey SqliteHuey task call (default: synchronous=FULL)",
        "huey-normal": "huey SqliteHuey task call, synchronous=NORMAL",
    }
    for impl in ENQUEUERS:
        values = ", ".join(f"{v:,.0f}" for v in rates[impl])
        ratio = median["tickerq"] / median[impl]
        lines.append(f"| {titles[impl]} | {median[impl]:,.0f} | {values} | {ratio:.2f}x |")
    lines += [
        "",
        f"Target: >= 5,000/s and ahead of huey-SQLite: tickerq {median['tickerq']:,.0f}/s, "
        f"{median['tickerq'] / median['huey']:.2f}x huey (default), "
        f"{median['tickerq'] / median['huey-normal']:.2f}x huey (NORMAL).",
        "",
        f"## (b) Worker RSS after running {args.jobs:,} jobs",
        "",
        "| worker | run time s | VmRSS MB | RssAnon MB | RssFile MB | peak (VmHWM) MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rss:
        lines.append(
            f"| {r['impl']} | {r['seconds']:.1f} | {r['VmRSS']:.1f} | {r['RssAnon']:.1f} | "
            f"{r['RssFile']:.1f} | {r['VmHWM']:.1f} |"
        )
    lines += [
        "",
        "RssFile counts shared libraries and the pages of files mapped into the process "
        "(tickerq's SQLite connections use no mmap: mmap_size=0).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enqueue-n", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "sqlite-scale-results.md")
    parser.add_argument("--rate", choices=ENQUEUERS, help=argparse.SUPPRESS)
    parser.add_argument("--fill", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--aps-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rate:
        print(enqueue_rate(args.rate, args.enqueue_n))
        return
    if args.fill:
        fill(args.fill, args.jobs)
        return
    if args.aps_worker:
        aps_worker()
        return
    rates: dict[str, list[float]] = {impl: [] for impl in ENQUEUERS}
    with tempfile.TemporaryDirectory(prefix="sqlite-scale-") as tmp:
        folder = Path(tmp)
        for round_ in range(args.rounds):
            for impl in ENQUEUERS:
                rates[impl].append(_one_rate(impl, args.enqueue_n, folder, round_))
                print(f"enqueue {impl} round {round_ + 1}: {rates[impl][-1]:,.0f}/s", flush=True)
        rss = []
        for impl in WORKERS:
            rss.append(worker_rss(impl, args.jobs, folder))
            print(json.dumps(rss[-1]), flush=True)
    text = report(args, rates, rss)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

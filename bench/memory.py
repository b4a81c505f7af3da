"""The memory store at scale: bounded RSS, enqueue with many crons, the sync facade, purge.

Usage: python bench/memory.py [--jobs 1000000] [--history-limit 100000] [--crons 10000]
       [--enqueues 20000] [--waiting 1000000] [--ended 50000] [--repeat 3]
       [--compare-src DIR [--compare-label TEXT]] [--skip-rss]

(a) RSS of a process running ``--jobs`` no-op jobs through the engine, sampled
    every tenth, with ``history_limit`` and without (the baseline);
(b) enqueue rate (each followed by a yield, so the engine reacts to every
    wake-up, as under a web server) with ``--crons`` crons registered vs none;
(c) ``app.sync.enqueue`` from a thread vs ``await fn.enqueue`` on the loop:
    call rate and end-to-end rate (until every job has run);
(d) retention purge behind ``--waiting`` waiting rows: cost per purged row and
    the longest the event loop was held (a task measures its own wake-up lag).

Every measurement runs in a fresh subprocess; (b) and (c) are repeated
``--repeat`` times interleaved and the best run is kept (the machine is shared).
With ``--compare-src DIR`` (b)-(d) also run against another source tree (for
example the code before this change) in the same run. Writes
bench/memory-results.md next to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / 1e6


def _app(limit: Any = "default", **kwargs: Any) -> Any:
    from tickerq import TickerQ
    from tickerq.stores import MemoryStore

    try:
        store = MemoryStore() if limit == "default" else MemoryStore(history_limit=limit)
    except TypeError:  # a tree from before history_limit: it kept every row
        if limit is not None:
            raise
        store = MemoryStore()
    app = TickerQ(store, **kwargs)

    @app.function()
    async def noop() -> None:
        return None

    return app


# -- children: one measurement each, printed as JSON -----------------------------------------


async def child_rss(jobs: int, limit: int | None, batch: int = 1000) -> dict[str, Any]:
    from tickerq.managers import TimeTickerSpec

    app = _app(limit, max_concurrency=64)
    specs = [TimeTickerSpec(function="noop")] * batch
    every = max(jobs // 10, batch)
    samples = []
    started = time.perf_counter()
    async with app:
        done = 0
        while done < jobs:
            await app.time_tickers.add_many(specs)
            await app.engine.wait_idle()
            done += batch
            if done % every == 0:
                samples.append((done, round(rss_mb(), 1), len(app.store._rows)))
    return {"samples": samples, "seconds": time.perf_counter() - started}


async def child_crons(crons: int, enqueues: int) -> dict[str, Any]:
    app = _app()
    noop = app.get_function("noop")
    async with app:
        for _ in range(crons):
            await app.cron_tickers.add("noop", "0 0 1 1 *")  # never due during the run
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        for _ in range(enqueues):
            await noop.enqueue()
            await asyncio.sleep(0)  # let the engine react, as a web server's loop would
        await app.engine.wait_idle()
        elapsed = time.perf_counter() - started
    return {"rate": enqueues / elapsed}


async def child_async_enqueue(enqueues: int) -> dict[str, Any]:
    app = _app()
    noop = app.get_function("noop")
    async with app:
        started = time.perf_counter()
        for _ in range(enqueues):
            await noop.enqueue()
        called = time.perf_counter() - started
        await app.engine.wait_idle()
        done = time.perf_counter() - started
    return {"calls": enqueues / called, "end_to_end": enqueues / done}


def child_sync_enqueue(enqueues: int) -> dict[str, Any]:
    app = _app()
    noop = app.get_function("noop")
    app.sync.start()
    try:
        started = time.perf_counter()
        for _ in range(enqueues):
            app.sync.enqueue(noop)
        called = time.perf_counter() - started
        app.sync.run(app.engine.wait_idle())
        done = time.perf_counter() - started
        assert app.sync.run(app.time_tickers.count()) == enqueues
    finally:
        app.sync.stop()
    return {"calls": enqueues / called, "end_to_end": enqueues / done}


async def child_purge(waiting: int, ended: int, batch: int = 10_000) -> dict[str, Any]:
    from tickerq.models import TimeTicker

    app = _app(None)
    store = app.store
    now = datetime.now(UTC)
    later = now + timedelta(days=30)
    for start in range(0, waiting, batch):
        await store.add_time_tickers(
            [
                TimeTicker(
                    id=uuid4(),
                    function="noop",
                    execution_time=later,
                    created_at=now,
                    updated_at=now,
                )
                for _ in range(min(batch, waiting - start))
            ]
        )
    lags: list[float] = []
    async with app:
        noop = app.get_function("noop")
        for start in range(0, ended, 1000):
            for _ in range(min(1000, ended - start)):
                await noop.enqueue()
            await app.engine.wait_idle()
        stored = len(store._rows)
        loop = asyncio.get_running_loop()
        running = True

        async def watch() -> None:
            while running:
                before = loop.time()
                await asyncio.sleep(0)
                lags.append(loop.time() - before)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.05)
        lags.clear()
        retention = app.engine.options.retention or 0.0
        started = time.perf_counter()
        await app.engine._purge(app.clock.now() + timedelta(seconds=retention + 1))
        elapsed = time.perf_counter() - started
        purge_lags = list(lags)
        lags.clear()  # the same span with nothing to do: the machine's noise floor
        await asyncio.sleep(max(elapsed, 0.2))
        running = False
        await watcher
        purged = stored - len(store._rows)
    return {
        "purged": purged,
        "us_per_row": elapsed / max(purged, 1) * 1e6,
        "max_lag_ms": max(purge_lags, default=0.0) * 1000,
        "idle_max_lag_ms": max(lags, default=0.0) * 1000,
        "seconds": elapsed,
    }


def run_child(argv: list[str]) -> None:
    kind, args = argv[0], [int(a) if a != "None" else None for a in argv[1:]]
    if kind == "rss":
        result = asyncio.run(child_rss(*args))  # type: ignore[arg-type]
    elif kind == "crons":
        result = asyncio.run(child_crons(*args))  # type: ignore[arg-type]
    elif kind == "async":
        result = asyncio.run(child_async_enqueue(*args))  # type: ignore[arg-type]
    elif kind == "sync":
        result = child_sync_enqueue(*args)  # type: ignore[arg-type]
    elif kind == "purge":
        result = asyncio.run(child_purge(*args))  # type: ignore[arg-type]
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(result))


# -- the parent ---------------------------------------------------------------------------------


def measure(src: Path, *argv: Any) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, argv)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"{argv} on {src} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def best(src: Path, repeat: int, key: str, *argv: Any) -> dict[str, Any]:
    runs = [measure(src, *argv) for _ in range(repeat)]
    return max(runs, key=lambda r: float(r[key]))


def flatness(samples: list[list[Any]], warm: int) -> tuple[float, float, float]:
    """(min MB, max MB, max/min) over the samples taken after ``warm`` jobs."""
    after = [s[1] for s in samples if s[0] > warm] or [s[1] for s in samples]
    return min(after), max(after), max(after) / min(after)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--history-limit", type=int, default=100_000)
    parser.add_argument("--crons", type=int, default=10_000)
    parser.add_argument("--enqueues", type=int, default=20_000)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--ended", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare-src", type=Path, default=None)
    parser.add_argument("--compare-label", default=None, help="what the compared tree is")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    command = "python bench/memory.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()
    trees = [("this tree", SRC)]
    if args.compare_src is not None:
        label = args.compare_label or str(args.compare_src)
        trees.append((f"compared: {label}", args.compare_src.resolve()))
    lines = [
        "# Memory store at scale",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, {_cpu()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average at start "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} (the machine is shared: rates are noisy)",
        f"- each figure from a fresh subprocess; rates: best of {args.repeat} interleaved runs",
        "",
    ]
    if not args.skip_rss:
        lines += _rss_section(args)
    for name, src in trees:
        lines += [f"## {name}", ""]
        lines += _rate_sections(args, src)
    text = "\n".join(lines) + "\n"
    HERE.joinpath("memory-results.md").write_text(text)
    print(text)


def _rss_section(args: argparse.Namespace) -> list[str]:
    limit = args.history_limit
    bounded = measure(SRC, "rss", args.jobs, limit)
    baseline = measure(SRC, "rss", args.jobs, None)
    warm = 2 * limit
    lo, hi, ratio = flatness(bounded["samples"], warm)
    blo, bhi, bratio = flatness(baseline["samples"], warm)
    out = [
        f"## (a) RSS over {args.jobs:,} no-op jobs through the engine",
        "",
        f"Sampled every {args.jobs // 10:,} jobs; 'flat' is max/min after the first "
        f"{warm:,} jobs (warm-up: the history fills to its limit). Target: within +-10%.",
        "",
        "| jobs | RSS MB, history_limit="
        f"{limit:,} | rows kept | RSS MB, no limit (baseline) | rows kept |",
        "|---:|---:|---:|---:|---:|",
    ]
    for (jobs, mb, rows), (_, bmb, brows) in zip(
        bounded["samples"], baseline["samples"], strict=False
    ):
        out.append(f"| {jobs:,} | {mb:.1f} | {rows:,} | {bmb:.1f} | {brows:,} |")
    verdict = "PASS" if ratio <= 1.10 else "FAIL"
    out += [
        "",
        f"- with the limit: {lo:.1f}-{hi:.1f} MB after warm-up, max/min **{ratio:.3f}** "
        f"({verdict}); run took {bounded['seconds']:.0f} s",
        f"- baseline: {blo:.1f}-{bhi:.1f} MB after warm-up, max/min {bratio:.3f}; "
        f"final RSS with the limit / baseline: "
        f"**{bounded['samples'][-1][1] / baseline['samples'][-1][1]:.3f}**",
        "",
    ]
    return out


def _rate_sections(args: argparse.Namespace, src: Path) -> list[str]:
    crons, enqueues, repeat = args.crons, args.enqueues, args.repeat
    zero, many = [], []
    asyncs, syncs = [], []
    for _ in range(repeat):  # interleaved, so a busy spell hits both sides
        zero.append(measure(src, "crons", 0, enqueues))
        many.append(measure(src, "crons", crons, enqueues))
        asyncs.append(measure(src, "async", enqueues))
        syncs.append(measure(src, "sync", enqueues))
    z = max(r["rate"] for r in zero)
    m = max(r["rate"] for r in many)
    a_calls = max(r["calls"] for r in asyncs)
    a_e2e = max(r["end_to_end"] for r in asyncs)
    s_calls = max(r["calls"] for r in syncs)
    s_e2e = max(r["end_to_end"] for r in syncs)
    purge = measure(src, "purge", args.waiting, args.ended)
    return [
        f"### (b) enqueue with {crons:,} crons vs none ({enqueues:,} enqueues, engine running)",
        "",
        "| crons | enqueues/s |",
        "|---:|---:|",
        f"| 0 | {z:,.0f} |",
        f"| {crons:,} | {m:,.0f} |",
        "",
        f"ratio {crons:,} crons / 0 crons: **{m / z:.3f}** (target >= 0.9)",
        "",
        f"### (c) app.sync.enqueue vs await fn.enqueue ({enqueues:,} jobs, engine running)",
        "",
        "| call | calls/s | end to end (all jobs run)/s |",
        "|---|---:|---:|",
        f"| `await fn.enqueue()` on the loop | {a_calls:,.0f} | {a_e2e:,.0f} |",
        f"| `app.sync.enqueue(fn)` from a thread | {s_calls:,.0f} | {s_e2e:,.0f} |",
        "",
        f"ratio sync / async: calls **{s_calls / a_calls:.3f}**, "
        f"end to end **{s_e2e / a_e2e:.3f}**",
        "",
        f"### (d) retention purge behind {args.waiting:,} waiting rows",
        "",
        f"{purge['purged']:,} ended rows purged by the engine's purge in "
        f"{purge['seconds']:.2f} s: **{purge['us_per_row']:.1f} us per row**; "
        f"longest the loop was held: **{purge['max_lag_ms']:.2f} ms** (the same span "
        f"idle, the machine's noise floor: {purge.get('idle_max_lag_ms', 0.0):.2f} ms)",
        "",
    ]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()

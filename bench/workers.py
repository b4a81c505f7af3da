"""One benchmark measurement, run in a fresh process by ``bench/run.py``.

Usage: ``python bench/workers.py IMPL WORKLOAD [--n N] [--concurrency C] [--profile PATH]``

It prints one JSON object on its last stdout line: the figures of that
measurement and the peak RSS of this process.

IMPL is one of:

- ``tickerq``: tickerq with its in-memory store and an ``async def`` job.
- ``aps-async``: APScheduler 3 ``AsyncIOScheduler`` as configured by default
  (``MemoryJobStore``, ``AsyncIOExecutor``) with an ``async def`` job, which that
  executor runs as a task on the event loop.
- ``aps-pool``: ``AsyncIOScheduler`` with APScheduler's own default thread pool
  (``apscheduler.executors.pool.ThreadPoolExecutor()``, 10 threads) as the
  default executor, and a plain ``def`` job.

WORKLOAD is one of ``drain``, ``enqueue``, ``enqueue-future`` (tickerq only)
and ``lateness``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import resource
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from tickerq import TickerContext, TickerQ

IMPLS = ("tickerq", "aps-async", "aps-pool")
WORKLOADS = ("drain", "enqueue", "enqueue-future", "lateness")

Result = dict[str, Any]


class BenchError(RuntimeError):
    """A measurement that did not do what it was asked (lost jobs, timeout)."""


# -- helpers -----------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def lateness_figures(lateness_s: list[float]) -> Result:
    """p50/p99/max (and min, mean) of start lateness, in milliseconds."""
    ms = sorted(x * 1000.0 for x in lateness_s)
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1] if ms else math.nan,
        "min_ms": ms[0] if ms else math.nan,
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
    }


def due_times(n: int, spread: float, lead: float) -> list[float]:
    """``n`` epoch times spread uniformly over ``spread`` s, starting ``lead`` s from now."""
    t0 = time.time() + lead
    step = spread / max(n - 1, 1)
    return [t0 + i * step for i in range(n)]


# -- tickerq -----------------------------------------------------------------------


async def tickerq_drain(n: int, concurrency: int, profiler: cProfile.Profile | None) -> Result:
    app = TickerQ(max_concurrency=concurrency)

    @app.function()
    async def noop() -> None:
        return None

    await app.open()
    for _ in range(n):
        await noop.enqueue()
    if profiler is not None:
        profiler.enable()
    t_start = time.perf_counter()
    await app.start()
    await app.engine.wait_idle()
    elapsed = time.perf_counter() - t_start
    if profiler is not None:
        profiler.disable()
    finished = await app.time_tickers.count(status=["DONE", "DUE_DONE"])
    due_done = await app.time_tickers.count(status="DUE_DONE")
    await app.stop()
    if finished != n:
        raise BenchError(f"tickerq drain: {finished} of {n} tickers DONE/DUE_DONE")
    return {"seconds": elapsed, "rate": n / elapsed, "finished": finished, "due_done": due_done}


async def tickerq_enqueue(n: int, concurrency: int, future: bool) -> Result:
    app = TickerQ(max_concurrency=concurrency)

    @app.function()
    async def noop() -> None:
        return None

    await app.open()  # the engine is not started: this measures adding only
    if future:
        at = datetime.now(UTC) + timedelta(hours=1)
        t_start = time.perf_counter()
        for _ in range(n):
            await noop.schedule(at=at)
    else:
        t_start = time.perf_counter()
        for _ in range(n):
            await noop.enqueue()
    await asyncio.sleep(0)
    elapsed = time.perf_counter() - t_start
    stored = await app.time_tickers.count()
    await app.stop()
    if stored != n:
        raise BenchError(f"tickerq enqueue: {stored} of {n} tickers stored")
    return {"seconds": elapsed, "rate": n / elapsed}


async def tickerq_lateness(n: int, concurrency: int, spread: float, lead: float) -> Result:
    app = TickerQ(max_concurrency=concurrency)
    lateness: list[float] = []
    all_started = asyncio.Event()

    @app.function()
    async def probe(ctx: TickerContext[float]) -> None:
        lateness.append(time.time() - ctx.request)
        if len(lateness) >= n:
            all_started.set()

    await app.start()
    for due in due_times(n, spread, lead):
        await probe.schedule(due, at=datetime.fromtimestamp(due, UTC))
    await asyncio.wait_for(all_started.wait(), timeout=lead + spread + 30)
    await app.engine.wait_idle()
    await app.stop()
    return lateness_figures(lateness)


# -- APScheduler 3 -------------------------------------------------------------------


def aps_scheduler(impl: str) -> Any:
    """An AsyncIOScheduler: default setup, or APScheduler's 10-thread pool as executor."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

    if impl == "aps-pool":
        from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]

        return AsyncIOScheduler(executors={"default": ThreadPoolExecutor()})
    return AsyncIOScheduler()


async def _aps_async_noop() -> None:
    return None


def _aps_sync_noop() -> None:
    return None


def aps_noop(impl: str) -> Callable[[], Any]:
    return _aps_sync_noop if impl == "aps-pool" else _aps_async_noop


class Completions:
    """Counts EVENT_JOB_EXECUTED events (from the loop or from pool threads)."""

    def __init__(self, target: int, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.count = 0
        self.errors = 0
        self.finished_at = 0.0
        self._lock = threading.Lock()
        self._loop = loop
        self.done = asyncio.Event()

    def on_event(self, event: Any) -> None:
        with self._lock:
            if getattr(event, "exception", None) is not None:
                self.errors += 1
            self.count += 1
            if self.count != self.target:
                return
            self.finished_at = time.perf_counter()
        self._loop.call_soon_threadsafe(self.done.set)


async def aps_drain(impl: str, n: int) -> Result:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED  # type: ignore[import-untyped]

    loop = asyncio.get_running_loop()
    scheduler = aps_scheduler(impl)
    counter = Completions(n, loop)
    scheduler.add_listener(counter.on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    func = aps_noop(impl)
    # Started paused, so add_job puts the jobs straight into the job store; the
    # clock starts at resume(), the moment the scheduler may run them (tickerq's
    # tickers are likewise in its store before its engine starts).
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    for _ in range(n):
        scheduler.add_job(func, "date", run_date=now, misfire_grace_time=None, coalesce=False)
    t_start = time.perf_counter()
    scheduler.resume()
    await asyncio.wait_for(counter.done.wait(), timeout=300)
    elapsed = counter.finished_at - t_start
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)
    if counter.count != n or counter.errors:
        raise BenchError(f"{impl} drain: {counter.count} of {n} ran, {counter.errors} errors")
    return {"seconds": elapsed, "rate": n / elapsed, "finished": counter.count}


async def aps_enqueue(impl: str, n: int) -> Result:
    scheduler = aps_scheduler(impl)
    func = aps_noop(impl)
    scheduler.start()  # running: add_job goes to the job store (and wakes the scheduler)
    at = datetime.now(UTC) + timedelta(hours=1)
    t_start = time.perf_counter()
    for _ in range(n):
        scheduler.add_job(func, "date", run_date=at, misfire_grace_time=None, coalesce=False)
    await asyncio.sleep(0)
    elapsed = time.perf_counter() - t_start
    stored = len(scheduler.get_jobs())
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)
    if stored != n:
        raise BenchError(f"{impl} enqueue: {stored} of {n} jobs stored")
    return {"seconds": elapsed, "rate": n / elapsed}


async def aps_lateness(impl: str, n: int, spread: float, lead: float) -> Result:
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    all_started = asyncio.Event()
    lock = threading.Lock()

    def record(due: float) -> None:
        late = time.time() - due
        with lock:
            lateness.append(late)
            if len(lateness) == n:
                loop.call_soon_threadsafe(all_started.set)

    async def async_probe(due: float) -> None:
        record(due)

    scheduler = aps_scheduler(impl)
    func: Callable[[float], Any] = record if impl == "aps-pool" else async_probe
    scheduler.start()
    for due in due_times(n, spread, lead):
        scheduler.add_job(
            func,
            "date",
            run_date=datetime.fromtimestamp(due, UTC),
            args=[due],
            misfire_grace_time=None,
            coalesce=False,
        )
    await asyncio.wait_for(all_started.wait(), timeout=lead + spread + 30)
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0.05)
    return lateness_figures(lateness)


# -- entry point ---------------------------------------------------------------------


def measure(
    args: argparse.Namespace, profiler: cProfile.Profile | None
) -> Coroutine[Any, Any, Result]:
    impl, workload, n, conc = args.impl, args.workload, args.n, args.concurrency
    if impl == "tickerq":
        if workload == "drain":
            return tickerq_drain(n, conc, profiler)
        if workload in ("enqueue", "enqueue-future"):
            return tickerq_enqueue(n, conc, future=workload == "enqueue-future")
        return tickerq_lateness(n, conc, args.spread, args.lead)
    if workload == "drain":
        return aps_drain(impl, n)
    if workload == "enqueue":
        return aps_enqueue(impl, n)
    if workload == "lateness":
        return aps_lateness(impl, n, args.spread, args.lead)
    raise SystemExit(f"workload {workload!r} is not defined for {impl}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one benchmark measurement.")
    parser.add_argument("impl", choices=IMPLS)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--n", type=int, default=100_000, help="number of jobs")
    parser.add_argument("--concurrency", type=int, default=16, help="tickerq max_concurrency")
    parser.add_argument("--spread", type=float, default=5.0, help="lateness: seconds of dues")
    parser.add_argument("--lead", type=float, default=0.5, help="lateness: first due after")
    parser.add_argument(
        "--profile", metavar="PATH", help="tickerq drain: cProfile the engine, stats to PATH"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None and (args.impl, args.workload) != ("tickerq", "drain"):
        raise SystemExit("--profile is supported for the tickerq drain only")
    result = asyncio.run(measure(args, profiler))
    if profiler is not None:
        profiler.dump_stats(args.profile)
    record: Result = {
        "impl": args.impl,
        "workload": args.workload,
        "n": args.n,
        "concurrency": args.concurrency if args.impl == "tickerq" else None,
        **result,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

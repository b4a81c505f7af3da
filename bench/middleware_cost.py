"""What middleware costs: the in-memory drain of ``bench/workers.py`` (N no-op
``async def`` jobs enqueued, then run by one engine) with and without middleware.

Usage::

    python bench/middleware_cost.py [--n 100000] [--rounds 3] [--modes none,prometheus]

Each measurement runs in a fresh process (``--one MODE``); the modes alternate
round by round so a machine that slows down meanwhile weighs on each alike. It
prints a Markdown table (median rate per mode, and its cost against ``none``)
and, on its last line, the figures as JSON.

Modes (``MIDDLEWARE``): ``none``; ``passthrough``, one middleware whose
``on_execute`` only calls on (the price of the pipeline itself); ``prometheus``,
``tickerq.contrib.prometheus.PrometheusMiddleware`` on a registry of its own.
More modes (tracing, logging) go in ``MIDDLEWARE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tickerq import TickerContext, TickerQ
from tickerq.middleware import ExecuteNext, Middleware


class Passthrough(Middleware):
    async def on_execute(self, ctx: TickerContext[Any], call_next: ExecuteNext) -> Any:
        return await call_next(ctx)


def _prometheus() -> list[object]:
    from prometheus_client import CollectorRegistry

    from tickerq.contrib.prometheus import PrometheusMiddleware

    return [PrometheusMiddleware(CollectorRegistry())]


MIDDLEWARE: dict[str, Callable[[], list[object]]] = {
    "none": list,
    "passthrough": lambda: [Passthrough()],
    "prometheus": _prometheus,
}


async def drain(n: int, concurrency: int, mode: str) -> dict[str, Any]:
    app = TickerQ(max_concurrency=concurrency, middleware=MIDDLEWARE[mode]())

    @app.function()
    async def noop() -> None:
        return None

    await app.open()
    for _ in range(n):
        await noop.enqueue()
    started = time.perf_counter()
    await app.start()
    await app.engine.wait_idle()
    elapsed = time.perf_counter() - started
    finished = await app.time_tickers.count(status=["DONE", "DUE_DONE"])
    await app.stop()
    if finished != n:
        raise RuntimeError(f"{mode}: {finished} of {n} jobs finished")
    return {"mode": mode, "n": n, "seconds": elapsed, "rate": n / elapsed}


def one(mode: str, n: int, concurrency: int) -> dict[str, Any]:
    """One measurement in a fresh process."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__)),
            "--one",
            mode,
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MIDDLEWARE))
    parser.add_argument("--one", choices=sorted(MIDDLEWARE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(drain(args.n, args.concurrency, args.one))))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MIDDLEWARE)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; known: {sorted(MIDDLEWARE)}")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rates[mode].append(one(mode, args.n, args.concurrency)["rate"])
    medians = {m: statistics.median(r) for m, r in rates.items()}
    base = medians.get("none")
    print(f"In-memory drain of {args.n:,} no-op jobs, median of {args.rounds} run(s)\n")
    print("| middleware | jobs/s | cost vs none |")
    print("|---|---:|---:|")
    for mode, rate in medians.items():
        cost = "" if base is None or mode == "none" else f"{(base / rate - 1) * 100:+.1f}%"
        print(f"| {mode} | {rate:,.0f} | {cost} |")
    print(json.dumps({"n": args.n, "rounds": args.rounds, "rates": rates, "median": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

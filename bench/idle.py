"""Idle CPU: an app whose only work is a cron due in an hour, for 10 s.

Usage: python bench/idle.py [--seconds 10]. Writes bench/idle.md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tickerq import TickerQ


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(seconds: float) -> tuple[float, float]:
    app = TickerQ()
    due = datetime.now(UTC) + timedelta(hours=1)

    @app.function()
    async def hourly() -> None:
        pass

    async with app:
        await app.cron_tickers.add("hourly", f"{due.minute} {due.hour} * * *")
        await asyncio.sleep(0.2)
        wall0, cpu0 = time.perf_counter(), cpu_seconds()
        await asyncio.sleep(seconds)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    cpu, wall = asyncio.run(measure(args.seconds))
    share = 100.0 * cpu / wall
    verdict = "PASS" if share < 1.0 else "FAIL"
    text = (
        "# Idle CPU\n\n"
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        "- command: `python bench/idle.py`\n"
        "- app: memory store, one cron ticker due in an hour, nothing else\n\n"
        f"| wall s | CPU ms | CPU % | target < 1 % |\n|---:|---:|---:|---|\n"
        f"| {wall:.1f} | {cpu * 1000:.1f} | {share:.3f} | {verdict} |\n"
    )
    Path(__file__).with_name("idle.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""An idle app sleeps: no busy polling while nothing is due."""

from __future__ import annotations

import asyncio
import resource

from tickerq import TickerQ


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_idle_app_uses_almost_no_cpu() -> None:
    app = TickerQ()

    @app.function(cron="0 * * * *")
    async def hourly() -> None:
        pass

    async with app:
        await asyncio.sleep(0.05)  # let start-up settle
        before = cpu_seconds()
        await asyncio.sleep(1.0)
        used = cpu_seconds() - before
    # Busy polling would burn most of the second; sleeping costs nothing measurable.
    assert used < 0.01, f"idle engine used {used * 1000:.1f} ms of CPU in 1 s"

"""A sample app with no mistakes; `tickerq run` writes a marker file per job."""

from __future__ import annotations

import os
from pathlib import Path

from tickerq import EngineOptions, TickerContext, TickerQ

app = TickerQ(options=EngineOptions(grace_period=2))
MARKERS = Path(os.environ.get("TICKERQ_TEST_MARKERS", "."))


@app.function(cron="* * * * * *")
async def every_second(ctx: TickerContext) -> None:
    (MARKERS / f"cron-{ctx.id}").write_text("ran")


@app.function()
async def greet(ctx: TickerContext[str]) -> None:
    (MARKERS / f"greet-{ctx.request}").write_text("ran")

"""A sample app with three deliberate mistakes, for `tickerq check`."""

from __future__ import annotations

import threading

from tickerq import TickerContext, TickerQ

app = TickerQ()


@app.function(cron="0 25 * * *")  # mistake 1: there is no hour 25
async def nightly() -> None:
    pass


@app.function()
def two_params(ctx: TickerContext, extra: int) -> None:  # mistake 2: bad signature
    pass


@app.function(retries=-1)  # mistake 3: negative retries
async def hopeless(ctx: TickerContext[dict[str, int]]) -> None:
    pass


@app.function()
async def fine(ctx: TickerContext[list[int]]) -> None:
    pass


_unused = threading.Lock

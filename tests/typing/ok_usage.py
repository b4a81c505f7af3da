"""Typing sample: mypy --strict must accept this file (checked by `make typecheck`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tickerq import TickerContext, TickerFunction, TickerQ, TimeTicker

app = TickerQ()


@dataclass
class Email:
    to: str


@app.function("send_email", retries=3, retry_intervals=[10, 60])
def send_email(ctx: TickerContext[Email]) -> None:
    print(ctx.request.to.upper())


@app.function(cron="*/5 * * * *")
async def cleanup() -> None:
    return None


@app.function
async def bare(ctx: TickerContext) -> None:
    print(ctx.request)


handle: TickerFunction[Email] = send_email
no_request: TickerFunction[None] = cleanup


async def use() -> TimeTicker:
    await cleanup.enqueue()
    await bare.enqueue({"anything": [1, 2]})
    return await send_email.schedule(Email(to="a@b.c"), after=timedelta(seconds=5))

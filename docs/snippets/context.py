import asyncio
import time
from dataclasses import dataclass

from tickerq import Priority, Status, TerminateExecution, TickerContext, TickerQ

app = TickerQ()


@dataclass
class Feed:
    url: str


@app.function(priority=Priority.HIGH, timeout=30)
async def import_feed(ctx: TickerContext[Feed]) -> int:
    if not ctx.request.url.startswith("https://"):
        raise TerminateExecution(Status.SKIPPED, f"not an https URL: {ctx.request.url}")
    print(ctx.function, ctx.kind, f"attempt {ctx.attempt}", dict(ctx.headers))
    # Follow-up work goes through the app the job runs in:
    await ctx.app.time_tickers.add("index_feed", request={"url": ctx.request.url})
    return 42  # stored as the ticker's result


@app.function
async def index_feed(ctx: TickerContext[dict]) -> None:
    print("indexing", ctx.request["url"])


@app.function(priority=Priority.LONG_RUNNING)  # a thread of its own, outside the slots
def export(ctx: TickerContext) -> str:
    while not ctx.cancelled:  # a sync job checks for cancellation itself
        time.sleep(0.01)  # ... one chunk of work ...
    ctx.raise_if_cancelled()  # ends the run CANCELLED
    return "finished"


async def main() -> None:
    async with app:
        ok = await import_feed.enqueue(Feed("https://example.com/rss"), headers={"tenant": "acme"})
        bad = await import_feed.enqueue(Feed("ftp://example.com/rss"))
        long = await export.enqueue()
        for ticker_id in (ok.id, bad.id):
            ticker = await app.time_tickers.wait(ticker_id, timeout=10)
            print(ticker.status, ticker.result)
        await asyncio.sleep(0.1)
        await app.time_tickers.cancel(long.id)  # reaches the job wherever it runs
        print((await app.time_tickers.wait(long.id, timeout=10)).status)
    # import_feed TIME attempt 1 {'tenant': 'acme'}
    # indexing https://example.com/rss
    # DONE 42
    # SKIPPED None
    # CANCELLED


if __name__ == "__main__":
    asyncio.run(main())

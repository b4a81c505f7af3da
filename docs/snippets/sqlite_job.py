import asyncio
from dataclasses import dataclass
from datetime import timedelta

from tickerq import Status, TickerContext, TickerQ

app = TickerQ("sqlite:///jobs.db")  # a file next to the script; created on first use


@dataclass
class Email:
    to: str
    subject: str = "Hello"


@app.function(retries=3, retry_intervals=[10, 60, 300], timeout=30)
def send_email(ctx: TickerContext[Email]) -> None:  # a plain def runs in a thread
    print(f"sending {ctx.request.subject!r} to {ctx.request.to} (attempt {ctx.attempt})")


async def main() -> None:
    async with app:
        now = await send_email.enqueue(Email("ada@example.com"))
        later = await send_email.schedule(Email("bob@example.com"), after=timedelta(hours=1))
        await app.time_tickers.wait(now.id, timeout=10)

    # The engine has stopped; what it had not run yet is still in jobs.db.
    await app.open()  # the store only: enough to schedule and inspect
    try:
        waiting = await app.time_tickers.get(later.id)
        assert waiting.status is Status.IDLE
        print("still waiting:", waiting.function, waiting.execution_time)
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())

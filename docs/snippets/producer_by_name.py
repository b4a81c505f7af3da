"""producer_by_name.py: a process without the job code (no ``import jobs``) enqueues
by name; the worker that registered ``send_email`` checks the request."""

import asyncio
import os

from tickerq import TickerQ

app = TickerQ(os.environ.get("TICKERQ_STORE", "sqlite:///jobs.db"))


async def main() -> None:
    await app.open()  # schedules only
    try:
        ticker = await app.enqueue("send_email", {"to": "bob@example.com", "subject": "Hi"})
        print(ticker.function, ticker.status.value, ticker.request)
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())

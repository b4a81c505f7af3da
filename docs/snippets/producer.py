"""producer.py: a web process or script that enqueues work for the worker of jobs.py."""

import asyncio

from jobs import Email, app, send_email


async def signup(address: str) -> None:
    await send_email.enqueue(Email(address, "Welcome"))


async def main() -> None:
    await app.open()  # the store only: the engine is not started, the worker runs the jobs
    try:
        await signup("ada@example.com")
        waiting = await app.time_tickers.count(status="IDLE", function="send_email")
        print(waiting, "email(s) waiting for the worker")
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())

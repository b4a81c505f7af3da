import asyncio

from tickerq import TickerQ

app = TickerQ("sqlite:///jobs.db")  # pauses are stored: every node sharing the store obeys them


@app.function
async def send_email() -> None: ...


async def main() -> None:
    async with app:
        await app.pauses.pause("send_email", by="alice")  # no send_email job starts anywhere
        held = await send_email.enqueue()  # enqueueing goes on; the ticker waits, IDLE
        await asyncio.sleep(1)
        print((await app.time_tickers.get(held.id)).status)  # IDLE
        print((await app.pauses.get("send_email")).paused_by)  # alice ("*": the cluster's pause)
        print(await app.pauses.resume("send_email"))  # True: it was paused
        print((await app.time_tickers.wait(held.id, timeout=10)).status)  # DUE_DONE (late)

        await app.pauses.pause_cluster(by="deploy")  # no job at all starts anywhere
        print([p.function for p in await app.pauses.query()])  # ['*']
        await app.pauses.resume_cluster()
        # From code that is not async: app.sync.pauses.pause("send_email"), and so on.


if __name__ == "__main__":
    asyncio.run(main())

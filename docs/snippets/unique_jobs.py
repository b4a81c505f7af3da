import asyncio
from dataclasses import dataclass

from tickerq import DuplicateJobError, EnqueueOutcome, TickerContext, TickerQ

app = TickerQ("sqlite:///jobs.db")  # unique keys hold across every node sharing the store


@dataclass
class Shop:
    shop_id: int


@dataclass
class Account:
    account_id: int
    balance: int


@app.function
async def rebuild_index(ctx: TickerContext[Shop]) -> None: ...


@app.function
async def sync_account(ctx: TickerContext[Account]) -> None: ...


@app.function
async def charge(ctx: TickerContext[int]) -> None: ...


async def main() -> None:
    await app.open()  # no engine here: the tickers wait, and hold their keys
    try:
        # keep (the default): while one waits or runs, enqueue stores nothing
        first = await rebuild_index.enqueue(Shop(7), unique_key="index-7")
        again = await rebuild_index.enqueue(Shop(7), unique_key="index-7")
        print(first.enqueued, again.enqueued, again.id == first.id)  # ADDED KEPT True

        # replace: debounce; each call moves the one waiting ticker 30 s on, with the latest request
        for balance in (10, 20, 30):
            latest = await sync_account.schedule(
                Account(1, balance), after=30, unique_key="account-1", on_conflict="replace"
            )
        print(latest.enqueued is EnqueueOutcome.REPLACED, latest.request)
        # True {'account_id': 1, 'balance': 30}
        print(await app.time_tickers.count(function="sync_account"))  # 1

        # error: refuse
        held = await charge.enqueue(42, unique_key="order-42", on_conflict="error")
        try:
            await charge.enqueue(42, unique_key="order-42", on_conflict="error")
        except DuplicateJobError as exc:
            print(exc.function, exc.unique_key, exc.holder_id == held.id)  # charge order-42 True
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())

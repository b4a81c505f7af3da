import asyncio
from dataclasses import dataclass

from tickerq import TickerContext, TickerQ

app = TickerQ()  # the memory store: nothing to set up, nothing kept after exit


@dataclass
class Greeting:
    name: str


@app.function(retries=2)
async def greet(ctx: TickerContext[Greeting]) -> str:
    return f"Hello, {ctx.request.name}!"


async def main() -> None:
    async with app:  # opens the store and starts the engine
        ticker = await greet.enqueue(Greeting("Ada"))
        done = await app.time_tickers.wait(ticker.id, timeout=10)
        print(done.status, done.result)  # DONE Hello, Ada!


if __name__ == "__main__":
    asyncio.run(main())

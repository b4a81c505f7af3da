"""Two nodes on one store. In production each is its own process (or host, on
PostgreSQL); here both run in one process to show how they share the work."""

import asyncio
import os
from collections import Counter

from tickerq import TickerContext, TickerQ

STORE = os.environ.get("TICKERQ_STORE", "sqlite:///shared.db")  # or postgresql://user@host/db


def make_node(node_id: str) -> TickerQ:
    app = TickerQ(STORE, node_id=node_id, max_concurrency=4)

    @app.function(retries=3)
    async def thumbnail(ctx: TickerContext[dict]) -> str:
        await asyncio.sleep(0.1)  # some I/O
        return ctx.app.node_id  # which node ran it

    return app


async def main() -> None:
    web, worker = make_node("worker-a"), make_node("worker-b")
    async with web, worker:
        fn = web.get_function("thumbnail")
        added = [await fn.enqueue({"image": n}) for n in range(40)]
        done = [await web.time_tickers.wait(t.id, timeout=30) for t in added]
        total = await web.time_tickers.count(status="DONE")
    print(Counter(t.result for t in done))  # e.g. Counter({'worker-a': 21, 'worker-b': 19})
    print(total, "done")  # 40 done


if __name__ == "__main__":
    asyncio.run(main())

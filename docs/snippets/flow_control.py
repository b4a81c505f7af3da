import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tickerq import RateLimit, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance

clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
app = TickerQ(
    "memory://",  # the same on "sqlite:///..." and "postgresql://...", across every node
    clock=clock,
    limits={"smtp": "10/s"},  # named limits, shared by the functions naming them
    rate_limit="2000/m",  # optional: one limit for every function of the app
)
started: Counter[str] = Counter()
running: Counter[str] = Counter()
most_at_once: Counter[str] = Counter()


@dataclass
class Order:
    tenant_id: str


@app.function(rate_limit="100/m")  # this function's own limit
async def call_partner_api(ctx: TickerContext[Order]) -> None:
    started[f"partner {clock.now():%H:%M}"] += 1


@app.function(rate_limit="smtp")  # shares "smtp" with every function naming it
async def send_welcome(ctx: TickerContext[str]) -> None:
    started[f"smtp {clock.now():%H:%M:%S}"] += 1


@app.function(rate_limit=RateLimit(5, per=timedelta(seconds=30)))
async def poll_feed() -> None: ...


@app.function(concurrency_key=lambda order: order.tenant_id, max_per_key=1)
async def rebuild_report(ctx: TickerContext[Order]) -> None:
    tenant = ctx.request.tenant_id
    running[tenant] += 1
    most_at_once[tenant] = max(most_at_once[tenant], running[tenant])
    await asyncio.sleep(0.01)
    running[tenant] -= 1


async def main() -> None:
    async with app:
        for _ in range(150):
            await call_partner_api.enqueue(Order("acme"))
        for n in range(15):
            await send_welcome.enqueue(f"user{n}@example.com")
        for tenant in ("acme", "acme", "acme", "globex", "globex"):
            await rebuild_report.enqueue(Order(tenant))
        await advance(app, timedelta(minutes=1))
    print(sorted(started.items()))
    # [('partner 09:00', 100), ('partner 09:01', 50), ('smtp 09:00:00', 10), ('smtp 09:00:01', 5)]
    print(dict(most_at_once))  # {'acme': 1, 'globex': 1}: one report per tenant at a time


if __name__ == "__main__":
    asyncio.run(main())

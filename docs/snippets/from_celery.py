"""What Celery tasks become: retries, a rate limit, a countdown, a chain with an error link."""

import asyncio
from dataclasses import dataclass

from tickerq import RunCondition, TickerContext, TickerQ, TimeTickerSpec

app = TickerQ()  # no broker: the store is the queue (sqlite:///..., postgresql://...)


@dataclass
class Order:
    id: int
    amount: int


# @celery.task(bind=True, autoretry_for=(IOError,), max_retries=3, rate_limit="10/s")
@app.function(retries=3, retry_intervals=[5, 30, 120], rate_limit="10/s")
async def charge(ctx: TickerContext[Order]) -> str:  # ctx instead of self.request
    if ctx.request.amount <= 0:
        raise ValueError(f"bad amount {ctx.request.amount}")
    return f"charged order {ctx.request.id}"


@app.function
async def ship(ctx: TickerContext[Order]) -> None: ...


@app.function
async def alert(ctx: TickerContext[Order]) -> None: ...


async def main() -> None:
    async with app:
        # charge.delay(order) / charge.apply_async((order,), countdown=60)
        now = await charge.enqueue(Order(1, 30))
        later = await charge.schedule(Order(2, 30), after=60)
        # chain(charge.s(order), ship.s()) with link_error=alert.s()
        spec = TimeTickerSpec(
            function="charge",
            request=Order(3, 30),
            children=[
                TimeTickerSpec(
                    function="ship", request=Order(3, 30), run_condition=RunCondition.ON_SUCCESS
                ),
                TimeTickerSpec(
                    function="alert", request=Order(3, 30), run_condition=RunCondition.ON_FAILURE
                ),
            ],
        )
        _charged, shipped, alerted = await app.time_tickers.add_many([spec])
        # AsyncResult(id).get(timeout=10)
        print((await app.time_tickers.wait(now.id, timeout=10)).result)  # charged order 1
        print((await app.time_tickers.wait(shipped.id, timeout=10)).status)  # DONE
        print((await app.time_tickers.wait(alerted.id, timeout=10)).status)  # SKIPPED
        # celery_app.control.revoke(id)
        print((await app.time_tickers.cancel(later.id)).status)  # CANCELLED


if __name__ == "__main__":
    asyncio.run(main())

import asyncio
from datetime import UTC, datetime

from tickerq import RunCondition, TickerContext, TickerQ, TimeTickerSpec
from tickerq.testing import ManualClock, advance

app = TickerQ(clock=ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)))


@app.function
async def charge(ctx: TickerContext[dict]) -> None:
    if ctx.request["amount"] <= 0:
        raise ValueError(f"nothing to charge: {ctx.request['amount']}")


@app.function
async def ship(ctx: TickerContext[dict]) -> None: ...


@app.function
async def refund_alert(ctx: TickerContext[dict]) -> None: ...


def order_chain(amount: int) -> TimeTickerSpec:
    """charge, then ship if it succeeded, or alert someone if it failed."""
    return TimeTickerSpec(
        function="charge",
        request={"amount": amount},
        children=[
            TimeTickerSpec(function="ship", request={}, run_condition=RunCondition.ON_SUCCESS),
            TimeTickerSpec(
                function="refund_alert",
                request={"amount": amount},
                run_condition=RunCondition.ON_FAILURE,
            ),
        ],
    )


async def main() -> None:
    async with app:
        for amount in (30, 0):
            parent, *children = await app.time_tickers.add_many([order_chain(amount)])
            await advance(app, 1)
            for added in [parent, *children]:
                ticker = await app.time_tickers.get(added.id)
                print(amount, ticker.function, ticker.status)
        # 30 charge DONE
        # 30 ship DONE
        # 30 refund_alert SKIPPED
        # 0 charge FAILED
        # 0 ship SKIPPED
        # 0 refund_alert DONE


if __name__ == "__main__":
    asyncio.run(main())

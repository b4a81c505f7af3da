import asyncio
from dataclasses import dataclass

from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from tickerq import InvalidRequestError, RegistrationError, TickerContext, TickerQ, TickerRouter

app = TickerQ()


@app.function  # registered as "cleanup"
async def cleanup() -> None: ...  # no parameter: no request, no context


@dataclass
class Email:
    to: str


@app.function("send_email", retries=3, timeout=30)
def send_email(ctx: TickerContext[Email]) -> None: ...  # a plain def runs in a thread


class Invoice(BaseModel):
    number: int
    total: float


@app.function
async def bill(ctx: TickerContext[Invoice]) -> dict[str, float]:
    return {"total": ctx.request.total}  # checked against the annotation, stored as JSON


class Ping(TypedDict):
    host: str


@app.function
async def ping(ctx: TickerContext[Ping]) -> None: ...


@app.function
async def anything(ctx: TickerContext) -> None: ...  # any JSON request


billing = TickerRouter(prefix="billing.")  # in another module


@billing.function()
async def refund(ctx: TickerContext[dict]) -> None: ...


app.include_router(billing)


async def main() -> None:
    print(sorted(app.functions))
    # ['anything', 'bill', 'billing.refund', 'cleanup', 'ping', 'send_email']
    try:

        @app.function
        async def two_parameters(a: int, b: int) -> None: ...

    except RegistrationError as exc:
        print(exc)  # function 'two_parameters': takes parameters (a, b); only one parameter, ...
    async with app:
        try:
            await app.time_tickers.add("bill", request={"number": 1, "total": "lots"})
        except InvalidRequestError as exc:
            print(type(exc).__name__)  # refused before anything is stored
        ticker = await bill.enqueue(Invoice(number=2, total=9.5))
        print((await app.time_tickers.wait(ticker.id, timeout=10)).result)  # {'total': 9.5}


if __name__ == "__main__":
    asyncio.run(main())

"""web.py: a FastAPI app that runs the engine and serves the dashboard at /jobs.

Run it with: uvicorn web:api
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tickerq import TickerContext, TickerQ
from tickerq.dashboard import BasicAuth, Permission

jobs = TickerQ("sqlite:///jobs.db")


@jobs.function(retries=3)
async def send_invoice(ctx: TickerContext[dict]) -> None: ...


def hide_secrets(function: str, payload: Any) -> Any:
    """What the dashboard shows of a request or result."""
    if isinstance(payload, dict) and "card_number" in payload:
        return {**payload, "card_number": "****"}
    return payload


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with jobs:  # the engine runs in the web process, stopped gracefully on shutdown
        yield


api = FastAPI(lifespan=lifespan)
api.mount(
    "/jobs",
    jobs.dashboard(
        auth=BasicAuth({"admin": "change-me", "support": "change-me-too"}),
        permissions={"admin": set(Permission), "support": {Permission.VIEW, Permission.OPERATE}},
        redact=hide_secrets,
        title="Shop jobs",
    ),
)


@api.post("/invoices/{number}")
async def create_invoice(number: int) -> dict[str, str]:
    ticker = await send_invoice.enqueue({"number": number, "card_number": "4111 1111 1111 1111"})
    return {"ticker": str(ticker.id)}

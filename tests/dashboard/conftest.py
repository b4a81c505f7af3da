"""Fixtures for the dashboard tests: an app with a few functions on memory or SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tickerq import Priority, TickerContext, TickerQ


@dataclass
class Email:
    to: str
    subject: str = ""


def build_app(store: str) -> TickerQ:
    app = TickerQ(store, node_id="dash-node", max_concurrency=4)

    @app.function(retries=2, retry_intervals=[10, 60])
    def send_email(ctx: TickerContext[Email]) -> None:
        if "fail" in ctx.request.to:
            raise ConnectionError(f"refused <b>{ctx.request.to}</b>")

    @app.function(priority=Priority.HIGH)
    async def charge(ctx: TickerContext[Any]) -> None:
        return None

    @app.function(cron="0 3 * * *", cron_timezone="Europe/Berlin")
    async def nightly() -> None:
        return None

    return app


@pytest.fixture(params=["memory", "sqlite"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TickerQ]:
    store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/dash.db"
    tq = build_app(store)
    await tq.open()
    await tq._seed()
    yield tq
    await tq.stop()


@pytest.fixture
async def memory_app() -> AsyncIterator[TickerQ]:
    tq = build_app("memory://")
    await tq.open()
    await tq._seed()
    yield tq
    await tq.stop()


@pytest.fixture
def make_app() -> Callable[[str], TickerQ]:
    """``make_app(store_url)``: a new app with the test functions (not opened)."""
    return build_app


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def client_for() -> ClientFactory:
    """``client_for(asgi, addr="127.0.0.1", **kwargs)``: an httpx client calling it in-process."""

    def make(asgi: Any, addr: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=asgi, client=(addr, 51000))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost:8787", **kwargs)

    return make


@pytest.fixture
async def client(app: TickerQ, client_for: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app.dashboard()) as c:
        yield c

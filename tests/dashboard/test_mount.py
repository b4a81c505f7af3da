"""Mounted under a sub-path in Starlette, FastAPI and Litestar, links resolve under it."""

from __future__ import annotations

import re
from typing import Any

from tickerq import TickerQ


async def check_mounted(asgi: Any, app: TickerQ, client_for, prefix: str = "/jobs") -> None:
    t = await app.time_tickers.add("charge", request={})
    async with client_for(asgi) as client:
        home = await client.get(prefix + "/")
        assert home.status_code == 200, home.text[:300]
        links = re.findall(r'(?:href|src|action|data-src|data-events)="([^"]+)"', home.text)
        local = [link for link in links if link.startswith("/")]
        assert local and all(link.startswith(prefix + "/") for link in local), local
        for link in {link for link in local if "/static/" in link}:
            assert (await client.get(link)).status_code == 200, link
        assert (await client.get(prefix + "/time-tickers")).status_code == 200
        detail = await client.get(f"{prefix}/time-tickers/{t.id}")
        assert f'action="{prefix}/time-tickers/{t.id}/cancel"' in detail.text
        r = await client.post(f"{prefix}/time-tickers/{t.id}/cancel")
        assert r.status_code == 303 and r.headers["location"] == f"{prefix}/time-tickers/{t.id}"
        api = await client.get(prefix + "/api/time-tickers")
        assert api.status_code == 200 and api.json()["total"] == 1
        doc = (await client.get(prefix + "/api/openapi.json")).json()
        assert doc["servers"] == [{"url": prefix + "/api"}]


async def test_mount_in_starlette(memory_app: TickerQ, client_for) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    host = Starlette(routes=[Mount("/jobs", app=memory_app.dashboard())])
    await check_mounted(host, memory_app, client_for)


async def test_mount_in_fastapi(memory_app: TickerQ, client_for) -> None:
    from fastapi import FastAPI

    host = FastAPI()

    @host.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    host.mount("/admin/jobs", memory_app.dashboard())
    await check_mounted(host, memory_app, client_for, prefix="/admin/jobs")
    async with client_for(host) as client:
        assert (await client.get("/hello")).json() == {"hello": "world"}


async def test_mount_in_litestar(memory_app: TickerQ, client_for) -> None:
    from litestar import Litestar, asgi
    from litestar.types import Receive, Scope, Send

    dash = memory_app.dashboard()

    @asgi("/jobs", is_mount=True, copy_scope=True)
    async def jobs(scope: Scope, receive: Receive, send: Send) -> None:
        await dash(scope, receive, send)  # type: ignore[arg-type]

    host = Litestar(route_handlers=[jobs])
    await check_mounted(host, memory_app, client_for)


async def test_base_path_overrides_root_path(memory_app: TickerQ, client_for) -> None:
    dash = memory_app.dashboard(base_path="/behind/proxy")
    async with client_for(dash) as client:
        html = (await client.get("/")).text
        assert 'href="/behind/proxy/time-tickers"' in html

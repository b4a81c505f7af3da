"""Run an ASGI app in-process as a server would: its lifespan (with state), then requests.

Starlette's TestClient wants httpx2 now; this drives the ASGI lifespan protocol
itself and hands each request a copy of the lifespan state, like uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx


@asynccontextmanager
async def served(
    app: Any, *, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app``'s lifespan, yield an httpx client calling it, then shut it down.

    A failed startup or shutdown raises the app's own exception.
    """
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    task = asyncio.create_task(app(scope, to_app.get, send))

    async def step(kind: str) -> None:
        await to_app.put({"type": f"lifespan.{kind}"})
        getting = asyncio.ensure_future(from_app.get())
        await asyncio.wait([getting, task], return_when=asyncio.FIRST_COMPLETED, timeout=20)
        if not getting.done():
            getting.cancel()
            await task  # ended without answering: raises its error
            raise AssertionError(f"lifespan ended without answering {kind}")
        answer = getting.result()
        if answer["type"].endswith(".failed"):
            await task  # raises the app's exception
            raise AssertionError(answer.get("message", ""))
        assert answer["type"] == f"lifespan.{kind}.complete", answer

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    await step("startup")
    transport = httpx.ASGITransport(app=with_state, client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http
    finally:
        await step("shutdown")
        await task

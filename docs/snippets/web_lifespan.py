"""main.py, running the jobs in the web process, with a lifespan of its own and the dashboard."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

from tickerq.contrib.fastapi import get_tickerq, tickerq_lifespan
from tickerq.dashboard import BasicAuth

from jobs import tq


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with httpx.AsyncClient() as http:  # tickerq is open already
        yield {"http": http}  # request.state.http, next to request.state.tickerq


api = FastAPI(
    lifespan=tickerq_lifespan(
        tq,
        lifespan,
        engine=True,  # this process runs jobs too: one more node
        dashboard="/admin/jobs",
        dashboard_options={"auth": BasicAuth("admin", os.environ["DASHBOARD_PASSWORD"])},
    )
)


@api.get("/ready")
async def ready(request: Request) -> dict[str, bool]:
    return {
        "jobs": get_tickerq(request).engine.running,
        "http": not request.state.http.is_closed,
    }

"""tickerq.contrib.starlette / .fastapi: the lifespan opens and closes the app, runs the
engine only when asked, composes with the user's lifespan, mounts the dashboard, and
routes get the app through the lifespan state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from asgi_server import served
from tickerq import InvalidArgumentError, Status, TickerContext, TickerQ, TickerQError
from tickerq.contrib.fastapi import TickerQDep, get_tickerq, tickerq_lifespan


def make_app() -> TickerQ:
    tq = TickerQ(node_id="web-1")

    @tq.function()
    async def greet(ctx: TickerContext[dict[str, str]]) -> str:
        return f"hello {ctx.request['name']}"

    return tq


def job_routes(api: FastAPI) -> None:
    @api.post("/greet/{name}")
    async def enqueue(name: str, tq: TickerQDep) -> dict[str, str]:
        ticker = await tq.time_tickers.add("greet", request={"name": name})
        return {"id": str(ticker.id)}

    @api.get("/greet/{job_id}")
    async def status(job_id: UUID, tq: TickerQDep, wait: bool = False) -> dict[str, Any]:
        ticker = (
            await tq.time_tickers.wait(job_id, timeout=10)
            if wait
            else await tq.time_tickers.get(job_id)
        )
        return {"status": ticker.status.value, "result": ticker.result}


async def test_producer_only_opens_the_store_and_runs_no_job() -> None:
    tq = make_app()
    api = FastAPI(lifespan=tickerq_lifespan(tq))
    job_routes(api)
    assert tq.loop is None
    async with served(api) as client:
        assert tq.loop is not None  # open: enqueue and read work
        assert not tq.engine.running
        job_id = (await client.post("/greet/ada")).json()["id"]
        assert (await client.get(f"/greet/{job_id}")).json() == {"status": "IDLE", "result": None}
    assert tq.loop is None  # closed on shutdown


async def test_engine_runs_jobs_in_process_and_stops_on_shutdown() -> None:
    tq = make_app()
    api = FastAPI(lifespan=tickerq_lifespan(tq, engine=True))
    job_routes(api)
    async with served(api) as client:
        assert tq.engine.running
        job_id = (await client.post("/greet/ada")).json()["id"]
        done = (await client.get(f"/greet/{job_id}", params={"wait": True})).json()
        assert done == {"status": Status.DONE.value, "result": "hello ada"}
    assert not tq.engine.running and tq.loop is None


async def test_own_lifespan_runs_inside_with_tickerq_open_and_keeps_its_state() -> None:
    tq = make_app()
    steps: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        ticker = await tq.time_tickers.add("greet", request={"name": "startup"})
        steps.append("own startup")
        yield {"greeting": ticker.id}
        # still open while the user's shutdown runs
        steps.append(f"own shutdown {(await tq.time_tickers.get(ticker.id)).status.value}")

    api = FastAPI(lifespan=tickerq_lifespan(tq, own))

    @api.get("/state")
    async def state(request: Request, tq: TickerQDep) -> dict[str, str]:
        return {"greeting": str(request.state.greeting), "node": tq.node_id}

    async with served(api) as client:
        answer = (await client.get("/state")).json()
        assert answer["node"] == "web-1"
        assert UUID(answer["greeting"])
    assert steps == ["own startup", "own shutdown IDLE"]
    assert tq.loop is None


async def test_failed_startup_of_own_lifespan_closes_tickerq() -> None:
    tq = make_app()

    @asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        assert tq.engine.running
        raise RuntimeError("no database for the web app")
        yield

    api = FastAPI(lifespan=tickerq_lifespan(tq, broken, engine=True))
    with pytest.raises(RuntimeError, match="no database"):
        async with served(api):
            pass
    assert not tq.engine.running and tq.loop is None


async def test_starlette_route_gets_the_app_from_the_request() -> None:
    tq = make_app()

    async def node(request: Request) -> JSONResponse:
        return JSONResponse({"node": get_tickerq(request).node_id})

    star = Starlette(routes=[Route("/node", node)], lifespan=tickerq_lifespan(tq))
    async with served(star) as client:
        assert (await client.get("/node")).json() == {"node": "web-1"}


async def test_route_without_the_lifespan_is_told_how_to_get_one() -> None:
    api = FastAPI()

    @api.get("/x")
    async def x(tq: TickerQDep) -> str:
        return tq.node_id

    async with served(api) as client:
        with pytest.raises(TickerQError, match=r"lifespan=tickerq_lifespan"):
            await client.get("/x")


async def test_dependency_can_be_overridden_in_tests() -> None:
    tq, other = make_app(), TickerQ(node_id="other")
    api = FastAPI(lifespan=tickerq_lifespan(tq))

    @api.get("/node")
    async def node(tq: TickerQDep) -> str:
        return tq.node_id

    api.dependency_overrides[get_tickerq] = lambda: other
    async with served(api) as client:
        assert (await client.get("/node")).json() == "other"


async def test_dashboard_is_mounted_once_with_its_options() -> None:
    tq = make_app()
    api = FastAPI(
        lifespan=tickerq_lifespan(
            tq, engine=True, dashboard="/admin/jobs", dashboard_options={"title": "Shop jobs"}
        )
    )
    job_routes(api)
    for _ in range(2):  # a second startup (another test client) does not mount it again
        async with served(api) as client:
            job_id = (await client.post("/greet/ada")).json()["id"]
            await client.get(f"/greet/{job_id}", params={"wait": True})
            page = await client.get(f"/admin/jobs/time-tickers/{job_id}")
            assert page.status_code == 200 and "Shop jobs" in page.text
            assert 'href="/admin/jobs/' in page.text
            listed = (await client.get("/admin/jobs/api/time-tickers")).json()
            assert job_id in {item["id"] for item in listed["items"]}
    mounts = [r for r in api.router.routes if isinstance(r, Mount)]
    assert [m.path for m in mounts] == ["/admin/jobs"]


async def test_dashboard_path_taken_by_something_else() -> None:
    tq = make_app()
    star = Starlette(
        routes=[Mount("/jobs", routes=[])], lifespan=tickerq_lifespan(tq, dashboard="/jobs")
    )
    with pytest.raises(TickerQError, match="something else is mounted at '/jobs'"):
        async with served(star):
            pass
    assert tq.loop is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dashboard": "jobs"}, "dashboard must be a path below the root like '/jobs', got 'jobs'"),
        ({"dashboard": "/"}, "got '/'"),
        ({"dashboard_options": {"title": "x"}}, "dashboard_options needs dashboard="),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        tickerq_lifespan(make_app(), **kwargs)


def test_not_an_app() -> None:
    with pytest.raises(InvalidArgumentError, match="needs a TickerQ app, got str"):
        tickerq_lifespan("sqlite:///x.db")  # type: ignore[call-overload]

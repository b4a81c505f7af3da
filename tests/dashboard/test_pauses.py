"""Pauses in the dashboard: the JSON API, the pages' forms, permissions, the counts."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest

from dashboard.conftest import ClientFactory
from tickerq import TickerQ
from tickerq.dashboard import Permission
from tickerq.models import CLUSTER


async def test_api_pauses_and_resumes_a_function_and_the_cluster(
    app: TickerQ, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await client.get("/api/pauses")).json() == {"cluster": None, "functions": []}
    with caplog.at_level(logging.INFO, logger="tickerq.dashboard"):
        r = await client.post("/api/functions/pause", json={"function": "send_email"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["function"] == "send_email" and body["cluster"] is False
    assert body["paused_by"] == "local"  # the dashboard's user
    stored = await app.pauses.get("send_email")
    assert stored is not None and stored.paused_by == "local"
    assert any("paused function send_email" in m for m in caplog.messages)

    r = await client.post("/api/cluster/pause")
    assert r.status_code == 200 and r.json()["cluster"] is True
    listing = (await client.get("/api/pauses")).json()
    assert listing["cluster"]["function"] == CLUSTER
    assert [p["function"] for p in listing["functions"]] == ["send_email"]

    r = await client.post("/api/functions/resume", json={"function": "send_email"})
    assert r.json() == {"function": "send_email", "resumed": True}
    r = await client.post("/api/functions/resume", json={"function": "send_email"})
    assert r.json() == {"function": "send_email", "resumed": False}
    r = await client.post("/api/cluster/resume")
    assert r.json() == {"function": CLUSTER, "resumed": True}
    assert await app.store.pauses() == {}


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("/api/functions/pause", {"function": "nope"}, 422, "'nope'"),
        ("/api/functions/pause", {"function": "*"}, 422, "pause_cluster"),
        ("/api/functions/pause", {"function": ""}, 422, "function"),
        ("/api/functions/pause", {"function": "x" * 201}, 422, "function"),
        ("/api/functions/pause", {"function": "charge", "by": "me"}, 422, "by"),
        ("/api/functions/pause", {}, 422, "function"),
        ("/api/functions/resume", {"function": "nope"}, 422, "'nope'"),
    ],
)
async def test_api_refuses_bad_input_and_stores_nothing(
    app: TickerQ, client: httpx.AsyncClient, path: str, body: object, status: int, named: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    assert named in r.json()["error"]
    assert await app.store.pauses() == {}


async def test_pausing_needs_operate(memory_app: TickerQ, client_for: ClientFactory) -> None:
    dash = memory_app.dashboard(
        auth=lambda request: request.headers.get("x-user"),
        permissions={"viewer": {Permission.VIEW}, "ops": {Permission.VIEW, Permission.OPERATE}},
    )
    async with client_for(dash) as client:
        viewer, ops = {"x-user": "viewer"}, {"x-user": "ops"}
        for path, body in (
            ("/api/functions/pause", {"function": "charge"}),
            ("/api/cluster/pause", None),
            ("/functions/pause", None),
            ("/cluster/pause", None),
        ):
            if path.startswith("/api"):
                r = await client.post(path, json=body, headers=viewer)
            else:
                r = await client.post(path, data={"function": "charge"}, headers=viewer)
            assert r.status_code == 403, (path, r.text)
        assert await memory_app.store.pauses() == {}
        assert (await client.get("/api/pauses", headers=viewer)).status_code == 200
        r = await client.post("/api/functions/pause", json={"function": "charge"}, headers=ops)
        assert r.status_code == 200 and r.json()["paused_by"] == "ops"
        page = (await client.get("/functions", headers=viewer)).text
        assert 'data-testid="function-resume"' in page and "needs the operate permission" in page


async def test_cross_site_pause_is_refused(app: TickerQ, client: httpx.AsyncClient) -> None:
    evil = {"origin": "https://evil.example"}
    r = await client.post("/functions/pause", data={"function": "charge"}, headers=evil)
    assert r.status_code == 403
    r = await client.post("/api/cluster/pause", headers=evil)
    assert r.status_code == 403
    assert await app.store.pauses() == {}


async def test_forms_and_pages_show_what_waits_because_paused(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    now = app.clock.now()
    for _ in range(3):
        await app.time_tickers.add("charge", request={})
    await app.time_tickers.add("charge", request={}, execution_time=now + timedelta(hours=1))
    await app.time_tickers.add("send_email", request={"to": "a@b"})

    r = await client.post("/functions/pause", data={"function": "charge"})
    assert r.status_code == 303 and r.headers["location"].endswith("/functions")
    assert (await app.pauses.get("charge")) is not None

    functions = {f["name"]: f for f in (await client.get("/api/functions")).json()}
    assert functions["charge"]["paused"]["paused_by"] == "local"
    assert functions["charge"]["paused_due"] == 3  # due now; the one due in an hour is not
    assert functions["send_email"]["paused"] is None
    assert functions["send_email"]["paused_due"] == 0  # due, but not held by a pause

    page = (await client.get("/functions")).text
    assert 'data-function="charge" data-paused="true"' in page
    assert 'data-function="send_email" data-paused="false"' in page
    overview = (await client.get("/")).text
    assert 'data-testid="function-paused"' in overview and "3 due job(s) held back" in overview

    r = await client.post("/cluster/pause", data={"next": "overview"})
    assert r.status_code == 303 and r.headers["location"].endswith("/")
    functions = {f["name"]: f for f in (await client.get("/api/functions")).json()}
    assert functions["send_email"]["paused_due"] == 1  # held by the cluster's pause now
    overview_api = (await client.get("/api/overview")).json()
    assert overview_api["cluster_pause"]["paused_by"] == "local"
    page = (await client.get("/functions")).text
    assert "all work paused since" in page and 'data-testid="cluster-resume"' in page

    await client.post("/cluster/resume")
    await client.post("/functions/resume", data={"function": "charge"})
    assert await app.store.pauses() == {}
    r = await client.post("/functions/stop", data={"function": "charge"})
    assert r.status_code == 404


async def test_a_paused_function_no_node_knows_stays_listed(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    """A function paused and then gone from the code is still shown, so it can be resumed."""
    await app.pauses.pause("charge")
    app._functions.pop("charge")  # this process no longer has it (a new deploy)
    names = {f["name"]: f for f in (await client.get("/api/functions")).json()}
    assert names["charge"]["registered"] is False and names["charge"]["paused"] is not None
    r = await client.post("/api/functions/resume", json={"function": "charge"})
    assert r.json()["resumed"] is True

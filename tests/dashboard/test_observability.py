"""The dashboard's probes and metrics (issue 11, items 5 and 7): ``/api/healthz`` and
``/api/readyz`` answer anyone, without credentials and from any address (Kubernetes
probes send none and come from the node), and tell nothing but states;
``app.dashboard(metrics=True)`` serves ``/metrics`` behind the dashboard's auth."""

from __future__ import annotations

import base64
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from tickerq import TickerQ
from tickerq.contrib.prometheus import PrometheusMiddleware
from tickerq.dashboard import BasicAuth, Permission

_LATER = datetime(2100, 1, 1, tzinfo=UTC)

REMOTE = {"addr": "10.1.2.3", "headers": {"host": "10.1.2.99:8787"}}
"""A client from another machine (a kubelet), naming the pod's address."""


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


async def test_probes_answer_remote_clients_without_auth_configured(
    memory_app: TickerQ, client_for: Callable[..., object]
) -> None:
    async with client_for(memory_app.dashboard(), **REMOTE) as client:  # type: ignore[attr-defined]
        live = await client.get("/api/healthz")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = await client.get("/api/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"store": "ok", "engine": "not here"}}
        assert ready.headers["x-content-type-options"] == "nosniff"  # security headers too
        assert (await client.head("/api/healthz")).status_code == 200
        # Everything else stays loopback-only until auth is configured.
        assert (await client.get("/api/overview")).status_code == 403
        assert (await client.get("/api/readyz/")).status_code == 403
        assert (await client.post("/api/readyz")).status_code == 403


async def test_probes_need_no_credentials_where_auth_is_configured(
    memory_app: TickerQ, client_for: Callable[..., object]
) -> None:
    dash = memory_app.dashboard(auth=BasicAuth("admin", "s3cret"))
    async with client_for(dash, **REMOTE) as client:  # type: ignore[attr-defined]
        assert (await client.get("/api/healthz")).status_code == 200
        assert (await client.get("/api/readyz")).status_code == 200
        assert (await client.get("/api/engine")).status_code == 401


async def test_probes_of_a_dashboard_mounted_under_a_path(
    memory_app: TickerQ, client_for: Callable[..., object]
) -> None:
    host = Starlette(routes=[Mount("/ops/jobs", memory_app.dashboard())])
    async with client_for(host, **REMOTE) as client:  # type: ignore[attr-defined]
        assert (await client.get("/ops/jobs/api/healthz")).status_code == 200
        assert (await client.get("/ops/jobs/api/readyz")).status_code == 200
        assert (await client.get("/ops/jobs/api/nodes")).status_code == 403


async def test_readyz_looks_at_the_engine_where_it_runs(
    memory_app: TickerQ, client_for: Callable[..., object]
) -> None:
    async with memory_app, client_for(memory_app.dashboard(), **REMOTE) as client:  # type: ignore[attr-defined]
        body = (await client.get("/api/readyz")).json()
    assert body["status"] == "ready"
    assert body["checks"]["engine"] == "running"
    assert body["checks"]["heartbeat"] == "fresh"


async def test_readyz_is_503_when_the_sqlite_file_is_gone(
    make_app: Callable[[str], TickerQ], client_for: Callable[..., object], tmp_path: Path
) -> None:
    path = tmp_path / "dash.db"
    app = make_app(f"sqlite:///{path}")
    await app.open()
    away = tmp_path / "away"
    away.mkdir()
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    try:
        async with client_for(app.dashboard(), **REMOTE) as client:  # type: ignore[attr-defined]
            assert (await client.get("/api/readyz")).status_code == 200
            for file in files:
                if file.exists():
                    shutil.move(file, away / file.name)
            app.dashboard
            gone = await client.get("/api/readyz")
            assert gone.status_code == 503
            assert gone.json() == {
                "status": "not ready",
                "reason": "store unreachable",
                "checks": {"store": "unreachable", "engine": "not here"},
            }
            assert str(tmp_path) not in gone.text  # no paths or messages to strangers
            for file in files:
                if (away / file.name).exists():
                    shutil.move(away / file.name, file)
            assert (await client.get("/api/readyz")).status_code == 200
    finally:
        await app.stop()


async def test_readyz_of_a_mounted_dashboard_whose_database_is_down(
    client_for: Callable[..., object],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = TickerQ(f"postgresql://tickerq:secret@127.0.0.1:{port}/jobs")
    try:
        async with client_for(app.dashboard(), **REMOTE) as client:  # type: ignore[attr-defined]
            down = await client.get("/api/readyz")
            assert (await client.get("/api/healthz")).status_code == 200
    finally:
        await app.stop()
    assert down.status_code == 503
    assert down.json() == {
        "status": "not ready",
        "reason": "store unreachable",
        "checks": {"store": "unreachable", "engine": "not here"},
    }


async def test_metrics_behind_the_dashboards_auth(
    memory_app: TickerQ, client_for: Callable[..., object]
) -> None:
    metrics = PrometheusMiddleware(CollectorRegistry(), depth_interval=0)
    memory_app.add_middleware(metrics)
    dash = memory_app.dashboard(
        auth=BasicAuth({"admin": "s3cret", "nobody": "pw"}),
        permissions={"admin": {Permission.VIEW}, "nobody": set()},
        metrics=True,
    )
    async with memory_app:
        await memory_app.time_tickers.add("charge", request=None)
        await memory_app.time_tickers.add("charge", request=None)
        await memory_app.time_tickers.add("charge", request=None, execution_time=_LATER)
        await memory_app.engine.wait_idle()
        async with client_for(dash, **REMOTE) as client:  # type: ignore[attr-defined]
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/metrics", headers=_basic("nobody", "pw"))).status_code == 403
            scraped = await client.get("/metrics", headers=_basic("admin", "s3cret"))
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert scraped.headers["cache-control"] == "no-store"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(scraped.text)
        for s in f.samples
    }
    assert (
        samples[("tickerq_jobs_finished_total", (("function", "charge"), ("status", "done")))] == 2
    )
    assert samples[("tickerq_engine_slots", ())] == 4
    waiting = (("function", "charge"), ("priority", "HIGH"))
    assert samples[("tickerq_waiting_jobs", waiting)] == 1
    assert samples[("tickerq_due_jobs", waiting)] == 0
    assert samples[("tickerq_depth_sample_errors_total", ())] == 0


async def test_metrics_route_only_when_asked(
    memory_app: TickerQ, client_for: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client_for(memory_app.dashboard()) as client:  # type: ignore[attr-defined]
        assert (await client.get("/metrics")).status_code == 404
    registry = CollectorRegistry()
    monkeypatch.setattr("tickerq.contrib.prometheus.REGISTRY", registry)
    dash = memory_app.dashboard(metrics=True)  # installs one on the global registry
    (installed,) = memory_app.middleware
    assert isinstance(installed, PrometheusMiddleware) and installed.registry is registry
    async with client_for(dash) as client:  # type: ignore[attr-defined]
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200 and "tickerq_engine_slots 4.0" in scraped.text
    memory_app.dashboard(metrics=True)  # a second dashboard uses the same one
    assert memory_app.middleware == (installed,)

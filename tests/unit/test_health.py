"""Health checks and the monitor port (issue 11, item 7): liveness answered by the
event loop, readiness from the store, the engine and its heartbeat; the tiny
HTTP server of ``tickerq run --metrics-port`` (tests/acceptance runs it for real)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tickerq import EngineOptions, TickerQ
from tickerq.contrib.prometheus import PrometheusMiddleware
from tickerq.health import HealthChecks
from tickerq.models import Node
from tickerq.monitor import MonitorServer
from tickerq.stores.memory import MemoryStore
from tickerq.testing import ManualClock, run_until_idle


class FaultyStore(MemoryStore):
    """A memory store whose ping can fail or hang, and whose heartbeats can hang."""

    def __init__(self) -> None:
        super().__init__()
        self.ping_error: Exception | None = None
        self.ping_hangs = False
        self.pings = 0
        self.heartbeats_hang = False

    async def ping(self) -> None:
        self.pings += 1
        if self.ping_hangs:
            await asyncio.sleep(3600)
        if self.ping_error is not None:
            raise self.ping_error

    async def heartbeat(
        self, node: Node, running: Sequence[UUID], lease_until: datetime
    ) -> list[UUID]:
        if self.heartbeats_hang:
            await asyncio.Event().wait()
        return await super().heartbeat(node, running, lease_until)


@pytest.fixture
def store() -> FaultyStore:
    return FaultyStore()


@pytest.fixture
def app(clock: ManualClock, store: FaultyStore) -> TickerQ:
    return TickerQ(store, clock=clock, node_id="test-node")


async def test_ready_when_the_store_answers_and_the_engine_heartbeats(app: TickerQ) -> None:
    checks = HealthChecks(app, engine=True)
    async with app:
        readiness = await checks.ready()
    assert readiness.ready and readiness.status_code == 200
    assert readiness.body() == {
        "status": "ready",
        "checks": {
            "store": "ok",
            "engine": "running",
            "heartbeat": "fresh",
            "heartbeat_age_seconds": 0.0,
        },
    }


async def test_not_ready_while_the_engine_that_should_run_does_not(app: TickerQ) -> None:
    checks = HealthChecks(app, engine=True)
    await app.open()
    before = await checks.ready()
    assert not before.ready and before.status_code == 503
    assert before.reason == "engine not running"
    await app.start()
    assert (await checks.ready()).ready
    app.pause()  # paused by an operator: still ready, and says so
    paused = await checks.ready()
    assert paused.ready and paused.checks["engine"] == "paused"
    await app.engine.stop()
    assert (await checks.ready()).reason == "engine not running"
    # A dashboard's check looks at the engine only where it runs.
    assert (await HealthChecks(app, engine=None).ready()).checks == {
        "store": "ok",
        "engine": "not here",
    }
    await app.stop()


async def test_a_heartbeat_older_than_three_periods_is_stale(
    app: TickerQ, store: FaultyStore, clock: ManualClock
) -> None:
    checks = HealthChecks(app, engine=True)
    async with app:
        period = app.engine.heartbeat_period
        assert period == 3600  # memory store: heartbeats only for retention
        store.heartbeats_hang = True  # the heartbeat call never returns
        clock.tick(2 * period)
        await asyncio.sleep(0)
        assert (await checks.ready()).checks["heartbeat"] == "fresh"
        clock.tick(period + 1)
        await asyncio.sleep(0)
        stale = await checks.ready()
        assert not stale.ready
        assert stale.reason == "heartbeat stale"
        assert stale.checks["heartbeat_age_seconds"] == 3 * period + 1
        store.heartbeats_hang = False
        await app.engine.stop(grace=0)


async def test_no_heartbeat_check_on_a_node_that_sends_none(clock: ManualClock) -> None:
    app = TickerQ(clock=clock, options=EngineOptions(retention=None))
    async with app:
        readiness = await HealthChecks(app, engine=True).ready()
    assert readiness.ready and readiness.checks["heartbeat"] == "none"


async def test_a_store_that_fails_or_hangs_is_not_ready(app: TickerQ, store: FaultyStore) -> None:
    checks = HealthChecks(app, engine=None, store_timeout=0.05)
    await app.open()
    store.ping_error = OSError("connection refused by db.internal:5432")
    failed = await checks.ready()
    assert failed.status_code == 503
    assert failed.body() == {
        "status": "not ready",
        "reason": "store unreachable",
        "checks": {"store": "unreachable", "engine": "not here"},
    }  # the error's text (hosts...) is logged, not answered
    store.ping_error = None
    store.ping_hangs = True
    hung = await checks.ready()
    assert hung.reason == "store timeout"
    # Checks while it hangs share the read under way: one read, however many probes.
    pings = store.pings
    answers = await asyncio.gather(*(checks.ready() for _ in range(5)))
    assert {a.reason for a in answers} == {"store timeout"}
    assert store.pings == pings
    await checks.close()
    store.ping_hangs = False
    assert (await checks.ready()).ready
    await app.stop()


async def test_readiness_changes_are_logged_once(
    app: TickerQ, store: FaultyStore, caplog: pytest.LogCaptureFixture
) -> None:
    checks = HealthChecks(app, engine=None)
    await app.open()
    caplog.set_level(logging.INFO, logger="tickerq.health")
    await checks.ready()
    store.ping_error = OSError("refused by db.internal")
    await checks.ready()
    await checks.ready()
    store.ping_error = None
    await checks.ready()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        (
            "WARNING",
            "node test-node is not ready: store unreachable (OSError: refused by db.internal)",
        ),
        ("INFO", "node test-node is ready again"),
    ]
    await app.stop()


# -- the monitor port ------------------------------------------------------------------


@pytest.fixture
async def monitor(app: TickerQ) -> MonitorServer:
    metrics = PrometheusMiddleware(CollectorRegistry(), depth_interval=0)
    app.add_middleware(metrics)
    metrics.bind(app)
    server = MonitorServer(app, metrics=metrics.exposition, engine=True)
    await server.start("127.0.0.1", 0)
    yield server  # type: ignore[misc]
    await server.stop()


async def test_the_monitor_port_serves_probes_and_metrics(
    app: TickerQ, monitor: MonitorServer
) -> None:
    @app.function()
    async def job() -> None:
        return None

    async with httpx.AsyncClient(base_url=monitor.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        starting = await client.get("/readyz")
        assert starting.status_code == 503
        assert starting.json()["reason"] == "engine not running"
        async with app:
            await job.enqueue()
            await run_until_idle(app)
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(metrics.text)
                for s in f.samples
            }
            assert samples[("tickerq_jobs_started_total", (("function", "job"),))] == 1
            assert samples[("tickerq_engine_running", ())] == 1
        head = await client.head("/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(b'{"status": "ok"}\n'))
        assert (await client.get("/nope")).status_code == 404
        refused = await client.post("/healthz")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert (await client.get("/readyz?verbose=1")).status_code == 503  # stopped again
        huge = await client.get("/healthz", headers={"x-big": "a" * 20_000})
        assert huge.status_code == 431


async def test_healthz_answers_while_readyz_waits_for_a_hung_store(
    app: TickerQ, store: FaultyStore, monitor: MonitorServer
) -> None:
    monitor.checks.store_timeout = 1.0
    await app.open()
    store.ping_hangs = True
    async with httpx.AsyncClient(base_url=monitor.url) as client:
        ready = asyncio.ensure_future(client.get("/readyz"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert (await client.get("/healthz")).status_code == 200
        assert time.monotonic() - started < 0.5
        assert (await ready).json()["reason"] == "store timeout; engine not running"
    await monitor.checks.close()
    store.ping_hangs = False
    await app.stop()


async def test_a_blocked_event_loop_does_not_answer_healthz(monitor: MonitorServer) -> None:
    answered: list[object] = []

    def probe() -> None:
        try:
            httpx.get(f"{monitor.url}/healthz", timeout=0.3)
            answered.append("answered")
        except httpx.TimeoutException as exc:
            answered.append(exc)

    thread = threading.Thread(target=probe)
    thread.start()
    time.sleep(0.8)  # noqa: ASYNC251 - blocks the loop, like a sync call in an async job
    await asyncio.to_thread(thread.join, 5)
    assert len(answered) == 1 and isinstance(answered[0], httpx.TimeoutException)
    async with httpx.AsyncClient(base_url=monitor.url) as client:
        assert (await client.get("/healthz")).status_code == 200  # free again


async def test_stop_closes_the_port_and_open_connections(monitor: MonitorServer) -> None:
    idle = socket.create_connection(("127.0.0.1", monitor.port))  # sends nothing
    await asyncio.sleep(0.05)
    await asyncio.wait_for(monitor.stop(), 2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", monitor.port), timeout=1).close()
    idle.settimeout(1)
    assert idle.recv(10) == b""  # closed by the server
    idle.close()

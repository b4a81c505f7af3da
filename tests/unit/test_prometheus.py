"""The Prometheus middleware (issue 11, item 5) on the memory store with a manual
clock: counts, labels, histogram observations, retries, failures, cancels, the
engine's gauges and the depth sampled from the store (and not more often than
asked)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tickerq import Priority, Status, TickerContext, TickerQ
from tickerq.contrib.prometheus import STATUSES, PrometheusMiddleware, prometheus_of
from tickerq.errors import TerminateExecution
from tickerq.stores.memory import MemoryStore
from tickerq.stores.reads import DepthGroup
from tickerq.testing import ManualClock, advance, run_until_idle


class Scrape:
    """The samples of one exposition, by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(metrics: PrometheusMiddleware) -> Scrape:
    body, content_type = await metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return Scrape(body.decode())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PrometheusMiddleware:
    return PrometheusMiddleware(registry, depth_interval=0)


@pytest.fixture
def app(clock: ManualClock, metrics: PrometheusMiddleware) -> TickerQ:
    app = TickerQ(clock=clock, node_id="test-node", max_concurrency=4)
    app.add_middleware(metrics)  # all a user does
    return app


async def test_runs_are_counted_by_function_and_status(
    app: TickerQ, metrics: PrometheusMiddleware
) -> None:
    @app.function()
    async def ok() -> int:
        return 1

    @app.function()
    def sync_ok() -> None:
        return None

    async with app:
        for _ in range(3):
            await ok.enqueue()
        await sync_ok.enqueue()
        await run_until_idle(app)
        s = await scrape(metrics)
    assert s("tickerq_jobs_started_total", function="ok") == 3
    assert s("tickerq_jobs_finished_total", function="ok", status="done") == 3
    assert s("tickerq_jobs_started_total", function="sync_ok") == 1
    assert s("tickerq_jobs_finished_total", function="sync_ok", status="done") == 1
    for status in STATUSES:  # every status is there from the first run: rate() works
        expected = 3 if status == "done" else 0
        assert s("tickerq_jobs_finished_total", function="ok", status=status) == expected
    assert s("tickerq_jobs_in_flight", function="ok") == 0
    assert s("tickerq_job_retries_total", function="ok") == 0
    assert s.types["tickerq_job_duration_seconds"] == "histogram"
    assert s.types["tickerq_jobs_started"] == "counter"


async def test_duration_and_lateness_histograms_use_the_apps_clock(
    app: TickerQ, clock: ManualClock, metrics: PrometheusMiddleware
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @app.function()
    async def slow() -> None:
        started.set()
        await release.wait()

    async def run_for(seconds: float) -> None:
        await started.wait()
        started.clear()
        clock.tick(seconds)
        release.set()
        await run_until_idle(app)
        release.clear()

    await app.open()
    late = await slow.enqueue()  # due now; the engine starts 30 s later
    clock.tick(30)
    async with app:
        await run_for(2.5)
        on_time = await slow.schedule(after=60)
        clock.tick(60)
        app.wake_engine(None)
        await run_for(2.5)
        assert (await app.time_tickers.get(late.id)).status is Status.DUE_DONE
        assert (await app.time_tickers.get(on_time.id)).status is Status.DONE
        s = await scrape(metrics)
    assert s("tickerq_jobs_finished_total", function="slow", status="due_done") == 1
    assert s("tickerq_jobs_finished_total", function="slow", status="done") == 1
    duration = "tickerq_job_duration_seconds"
    assert s(f"{duration}_count", function="slow") == 2
    assert s(f"{duration}_sum", function="slow") == pytest.approx(5.0)
    assert s(f"{duration}_bucket", function="slow", le="1.0") == 0
    assert s(f"{duration}_bucket", function="slow", le="2.5") == 2
    lateness = "tickerq_job_lateness_seconds"
    assert s(f"{lateness}_count", function="slow") == 2
    assert s(f"{lateness}_sum", function="slow") == pytest.approx(30.0)
    assert s(f"{lateness}_bucket", function="slow", le="0.01") == 1  # the one on time
    assert s(f"{lateness}_bucket", function="slow", le="10.0") == 1
    assert s(f"{lateness}_bucket", function="slow", le="30.0") == 2


async def test_retries_and_the_final_failure(app: TickerQ, metrics: PrometheusMiddleware) -> None:
    app.on_exception(lambda ctx, error: None)  # quiet

    @app.function(retries=2, retry_intervals=[10])
    async def broken() -> None:
        raise ValueError("nope")

    @app.function(timeout=0.01)
    async def hangs() -> None:
        await asyncio.sleep(30)

    async with app:
        ticker = await broken.enqueue()
        await hangs.enqueue()
        await advance(app, 60)
        assert (await app.time_tickers.get(ticker.id)).status is Status.FAILED
        s = await scrape(metrics)
    assert s("tickerq_jobs_started_total", function="broken") == 3
    assert s("tickerq_jobs_finished_total", function="broken", status="retry") == 2
    assert s("tickerq_jobs_finished_total", function="broken", status="failed") == 1
    assert s("tickerq_job_retries_total", function="broken") == 2
    assert s("tickerq_jobs_finished_total", function="hangs", status="failed") == 1
    assert s("tickerq_job_retries_total", function="hangs") == 0


async def test_terminate_execution_and_skips(app: TickerQ, metrics: PrometheusMiddleware) -> None:
    @app.function(retries=3)
    async def ends(ctx: TickerContext[str]) -> None:
        status = Status[ctx.request]
        raise TerminateExecution(status, "chosen")

    async with app:
        for name in ("SKIPPED", "FAILED", "CANCELLED", "DONE"):
            await ends.enqueue(name)
        await run_until_idle(app)
        s = await scrape(metrics)
    for status in ("skipped", "failed", "cancelled", "done"):
        assert s("tickerq_jobs_finished_total", function="ends", status=status) == 1, status
    assert s("tickerq_job_retries_total", function="ends") == 0


async def test_cancelled_runs_async_and_sync(app: TickerQ, metrics: PrometheusMiddleware) -> None:
    started = asyncio.Event()
    sync_started = threading.Event()

    @app.function()
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    @app.function()
    def polite(ctx: TickerContext) -> str:  # sees ctx.cancelled and returns
        sync_started.set()
        while not ctx.cancelled:
            threading.Event().wait(0.005)
        return "stopped"

    async with app:
        running = await endless.enqueue()
        sync_running = await polite.enqueue()
        await started.wait()
        await asyncio.to_thread(sync_started.wait, 5)
        s = await scrape(metrics)
        assert s("tickerq_jobs_in_flight", function="endless") == 1
        assert s("tickerq_jobs_in_flight", function="polite") == 1
        assert s("tickerq_engine_slots_in_use") == 2
        await app.time_tickers.cancel(running.id)
        await app.time_tickers.cancel(sync_running.id)
        await run_until_idle(app)
        assert (await app.time_tickers.get(running.id)).status is Status.CANCELLED
        assert (await app.time_tickers.get(sync_running.id)).status is Status.CANCELLED
        s = await scrape(metrics)
    assert s("tickerq_jobs_finished_total", function="endless", status="cancelled") == 1
    assert s("tickerq_jobs_finished_total", function="polite", status="cancelled") == 1
    assert s("tickerq_jobs_in_flight", function="endless") == 0
    assert s("tickerq_engine_slots_in_use") == 0


async def test_a_run_interrupted_by_the_nodes_stop(
    app: TickerQ, metrics: PrometheusMiddleware
) -> None:
    started = asyncio.Event()

    @app.function()
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    await app.start()
    ticker = await endless.enqueue()
    await started.wait()
    await app.engine.stop(grace=0)
    s = await scrape(metrics)
    assert s("tickerq_jobs_finished_total", function="endless", status="interrupted") == 1
    assert s("tickerq_jobs_finished_total", function="endless", status="cancelled") == 0
    assert (await app.time_tickers.get(ticker.id)).status is Status.IDLE  # runs again
    await app.stop()


async def test_engine_gauges(
    clock: ManualClock, registry: CollectorRegistry, metrics: PrometheusMiddleware
) -> None:
    app = TickerQ(clock=clock, max_concurrency=3, middleware=[metrics])
    metrics.bind(app)  # an exporter binds it before any job ran
    await app.open()
    s = await scrape(metrics)
    assert s("tickerq_engine_slots") == 3
    assert s("tickerq_engine_running") == 0
    assert s("tickerq_engine_heartbeat_age_seconds") is None  # not running: not reported
    async with app:
        clock.tick(100)
        s = await scrape(metrics)
        assert s("tickerq_engine_running") == 1
        assert s("tickerq_engine_paused") == 0
        assert s("tickerq_engine_heartbeat_age_seconds") == 100
        app.pause()
        assert (await scrape(metrics))("tickerq_engine_paused") == 1
        app.resume()
    assert (await scrape(metrics))("tickerq_engine_running") == 0


class CountingStore(MemoryStore):
    """A memory store that counts its depth reads (and can fail them)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth_reads = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def depth(self, now: datetime) -> list[DepthGroup]:
        self.depth_reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("the store is away")
        return await super().depth(now)


async def test_depth_is_sampled_from_the_store_at_most_every_interval(
    clock: ManualClock, registry: CollectorRegistry
) -> None:
    store = CountingStore()
    metrics = PrometheusMiddleware(registry, depth_interval=5.0)
    app = TickerQ(store, clock=clock, middleware=[metrics])

    @app.function(priority=Priority.HIGH)
    async def urgent() -> None:
        return None

    @app.function()
    async def later() -> None:
        return None

    await app.open()
    metrics.bind(app)
    await urgent.enqueue()
    await urgent.enqueue()
    await later.schedule(after=60)
    now = [1000.0]
    metrics.depth.monotonic = lambda: now[0]
    s = await scrape(metrics)
    assert store.depth_reads == 1
    assert s("tickerq_waiting_jobs", function="urgent", priority="HIGH") == 2
    assert s("tickerq_due_jobs", function="urgent", priority="HIGH") == 2
    assert s("tickerq_waiting_jobs", function="later", priority="NORMAL") == 1
    assert s("tickerq_due_jobs", function="later", priority="NORMAL") == 0
    assert s("tickerq_depth_sample_age_seconds") == 0

    await urgent.enqueue()
    now[0] += 4.0
    s = await scrape(metrics)  # fresher than 5 s: the same sample, no read
    assert store.depth_reads == 1
    assert s("tickerq_waiting_jobs", function="urgent", priority="HIGH") == 2
    assert s("tickerq_depth_sample_age_seconds") == 4

    now[0] += 1.0
    s = await scrape(metrics)
    assert store.depth_reads == 2
    assert s("tickerq_waiting_jobs", function="urgent", priority="HIGH") == 3

    store.fail = True
    now[0] += 5.0
    s = await scrape(metrics)  # the read failed: the last sample, older, and an error
    assert store.depth_reads == 3
    assert s("tickerq_waiting_jobs", function="urgent", priority="HIGH") == 3
    assert s("tickerq_depth_sample_age_seconds") == 5
    assert s("tickerq_depth_sample_errors_total") == 1
    now[0] += 1.0
    await scrape(metrics)  # a failing store is not asked more often either
    assert store.depth_reads == 3
    await app.stop()


async def test_a_scrape_from_another_thread_starts_a_read_on_the_loop(
    clock: ManualClock, registry: CollectorRegistry
) -> None:
    from prometheus_client import generate_latest

    store = CountingStore()
    metrics = PrometheusMiddleware(registry, depth_interval=5.0)
    app = TickerQ(store, clock=clock, middleware=[metrics])

    @app.function()
    async def job() -> None:
        return None

    await app.open()
    metrics.bind(app)
    await job.enqueue()
    store.gate = asyncio.Event()
    # prometheus_client's own HTTP server scrapes in a thread: the first scrape has
    # no sample yet and asks the loop for one; the next gets it.
    first = Scrape((await asyncio.to_thread(generate_latest, registry)).decode())
    assert first("tickerq_waiting_jobs", function="job", priority="NORMAL") is None
    store.gate.set()
    for _ in range(100):
        if metrics.depth.taken_at is not None:
            break
        await asyncio.sleep(0.01)
    second = Scrape((await asyncio.to_thread(generate_latest, registry)).decode())
    assert second("tickerq_waiting_jobs", function="job", priority="NORMAL") == 1
    assert store.depth_reads == 1
    await app.stop()


async def test_nothing_about_the_app_before_it_is_bound(registry: CollectorRegistry) -> None:
    metrics = PrometheusMiddleware(registry, namespace="jobs")
    s = Scrape((await metrics.exposition())[0].decode())
    assert "jobs_engine_slots" not in s.names()
    assert s.types["jobs_jobs_started"] == "counter"  # the namespace prefixes every name


def test_bucket_bounds_must_increase(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="duration_buckets"):
        PrometheusMiddleware(registry, duration_buckets=[1.0, 0.5])
    with pytest.raises(ValueError, match="lateness_buckets"):
        PrometheusMiddleware(registry, lateness_buckets=[])


async def test_custom_buckets_and_a_value_on_a_bound(
    app: TickerQ, clock: ManualClock, registry: CollectorRegistry
) -> None:
    metrics = PrometheusMiddleware(CollectorRegistry(), duration_buckets=[1, 2])
    app.add_middleware(metrics)
    started, release = asyncio.Event(), asyncio.Event()

    @app.function()
    async def job() -> None:
        started.set()
        await release.wait()

    async with app:
        await job.enqueue()
        await started.wait()
        clock.tick(1)  # it runs exactly 1 s: le="1.0" holds it (le means <=)
        release.set()
        await run_until_idle(app)
    s = Scrape((await metrics.exposition())[0].decode())
    duration = "tickerq_job_duration_seconds_bucket"
    assert [s(duration, function="job", le=le) for le in ("1.0", "2.0", "+Inf")] == [1, 1, 1]


def test_one_middleware_per_registry(registry: CollectorRegistry) -> None:
    PrometheusMiddleware(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMiddleware(registry)
    PrometheusMiddleware(registry, namespace="other")  # another namespace is fine


async def test_prometheus_of_finds_or_installs_the_middleware(
    clock: ManualClock, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = TickerQ(clock=clock)
    assert prometheus_of(app, install=False) is None
    monkeypatch.setattr("tickerq.contrib.prometheus.REGISTRY", registry)
    installed = prometheus_of(app)
    assert installed is not None and installed.registry is registry
    assert app.middleware == (installed,)
    assert prometheus_of(app) is installed
    assert installed.app is app


async def test_openmetrics_when_asked(app: TickerQ, metrics: PrometheusMiddleware) -> None:
    body, content_type = await metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")

"""Prometheus metrics of a tickerq app: ``pip install 'tickerq[prometheus]'``.

One line installs them::

    from tickerq.contrib.prometheus import PrometheusMiddleware

    app.add_middleware(PrometheusMiddleware())

and ``tickerq run app:app --metrics-port 9108`` (or ``app.dashboard(metrics=True)``)
serves them at ``/metrics``; any other exporter of the same registry works too.

The metrics (``namespace`` ``tickerq``; see docs/observability.md):

- ``tickerq_jobs_started_total{function}``: attempts started on this node.
- ``tickerq_jobs_finished_total{function,status}``: attempts ended on this node, by
  what the attempt's end means for its ticker (:data:`STATUSES`).
- ``tickerq_job_retries_total{function}``: failed attempts that scheduled a retry.
- ``tickerq_job_duration_seconds{function}``: histogram of attempt run times.
- ``tickerq_job_lateness_seconds{function}``: histogram of start time minus the time
  the run was due (0 when early).
- ``tickerq_jobs_in_flight{function}``: attempts running now.
- ``tickerq_engine_slots``, ``tickerq_engine_slots_in_use``: the node's pool
  (``max_concurrency``) and the slots taken (LONG_RUNNING jobs take none).
- ``tickerq_engine_running``, ``tickerq_engine_paused``: 1 or 0.
- ``tickerq_engine_heartbeat_age_seconds``: since the node last reported itself.
- ``tickerq_waiting_jobs{function,priority}`` and ``tickerq_due_jobs{function,priority}``:
  rows of the whole store waiting to run, and those already due (so the same on
  every node: aggregate with ``max``, not ``sum``), sampled from the store at most
  every ``depth_interval`` seconds, when scraped;
  ``tickerq_depth_sample_age_seconds`` says how old the sample is and
  ``tickerq_depth_sample_errors_total`` counts failed samples.

Times come from the app's clock (the one the attempts' ``elapsed`` uses), so a
test on :class:`tickerq.testing.ManualClock` gets exact values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from tickerq.enums import Status
from tickerq.errors import TerminateExecution
from tickerq.middleware import ExecuteNext, Middleware

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.context import TickerContext
    from tickerq.stores.reads import DepthGroup

__all__ = [
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_LATENESS_BUCKETS",
    "STATUSES",
    "PrometheusMiddleware",
    "prometheus_of",
]

logger = logging.getLogger(__name__)

DEFAULT_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Seconds: from a few milliseconds to an hour."""

DEFAULT_LATENESS_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Seconds: a run started on time is a few milliseconds late."""

STATUSES = {
    "done": "returned (or TerminateExecution(DONE)); the ticker ends DONE",
    "due_done": "returned, but started later than the app's late_threshold: DUE_DONE",
    "retry": "raised (or timed out) with retries left: it runs again later",
    "failed": "raised (or timed out) on its last attempt, or TerminateExecution(FAILED)",
    "cancelled": "cancellation asked for (cancel(), a cluster-wide cancel) or "
    "TerminateExecution(CANCELLED)",
    "skipped": "TerminateExecution(SKIPPED), skip_if_already_running() included",
    "interrupted": "stopped by its node's shutdown: it waits again and runs later "
    "(a cancel asked for while the node stops counts here too)",
}
"""The ``status`` label of ``jobs_finished_total``: what the end of one attempt means,
as far as the middleware can know it."""

_FROM_TERMINATE = {
    Status.DONE: "done",
    Status.DUE_DONE: "due_done",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
    Status.SKIPPED: "skipped",
}


class _Histogram:
    """Observations of one function: counts per bucket (not cumulative; the last
    one is +Inf) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.sum = 0.0


class _Tally:
    """What one function's attempts did on this node.

    Plain numbers, changed on the event loop's thread only (middleware runs
    there, sync jobs too: their thread is awaited inside ``call_next``), read at
    scrape time by the collector (a copy of a list is one step under the GIL).
    """

    __slots__ = ("duration", "finished", "in_flight", "lateness", "retries", "started")

    def __init__(self, duration_buckets: int, lateness_buckets: int) -> None:
        self.started = 0
        self.retries = 0
        self.in_flight = 0
        self.finished = dict.fromkeys(STATUSES, 0)
        self.duration = _Histogram(duration_buckets)
        self.lateness = _Histogram(lateness_buckets)


class PrometheusMiddleware(Middleware):
    """Records every attempt's start and end; reports the engine and the store's depth.

    ``registry``: where the metrics are registered (default: prometheus_client's
    global ``REGISTRY``, which every exporter serves; one PrometheusMiddleware per
    registry and namespace). ``namespace`` prefixes every name. ``depth_interval``:
    the waiting and due counts are read from the store at most this often
    (seconds), and only when scraped; a slow read (big backlog) is taken less
    often, at most 5% of the time. ``depth_timeout``: a scrape waits at most this
    long for a new sample (it then gets the previous one).

    The engine and the store are those of the app it runs jobs for, or the one
    given to :meth:`bind` (``tickerq run --metrics-port`` and the dashboard bind it).
    The job metrics cost a few additions per run: they are kept as plain numbers
    and handed to prometheus_client only when scraped.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "tickerq",
        *,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        lateness_buckets: Sequence[float] = DEFAULT_LATENESS_BUCKETS,
        depth_interval: float = 5.0,
        depth_timeout: float = 2.0,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.namespace = namespace
        self.duration_buckets = _bounds(duration_buckets, "duration_buckets")
        self.lateness_buckets = _bounds(lateness_buckets, "lateness_buckets")
        self._tallies: dict[str, _Tally] = {}
        self._app: TickerQ | None = None
        self.depth = _DepthSampler(depth_interval, depth_timeout)
        self._collector = _Collector(self)
        self.registry.register(self._collector)

    # -- binding ------------------------------------------------------------------------

    @property
    def app(self) -> TickerQ | None:
        """The app whose engine and store are reported (None until bound)."""
        return self._app

    def bind(self, app: TickerQ) -> None:
        """Report ``app``'s engine and store (done by the first job run if not before)."""
        if self._app is None:
            self._app = app
        elif self._app is not app:
            logger.warning(
                "this PrometheusMiddleware reports the app of node %s already; "
                "node %s is not reported (give each app a middleware of its own registry)",
                self._app.node_id,
                app.node_id,
            )

    # -- runs ---------------------------------------------------------------------------

    def _tally(self, function: str) -> _Tally:
        tally = self._tallies.get(function)
        if tally is None:
            tally = _Tally(len(self.duration_buckets), len(self.lateness_buckets))
            # A new dict, not a change of the one a scrape thread may be iterating.
            self._tallies = {**self._tallies, function: tally}
        return tally

    async def on_execute(self, ctx: TickerContext[Any], call_next: ExecuteNext) -> Any:
        """Count the attempt, time it, and label its end."""
        tally = self._tallies.get(ctx.function) or self._tally(ctx.function)
        app = ctx.app
        if self._app is None:
            self.bind(app)
        clock = app.clock
        start = clock.now()
        tally.started += 1
        due = ctx.scheduled_for
        if due is not None:
            late = (start - due).total_seconds()
            _observe(tally.lateness, self.lateness_buckets, late if late > 0.0 else 0.0)
        tally.in_flight += 1
        status = "failed"
        try:
            value = await call_next(ctx)
            if ctx.cancelled and app.engine.running:
                status = "cancelled"  # a sync job that saw ctx.cancelled and returned
            else:
                status = "due_done" if ctx.is_due else "done"
            return value
        except TerminateExecution as stop:
            status = _FROM_TERMINATE.get(stop.status, "failed")
            if status == "cancelled" and not app.engine.running:
                status = "interrupted"  # ctx.raise_if_cancelled() while the node stops
            raise
        except asyncio.CancelledError:
            status = "cancelled" if app.engine.running else "interrupted"
            raise
        except BaseException:
            if ctx.retries_left > 0:
                status = "retry"
                tally.retries += 1
            raise
        finally:
            tally.in_flight -= 1
            took = (clock.now() - start).total_seconds()
            _observe(tally.duration, self.duration_buckets, took if took > 0.0 else 0.0)
            tally.finished[status] += 1

    # -- exposition ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Take a new depth sample if the last one is older than ``depth_interval``
        (waiting at most ``depth_timeout`` for it)."""
        if self._app is not None:
            await self.depth.refresh(self._app)

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the text format the ``Accept`` header asks for (Prometheus
        text 0.0.4 by default) and its content type; the depth refreshed first."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        body = await asyncio.to_thread(encoder, self.registry)
        return body, content_type


def _bounds(buckets: Sequence[float], name: str) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets if b != math.inf)
    if not bounds or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"{name} must be increasing bucket bounds, got {list(buckets)!r}")
    return bounds


def _observe(histogram: _Histogram, bounds: tuple[float, ...], value: float) -> None:
    histogram.counts[bisect_left(bounds, value)] += 1  # le: a value on a bound counts in it
    histogram.sum += value


def prometheus_of(app: TickerQ, *, install: bool = True) -> PrometheusMiddleware | None:
    """The app's :class:`PrometheusMiddleware` (the first of ``app.middleware``), bound
    to it; with ``install``, a new one on the global registry if it has none."""
    for middleware in app.middleware:
        if isinstance(middleware, PrometheusMiddleware):
            middleware.bind(app)
            return middleware
    if not install:
        return None
    middleware = PrometheusMiddleware()
    app.add_middleware(middleware)
    middleware.bind(app)
    return middleware


class _DepthSampler:
    """The last waiting/due counts read from the store, and when they were read."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.monotonic: Callable[[], float] = time.monotonic
        """The real time the sample's age and the interval are measured in."""
        self.groups: list[DepthGroup] = []
        self.taken_at: float | None = None
        """When the sample was taken (time.monotonic), None before the first."""
        self.took = 0.0
        """How long the last read took (seconds)."""
        self.errors = 0
        self._tried_at: float | None = None
        """When the last read ended, taken or failed (a failing store is asked no
        more often than a working one)."""
        self._task: asyncio.Task[None] | None = None

    def stale(self) -> bool:
        if self._tried_at is None:
            return True
        wait = max(self.interval, 20.0 * self.took)  # a slow read: at most 5% of the time
        return self.monotonic() - self._tried_at >= wait

    def start(self, app: TickerQ) -> asyncio.Task[None] | None:
        """Start a read on the running loop unless one is under way or the sample is fresh."""
        task = self._task
        if task is not None and not task.done():
            return task
        if not self.stale():
            return None
        task = self._task = asyncio.get_running_loop().create_task(
            self._read(app), name="tickerq-metrics-depth"
        )
        return task

    async def refresh(self, app: TickerQ) -> None:
        task = self.start(app)
        if task is not None:
            # On timeout the scrape gets the previous sample; the read goes on.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.timeout)

    def refresh_soon(self, app: TickerQ) -> None:
        """From any thread (a collect() outside the loop): start a read on the app's loop
        if the sample is stale; the next scrape gets it."""
        loop = app.loop
        if loop is None or loop.is_closed() or not self.stale():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self.start, app)

    async def _read(self, app: TickerQ) -> None:
        started = self.monotonic()
        try:
            groups = await app.store.depth(app.clock.now())
        except Exception as exc:
            self.errors += 1
            self._tried_at = self.monotonic()
            logger.debug("reading the store's depth for metrics failed: %s", exc)
            return
        done = self._tried_at = self.monotonic()
        self.groups, self.taken_at, self.took = groups, done, done - started


class _Collector:
    """What a scrape reads: the job tallies, the engine's state, the last depth sample."""

    def __init__(self, metrics: PrometheusMiddleware) -> None:
        self._metrics = metrics
        ns = metrics.namespace
        self._prefix = f"{ns}_" if ns else ""

    def _gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._prefix + name, help_text, labels=labels)

    def describe(self) -> Iterable[Metric]:
        """The names (without samples): the registry checks them for clashes."""
        return [*self._job_families(), *self._engine_families(), *self._depth_families()]

    def collect(self) -> Iterable[Metric]:
        out = self._jobs()
        app = self._metrics.app
        if app is not None:
            out += self._engine(app)
            out += self._depth(app)
        return out

    def _jobs(self) -> list[Metric]:
        metrics = self._metrics
        started, finished, retries, duration, lateness, in_flight = self._job_families()
        duration_le = _le(metrics.duration_buckets)
        lateness_le = _le(metrics.lateness_buckets)
        for function, tally in sorted(metrics._tallies.items()):
            by = [function]
            started.add_metric(by, tally.started)
            for status, count in list(tally.finished.items()):
                finished.add_metric([function, status], count)
            retries.add_metric(by, tally.retries)
            in_flight.add_metric(by, tally.in_flight)
            for family, histogram, le in (
                (duration, tally.duration, duration_le),
                (lateness, tally.lateness, lateness_le),
            ):
                counts = list(histogram.counts)  # one step: no observation half-counted
                family.add_metric(
                    by, list(zip(le, itertools.accumulate(counts), strict=True)), histogram.sum
                )
        return [started, finished, retries, duration, lateness, in_flight]

    def _engine(self, app: TickerQ) -> list[Metric]:
        slots, in_use, running, paused, heartbeat = self._engine_families()
        engine = app.engine
        slots.add_metric([], engine.max_concurrency)
        in_use.add_metric([], engine.slots_in_use)
        running.add_metric([], 1.0 if engine.running else 0.0)
        paused.add_metric([], 1.0 if engine.paused else 0.0)
        out: list[Metric] = [slots, in_use, running, paused]
        if engine.running and engine.last_heartbeat is not None:
            age = (app.clock.now() - engine.last_heartbeat).total_seconds()
            heartbeat.add_metric([], max(age, 0.0))
            out.append(heartbeat)
        return out

    def _depth(self, app: TickerQ) -> list[Metric]:
        waiting, due, age, errors = self._depth_families()
        sampler = self._metrics.depth
        sampler.refresh_soon(app)
        errors.add_metric([], sampler.errors)
        if sampler.taken_at is None:
            return [errors]
        for group in sampler.groups:
            labels = [group.function, group.priority.name]
            waiting.add_metric(labels, group.waiting)
            due.add_metric(labels, group.due)
        age.add_metric([], sampler.monotonic() - sampler.taken_at)
        return [waiting, due, age, errors]

    def _job_families(
        self,
    ) -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        HistogramMetricFamily,
        GaugeMetricFamily,
    ]:
        n = self._prefix
        fn = ("function",)
        return (
            CounterMetricFamily(
                n + "jobs_started", "Job attempts started on this node.", labels=fn
            ),
            CounterMetricFamily(
                n + "jobs_finished",
                "Job attempts ended on this node, by what the end means for the ticker "
                "(done, due_done, retry, failed, cancelled, skipped, interrupted).",
                labels=("function", "status"),
            ),
            CounterMetricFamily(
                n + "job_retries", "Failed job attempts that scheduled a retry.", labels=fn
            ),
            HistogramMetricFamily(
                n + "job_duration_seconds", "How long job attempts ran.", labels=fn
            ),
            HistogramMetricFamily(
                n + "job_lateness_seconds",
                "How late job attempts started: start time minus the time they were due.",
                labels=fn,
            ),
            self._gauge("jobs_in_flight", "Job attempts running now on this node.", fn),
        )

    def _engine_families(self) -> tuple[GaugeMetricFamily, ...]:
        g = self._gauge
        return (
            g("engine_slots", "Job slots of this node (max_concurrency)."),
            g("engine_slots_in_use", "Job slots taken (LONG_RUNNING jobs take none)."),
            g("engine_running", "1 while this node's engine runs."),
            g("engine_paused", "1 while this node's engine is paused."),
            g("engine_heartbeat_age_seconds", "Seconds since this node last reported itself."),
        )

    def _depth_families(
        self,
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        g = self._gauge
        by = ("function", "priority")
        return (
            g(
                "waiting_jobs",
                "Rows of the store waiting to run (due or not), by function and priority.",
                by,
            ),
            g(
                "due_jobs",
                "Rows of the store due to run and not started, by function and priority.",
                by,
            ),
            g("depth_sample_age_seconds", "Age of the waiting/due sample (seconds)."),
            CounterMetricFamily(
                self._prefix + "depth_sample_errors",
                "Failed reads of the store's waiting/due counts.",
            ),
        )


def _le(bounds: tuple[float, ...]) -> list[str]:
    """The ``le`` labels of ``bounds`` and +Inf, written as prometheus_client writes them."""
    return [repr(b) for b in bounds] + ["+Inf"]

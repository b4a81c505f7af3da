"""OpenTelemetry middleware (issue 11, item 6) on the memory store: PRODUCER spans on
enqueue, CONSUMER spans per attempt in the same trace, trace context in the headers.

Each test gets a TracerProvider of its own, given to the middleware: the global
provider is never set, so nothing leaks between tests.
tests/integration/test_otel_processes.py runs the consumer in another process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tickerq import Status, TickerContext, TickerKind, TickerQ, TimeTickerSpec
from tickerq.contrib.otel import OpenTelemetryMiddleware
from tickerq.errors import TerminateExecution
from tickerq.models import TimeTicker
from tickerq.testing import ManualClock, advance, run_until_idle


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def app(clock: ManualClock, provider: TracerProvider) -> TickerQ:
    return TickerQ(
        clock=clock,
        node_id="test-node",
        max_concurrency=4,
        middleware=[OpenTelemetryMiddleware(provider)],
    )


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = spans(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def traceparent(span: ReadableSpan) -> str:
    sc = span.get_span_context()
    assert sc is not None and sc.trace_flags.sampled
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"


def assert_child_of(child: ReadableSpan, parent: ReadableSpan) -> None:
    pc, cc = parent.get_span_context(), child.get_span_context()
    assert pc is not None and cc is not None
    assert cc.trace_id == pc.trace_id
    assert child.parent is not None
    assert child.parent.span_id == pc.span_id
    assert child.parent.is_remote  # extracted from the headers, as on another node


async def test_a_run_is_a_consumer_span_child_of_the_enqueue_producer_span(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    @app.function()
    async def send_email(ctx: TickerContext[str]) -> str:
        return ctx.request.upper()

    async with app:
        ticker = await send_email.enqueue("hi", headers={"tenant": "acme"})
        await run_until_idle(app)
        done = await app.time_tickers.get(ticker.id)

    producer = only(exporter, "send send_email")
    consumer = only(exporter, "process send_email")
    assert (producer.kind, consumer.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert producer.parent is None  # no span was current at enqueue
    assert_child_of(consumer, producer)
    # The conventions want the creation context linked too.
    assert [link.context.span_id for link in consumer.links] == [
        producer.get_span_context().span_id  # type: ignore[union-attr]
    ]
    # The context travelled in the stored headers, beside the caller's own.
    assert ticker.headers == {"tenant": "acme", "traceparent": traceparent(producer)}
    assert done.headers == ticker.headers
    assert done.status is Status.DONE and done.result == "HI"

    assert dict(producer.attributes or {}) == {
        "messaging.system": "tickerq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "send_email",
        "messaging.message.id": str(ticker.id),
    }
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "tickerq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "send_email",
        "messaging.message.id": str(ticker.id),
        "tickerq.kind": "TIME",
        "tickerq.attempt": 1,
        "tickerq.retries_left": 0,
    }
    assert consumer.status.status_code is StatusCode.UNSET
    assert consumer.instrumentation_scope is not None
    assert consumer.instrumentation_scope.name == "tickerq"


async def test_retries_are_consumer_spans_in_the_same_trace_and_failures_are_recorded(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    @app.function(retries=2, retry_intervals=[10])
    async def flaky(ctx: TickerContext[int]) -> str:
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} broke")
        return "ok"

    async with app:
        ticker = await flaky.enqueue(1)
        await advance(app, 30)
        done = await app.time_tickers.get(ticker.id)
    assert (done.status, done.retry_count) == (Status.DONE, 2)

    producer = only(exporter, "send flaky")
    runs = spans(exporter, "process flaky")
    assert [dict(s.attributes or {})["tickerq.attempt"] for s in runs] == [1, 2, 3]
    assert [dict(s.attributes or {})["tickerq.retries_left"] for s in runs] == [2, 1, 0]
    for run in runs:
        assert_child_of(run, producer)
    assert len({s.context.span_id for s in runs}) == 3  # type: ignore[union-attr]

    for n, failed in enumerate(runs[:2], start=1):
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == f"ValueError: attempt {n} broke"
        assert (failed.attributes or {})["error.type"] == "ValueError"
        (event,) = failed.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ValueError"
        assert (event.attributes or {})["exception.message"] == f"attempt {n} broke"
        assert "ValueError" in str((event.attributes or {})["exception.stacktrace"])
    assert runs[2].status.status_code is StatusCode.UNSET
    assert not runs[2].events


async def test_a_timeout_is_an_error_on_the_span(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    @app.function(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(3600)

    async with app:
        ticker = await slow.enqueue()
        await advance(app, 10)
        assert (await app.time_tickers.get(ticker.id)).status is Status.FAILED
    run = only(exporter, "process slow")
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "TimeoutError"


async def test_terminate_and_cancel_are_not_errors_unless_failed(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    started = asyncio.Event()

    @app.function()
    async def ending(ctx: TickerContext[str]) -> None:
        raise TerminateExecution(Status[ctx.request], "because")

    @app.function()
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        skipped = await ending.enqueue("SKIPPED")
        failed = await ending.enqueue("FAILED")
        await run_until_idle(app)
        running = await endless.enqueue()
        await started.wait()
        await app.time_tickers.cancel(running.id)
        await run_until_idle(app)
        assert (await app.time_tickers.get(skipped.id)).status is Status.SKIPPED
        assert (await app.time_tickers.get(failed.id)).status is Status.FAILED
        assert (await app.time_tickers.get(running.id)).status is Status.CANCELLED

    by_id = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CONSUMER
    }
    skip, fail, cancel = (by_id[str(t.id)] for t in (skipped, failed, running))
    assert skip.status.status_code is StatusCode.UNSET
    assert (skip.attributes or {})["tickerq.status"] == "SKIPPED"
    assert "error.type" not in (skip.attributes or {})
    assert not skip.events
    assert fail.status.status_code is StatusCode.ERROR
    assert fail.status.description == "because"
    assert (fail.attributes or {})["tickerq.status"] == "FAILED"
    assert (fail.attributes or {})["error.type"] == "tickerq.errors.TerminateExecution"
    assert cancel.status.status_code is StatusCode.UNSET
    assert (cancel.attributes or {})["tickerq.status"] == "CANCELLED"


async def test_a_cron_occurrence_is_a_root_consumer_span(
    app: TickerQ, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    @app.function()
    async def tick() -> None:
        return None

    outer = provider.get_tracer("test")
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *")
        with outer.start_as_current_span("test body"):  # not the run's parent
            await advance(app, 61)
    (run,) = spans(exporter, "process tick")
    assert run.kind is SpanKind.CONSUMER
    assert run.parent is None and not run.links
    attributes = dict(run.attributes or {})
    assert attributes["tickerq.kind"] == TickerKind.CRON_OCCURRENCE.value
    assert attributes["tickerq.cron_ticker.id"] == str(cron.id)
    assert attributes["messaging.destination.name"] == "tick"
    assert not spans(exporter, "send tick")


async def test_the_job_s_own_spans_and_baggage_are_inside_its_run(
    app: TickerQ, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    """The consumer span is current in the job, async or sync (a pool thread), and
    baggage set at enqueue arrives with it."""
    tracer = provider.get_tracer("app code")
    seen: list[tuple[str, object]] = []

    @app.function()
    async def async_job() -> None:
        seen.append(("async", baggage.get_baggage("tenant")))
        with tracer.start_as_current_span("async work"):
            pass

    @app.function()
    def sync_job() -> None:
        seen.append((threading.current_thread().name, baggage.get_baggage("tenant")))
        with tracer.start_as_current_span("sync work"):
            pass

    async with app:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracer.start_as_current_span("request"):
                first = await async_job.enqueue()
                second = await sync_job.enqueue()
        finally:
            context.detach(token)
        await run_until_idle(app)

    assert first.headers["baggage"] == "tenant=acme"
    assert seen[0] == ("async", "acme")
    assert seen[1][0].startswith("tickerq") and seen[1][1] == "acme"
    request = only(exporter, "request")
    for function, inner in (("async_job", "async work"), ("sync_job", "sync work")):
        send = only(exporter, f"send {function}")
        assert send.parent is not None and send.parent.span_id == request.context.span_id  # type: ignore[union-attr]
        run = only(exporter, f"process {function}")
        assert_child_of(run, send)
        work = only(exporter, inner)
        assert work.parent is not None and work.parent.span_id == run.context.span_id  # type: ignore[union-attr]
    assert second.headers["traceparent"] == traceparent(only(exporter, "send sync_job"))


async def test_a_creation_context_given_in_the_headers_is_kept_and_linked(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    @app.function()
    async def job() -> None:
        return None

    async with app:
        ticker = await job.enqueue(headers={"traceparent": given})
        await run_until_idle(app)
    assert ticker.headers == {"traceparent": given}
    send = only(exporter, "send job")
    assert [f"{link.context.trace_id:032x}" for link in send.links] == [
        "0af7651916cd43dd8448eb211c80319c"
    ]
    run = only(exporter, "process job")
    assert run.context is not None
    assert f"{run.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert run.parent is not None and f"{run.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_link_only_starts_a_trace_per_run_linked_to_the_producer(
    clock: ManualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = TickerQ(clock=clock, middleware=[OpenTelemetryMiddleware(provider, link_only=True)])

    @app.function()
    async def job() -> None:
        return None

    async with app:
        await job.enqueue()
        await run_until_idle(app)
    send, run = only(exporter, "send job"), only(exporter, "process job")
    assert run.parent is None
    assert run.context.trace_id != send.context.trace_id  # type: ignore[union-attr]
    assert [(link.context.trace_id, link.context.span_id) for link in run.links] == [
        (send.context.trace_id, send.context.span_id)  # type: ignore[union-attr]
    ]


async def test_add_many_and_the_sync_facade_trace_each_ticker(
    app: TickerQ, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    @app.function()
    async def job() -> None:
        return None

    tracer = provider.get_tracer("web")

    def from_a_thread() -> TimeTicker:  # a Flask or Django view, say
        with tracer.start_as_current_span("view"):
            return job.sync.enqueue()

    async with app:
        many = await app.time_tickers.add_many(
            [TimeTickerSpec(function="job"), TimeTickerSpec(function="job")]
        )
        one = await asyncio.to_thread(from_a_thread)
        await run_until_idle(app)
    sends = spans(exporter, "send job")
    assert sorted(t.headers["traceparent"] for t in [*many, one]) == sorted(
        traceparent(s) for s in sends
    )
    view = only(exporter, "view")
    (from_view,) = [s for s in sends if s.parent is not None]
    assert from_view.parent.span_id == view.context.span_id  # type: ignore[union-attr]
    assert traceparent(from_view) == one.headers["traceparent"]
    runs = spans(exporter, "process job")
    assert len(runs) == 3
    assert {r.parent.span_id for r in runs} == {s.context.span_id for s in sends}  # type: ignore[union-attr]


async def test_a_failed_enqueue_is_an_error_span(
    app: TickerQ, exporter: InMemorySpanExporter
) -> None:
    class Refusing:
        async def on_enqueue(self, ticker: TimeTicker, call_next: Any) -> TimeTicker:
            raise PermissionError("tenant over quota")

    app.add_middleware(Refusing())

    @app.function()
    async def job() -> None:
        return None

    await app.open()
    with pytest.raises(PermissionError):
        await job.enqueue()
    send = only(exporter, "send job")
    assert send.status.status_code is StatusCode.ERROR
    assert (send.attributes or {})["error.type"] == "PermissionError"
    assert [e.name for e in send.events] == ["exception"]
    assert await app.time_tickers.count() == 0


async def test_without_an_sdk_nothing_is_added_and_jobs_run(clock: ManualClock) -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider is set in this process")
    app = TickerQ(clock=clock, middleware=[OpenTelemetryMiddleware()])
    ran: list[int] = []

    @app.function(retries=1, retry_intervals=[0])
    async def job(ctx: TickerContext[int]) -> int:
        ran.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("once")
        return ctx.request

    async with app:
        ticker = await job.enqueue(7, headers={"tenant": "acme"})
        await advance(app, 1)
        done = await app.time_tickers.get(ticker.id)
    assert ticker.headers == {"tenant": "acme"}  # no trace context to carry
    assert (done.status, done.result, ran) == (Status.DONE, 7, [1, 2])

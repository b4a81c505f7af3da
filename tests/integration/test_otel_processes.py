"""One trace from an enqueue in this process to the run in a worker process (issue 11,
item 6 acceptance), through SQLite and PostgreSQL.

This process enqueues with the OpenTelemetry middleware and the SDK's in-memory
exporter; a ``tickerq run`` subprocess runs the jobs with the middleware and a
TracerProvider of its own whose exporter writes finished spans as JSON lines to
a file (the in-memory exporter lives in one process). The worker's CONSUMER
spans must carry the PRODUCER span's trace id and have it as parent, retries
included. PostgreSQL: a fresh database on the server of
``$TICKERQ_TEST_POSTGRESQL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped afterwards; skipped when the server cannot be reached, unless ``CI`` is
``true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import make_url

from tickerq import TickerContext, TickerQ
from tickerq.contrib.otel import OpenTelemetryMiddleware

SERVER_URL = make_url(
    os.environ.get("TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
).set(drivername="postgresql")
IN_CI = os.environ.get("CI") == "true"

WORKER_APP = '''
"""The worker: runs `work` with the OpenTelemetry middleware; spans go to a file."""

import json
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tickerq import EngineOptions, TickerContext, TickerQ
from tickerq.contrib.otel import OpenTelemetryMiddleware

SPANS = os.environ["OTEL_TEST_SPANS"]


class JsonLines(SpanExporter):
    """Each finished span as one JSON line (appended, so nothing is lost on exit)."""

    def export(self, spans):
        with open(SPANS, "a", encoding="utf-8") as out:
            for span in spans:
                parent = span.parent
                out.write(json.dumps({
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
                    "parent_is_remote": None if parent is None else parent.is_remote,
                    "links": [f"{link.context.span_id:016x}" for link in span.links],
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "events": [event.name for event in span.events],
                }) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
inner = provider.get_tracer("worker code")

app = TickerQ(
    os.environ["OTEL_TEST_STORE"],
    middleware=[OpenTelemetryMiddleware(provider)],
    options=EngineOptions(grace_period=2, poll_interval=0.2),
)


@app.function(retries=1, retry_intervals=[0])
def work(ctx: TickerContext[str]) -> str:
    with inner.start_as_current_span("inside the job"):
        if ctx.request == "flaky" and ctx.attempt == 1:
            raise ValueError("the first attempt fails")
    return ctx.request
'''


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def postgresql_url() -> AsyncIterator[str]:
    import asyncpg

    admin_dsn = SERVER_URL.set(database="postgres").render_as_string(hide_password=False)
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL is unreachable: {exc!r}")
    name = f"tickerq_otel_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield SERVER_URL.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def _producer(url: str, exporter: InMemorySpanExporter) -> TickerQ:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TickerQ(url, middleware=[OpenTelemetryMiddleware(provider)])

    @app.function(retries=1, retry_intervals=[0])
    def work(ctx: TickerContext[str]) -> str:  # the worker's code runs it
        raise AssertionError("runs in the worker only")

    return app


def _start_worker(tmp_path: Path, url: str, spans: Path) -> subprocess.Popen[str]:
    (tmp_path / "worker_app.py").write_text(textwrap.dedent(WORKER_APP))
    env = {**os.environ, "OTEL_TEST_STORE": url, "OTEL_TEST_SPANS": str(spans)}
    return subprocess.Popen(
        [sys.executable, "-m", "tickerq.cli", "run", "worker_app:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _wait_final(app: TickerQ, ids: list[uuid.UUID], worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        tickers = [await app.time_tickers.get(i) for i in ids]
        if all(t.status.is_final for t in tickers):
            return
        if worker.poll() is not None:
            out, err = worker.communicate()
            pytest.fail(f"the worker exited with {worker.returncode}: {out}\n{err}")
        assert time.monotonic() < deadline, [t.status for t in tickers]
        await asyncio.sleep(0.05)


def _stop(worker: subprocess.Popen[str]) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        _, err = worker.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, err = worker.communicate()
    return err


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def _one_trace_across_processes(
    tmp_path: Path, url: str, exporter: InMemorySpanExporter
) -> None:
    spans_file = tmp_path / "worker-spans.jsonl"
    app = _producer(url, exporter)
    await app.open()
    worker: subprocess.Popen[str] | None = None
    try:
        work = app.get_function("work")
        plain = await work.enqueue("plain")
        flaky = await work.enqueue("flaky")
        worker = _start_worker(tmp_path, url, spans_file)
        await _wait_final(app, [plain.id, flaky.id], worker)
        done = {t.id: await app.time_tickers.get(t.id) for t in (plain, flaky)}
    finally:
        err = _stop(worker) if worker is not None else ""
        await app.stop()
    assert worker is not None and worker.returncode == 0, err
    # (a start later than the lateness threshold, on a loaded machine, ends DUE_DONE)
    assert [(t.status.is_success, t.retry_count) for t in done.values()] == [(True, 0), (True, 1)]

    producers = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.PRODUCER
    }
    assert set(producers) == {str(plain.id), str(flaky.id)}
    records = [json.loads(line) for line in spans_file.read_text().splitlines()]
    runs = [r for r in records if r["kind"] == "CONSUMER"]
    assert sorted(r["name"] for r in runs) == ["process work"] * 3

    for ticker, attempts in ((plain, [1]), (flaky, [1, 2])):
        trace_id, producer_id = _ids(producers[str(ticker.id)])
        assert ticker.headers["traceparent"].split("-")[1:3] == [trace_id, producer_id]
        mine = [r for r in runs if r["attributes"]["messaging.message.id"] == str(ticker.id)]
        assert [r["attributes"]["tickerq.attempt"] for r in mine] == attempts
        for run in mine:
            # The worker's span is in the producer's trace, a child of its span.
            assert run["trace_id"] == trace_id
            assert run["parent_span_id"] == producer_id
            assert run["parent_is_remote"] is True
            assert run["links"] == [producer_id]
            assert run["attributes"]["messaging.destination.name"] == "work"
            assert run["attributes"]["messaging.system"] == "tickerq"
            # The job's own span (a sync job, in a pool thread) is inside the run.
            (inside,) = [
                r
                for r in records
                if r["name"] == "inside the job" and r["parent_span_id"] == run["span_id"]
            ]
            assert inside["trace_id"] == trace_id
        expected = ["ERROR", "UNSET"] if ticker is flaky else ["UNSET"]
        assert [r["status"] for r in mine] == expected
    (failed,) = [r for r in runs if r["status"] == "ERROR"]
    assert failed["events"] == ["exception"]
    assert failed["attributes"]["error.type"] == "ValueError"


async def test_one_trace_from_enqueue_here_to_a_run_in_a_sqlite_worker(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    await _one_trace_across_processes(tmp_path, f"sqlite:///{tmp_path}/jobs.db", exporter)


async def test_one_trace_from_enqueue_here_to_a_run_in_a_postgresql_worker(
    tmp_path: Path, exporter: InMemorySpanExporter, postgresql_url: str
) -> None:
    await _one_trace_across_processes(tmp_path, postgresql_url, exporter)

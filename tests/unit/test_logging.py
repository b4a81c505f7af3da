"""The log records of a node and its jobs: levels, messages, fields; the formatters."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from support import START
from tickerq import EngineOptions, Status, TickerQ, _joblog
from tickerq.logs import JsonFormatter, TextFormatter, configure, fields
from tickerq.testing import ManualClock, advance, run_until_idle

JOB_FIELDS = ("action", "function", "ticker_id", "attempt", "node")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="tickerq")
    return caplog


def records(caplog: pytest.LogCaptureFixture, *actions: str) -> list[logging.LogRecord]:
    """tickerq's records with one of ``actions`` (all with an action if none given)."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("tickerq")
        and hasattr(r, "action")
        and (not actions or r.action in actions)
    ]


def job_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in (*JOB_FIELDS, "duration_ms") if hasattr(record, k)}


async def test_a_job_that_succeeds_logs_its_start_and_its_duration(
    app: TickerQ, clock: ManualClock, logs: pytest.LogCaptureFixture
) -> None:
    @app.function()
    async def work() -> None:
        clock.tick(2.5)  # the job takes 2.5 s

    async with app:
        ticker = await work.enqueue()
        await run_until_idle(app)
    started, ended = records(logs, "job_started", "job_succeeded")
    assert (started.levelno, ended.levelno) == (logging.INFO, logging.INFO)
    assert job_fields(started) == {
        "action": "job_started",
        "function": "work",
        "ticker_id": str(ticker.id),
        "attempt": 1,
        "node": "test-node",
    }
    assert job_fields(ended) == {
        "action": "job_succeeded",
        "function": "work",
        "ticker_id": str(ticker.id),
        "attempt": 1,
        "node": "test-node",
        "duration_ms": 2500.0,
    }
    assert ended.status == "DONE"
    assert ended.getMessage() == f"job work ({ticker.id}) succeeded in 2500.0 ms"
    assert started.getMessage() == f"job work ({ticker.id}) started, attempt 1 of 1"


async def test_a_retry_is_a_warning_with_its_time_and_the_last_failure_an_error(
    app: TickerQ, logs: pytest.LogCaptureFixture
) -> None:
    @app.function(retries=2, retry_intervals=[30, 60])
    async def flaky() -> None:
        raise ConnectionError("mail server down")

    async with app:
        ticker = await flaky.enqueue()
        await advance(app, timedelta(minutes=5))
        assert (await app.time_tickers.get(ticker.id)).status is Status.FAILED
    ended = records(logs, "job_retry", "job_failed")
    assert [(r.levelno, r.action, r.attempt) for r in ended] == [
        (logging.WARNING, "job_retry", 1),
        (logging.WARNING, "job_retry", 2),
        (logging.ERROR, "job_failed", 3),
    ]
    first, second, last = ended
    assert first.retry_at == (START + timedelta(seconds=30)).isoformat(timespec="milliseconds")
    assert second.retry_at == (START + timedelta(seconds=90)).isoformat(timespec="milliseconds")
    assert "attempt 1 of 3 failed" in first.getMessage()
    assert "ConnectionError: mail server down" in first.getMessage()
    assert f"retry at {first.retry_at}" in first.getMessage()
    assert first.exc_info is None and second.exc_info is None  # a retry is no error
    assert last.exc_info is not None and isinstance(last.exc_info[1], ConnectionError)
    assert "attempt 3 of 3" in last.getMessage()
    for r in ended:
        assert (r.function, r.ticker_id, r.node) == ("flaky", str(ticker.id), "test-node")
        assert r.error_type == "ConnectionError" and r.duration_ms == 0.0
    # no other record of these failures above INFO
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == ended


async def test_a_timeout_that_ends_the_ticker_is_an_error_with_its_traceback(
    app: TickerQ, logs: pytest.LogCaptureFixture
) -> None:
    @app.function(timeout=0.01)
    async def slow() -> None:
        await asyncio.sleep(10)

    async with app:
        await slow.enqueue()
        await run_until_idle(app)
    [failed] = records(logs, "job_failed")
    assert failed.levelno == logging.ERROR and failed.status == "FAILED"
    assert failed.exc_info is not None and "timed out after 0.01 s" in str(failed.exc_info[1])
    text = TextFormatter().format(failed)
    assert "Traceback (most recent call last)" in text


async def test_an_exception_handler_reports_failures_instead_of_the_log(
    app: TickerQ, logs: pytest.LogCaptureFixture
) -> None:
    seen: list[bool] = []
    app.on_exception(lambda ctx, error, failure: seen.append(failure.final))

    @app.function(retries=1, retry_intervals=[1])
    async def flaky() -> None:
        raise ValueError("no")

    async with app:
        await flaky.enqueue()
        await advance(app, timedelta(seconds=10))
    assert seen == [False, True]
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []
    assert [r.attempt for r in records(logs, "job_started")] == [1, 2]


async def test_a_cancelled_run_logs_its_end(app: TickerQ, logs: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()

    @app.function()
    async def job() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        ticker = await job.enqueue()
        await started.wait()
        await app.time_tickers.cancel(ticker.id)
        await run_until_idle(app)
    [cancelled] = records(logs, "job_cancelled")
    assert cancelled.levelno == logging.INFO
    assert job_fields(cancelled) == {
        "action": "job_cancelled",
        "function": "job",
        "ticker_id": str(ticker.id),
        "attempt": 1,
        "node": "test-node",
        "duration_ms": 0.0,
    }
    assert cancelled.status == "CANCELLED"


async def test_a_run_interrupted_by_a_stop_says_it_runs_again(
    app: TickerQ, logs: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @app.function()
    async def job() -> None:
        started.set()
        await asyncio.Event().wait()

    await app.start()
    ticker = await job.enqueue()
    await started.wait()
    await app.stop(grace=0)
    [interrupted] = records(logs, "job_interrupted")
    assert interrupted.levelno == logging.INFO
    assert (interrupted.ticker_id, interrupted.status) == (str(ticker.id), "IDLE")
    assert "runs again" in interrupted.getMessage()
    assert [r for r in logs.records if r.levelno >= logging.ERROR] == []


async def test_start_and_stop_of_a_node(app: TickerQ, logs: pytest.LogCaptureFixture) -> None:
    async with app:
        pass
    node = records(logs, "node_started", "node_stopping", "node_stopped")
    assert [(r.action, r.node, r.levelno) for r in node] == [
        ("node_started", "test-node", logging.INFO),
        ("node_stopping", "test-node", logging.INFO),
        ("node_stopped", "test-node", logging.INFO),
    ]
    await app.stop()  # not running: nothing more to say
    assert len(records(logs, "node_stopping", "node_stopped")) == 2


async def test_rows_taken_back_from_a_dead_node_are_logged(
    app: TickerQ, clock: ManualClock, logs: pytest.LogCaptureFixture
) -> None:
    @app.function()
    async def job() -> None:
        pass

    await app.open()
    for node in ("test-node", "dead-node"):
        await job.enqueue()
        await app.store.claim(
            clock.now(),
            node=node,
            lease_until=clock.now() + timedelta(minutes=1),
            slots=1,
            capacity={},
            functions=["job"],
        )
    async with app:  # what a dead run under this node's id held: at once
        await run_until_idle(app)
        [own] = records(logs, "lease_reclaimed")
        await advance(app, timedelta(hours=2))  # the other one's lease lapsed meanwhile
    own, other = records(logs, "lease_reclaimed")
    assert (own.levelno, own.node, own.count) == (logging.INFO, "test-node", 1)
    assert "a dead run of this node held" in own.getMessage()
    assert (other.levelno, other.count) == (logging.INFO, 1)
    assert "lease ran out" in other.getMessage()
    assert len(records(logs, "job_succeeded")) == 2


async def test_nothing_is_built_for_records_nobody_keeps(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With INFO off (logging's default), a job that succeeds costs one level check."""
    caplog.set_level(logging.WARNING, logger="tickerq")
    calls: list[str] = []
    for name in ("started", "ended"):
        real = getattr(_joblog, name)

        def counted(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> None:
            calls.append(_name)
            _real(*args, **kwargs)

        monkeypatch.setattr(_joblog, name, counted)
    app = TickerQ(clock=clock, node_id="test-node", options=EngineOptions(retention=None))

    @app.function()
    async def fine() -> None:
        pass

    @app.function()
    async def broken() -> None:
        raise ValueError("broken")

    async with app:
        for _ in range(3):
            await fine.enqueue()
        await run_until_idle(app)
        assert calls == []
        await broken.enqueue()
        await run_until_idle(app)
    assert calls == ["ended"]
    [failed] = records(caplog)
    assert (failed.action, failed.levelno) == ("job_failed", logging.ERROR)


# -- formatters ---------------------------------------------------------------------


def _record(**extra: Any) -> logging.LogRecord:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        error = exc
    return logging.getLogger("tickerq.engine").makeRecord(
        "tickerq.engine",
        logging.ERROR,
        __file__,
        1,
        "job %s failed",
        ("x",),
        (KeyError, error, error.__traceback__),
        extra=extra,
    )


def test_json_formatter_writes_one_line_with_the_fields_and_the_traceback() -> None:
    record = _record(action="job_failed", function="x", attempt=2, duration_ms=1.5, odd={1, 2})
    record.created = START.timestamp() + 0.25
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert entry["time"] == "2026-03-02T09:00:00.250+00:00"
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "ERROR",
        "tickerq.engine",
        "job x failed",
    )
    assert (entry["action"], entry["function"], entry["attempt"], entry["duration_ms"]) == (
        "job_failed",
        "x",
        2,
        1.5,
    )
    assert entry["odd"] == "{1, 2}"  # not JSON: its str
    assert entry["traceback"].startswith("Traceback (most recent call last)")
    assert entry["traceback"].endswith("KeyError: 'missing'")


def test_json_formatter_keeps_its_own_keys() -> None:
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "level": "spoofed"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO" and entry["message"] == "hello" and "traceback" not in entry


def test_text_formatter_shows_the_fields_after_the_message() -> None:
    record = _record(action="job_failed", error="two words", node="n=1", attempt=1)
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith(
        ' ERROR tickerq.engine: job x failed  action=job_failed error="two words" '
        'node="n=1" attempt=1'
    )
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'missing'"
    assert fields(record) == {
        "action": "job_failed",
        "error": "two words",
        "node": "n=1",
        "attempt": 1,
    }


def test_text_formatter_without_fields_is_the_usual_line() -> None:
    record = logging.makeLogRecord({"msg": "plain", "levelname": "INFO", "name": "x"})
    assert TextFormatter("%(levelname)s %(name)s: %(message)s").format(record) == "INFO x: plain"


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger as a program starts with it: no handler, WARNING (pytest's
    handlers and any level an earlier test left are restored after)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        for handler in root.handlers:
            if handler not in saved:
                handler.close()
        root.handlers[:] = saved
        root.setLevel(level)
        logging.captureWarnings(False)


def test_configure_installs_one_handler_and_replaces_its_own() -> None:
    out = io.StringIO()
    with bare_root() as root:
        first = configure("info", "text", stream=out)
        second = configure(logging.WARNING, "json", stream=out)
        assert root.handlers == [second] and first is not None and first is not second
        assert root.level == logging.WARNING
        logging.getLogger("tickerq.test").warning("careful", extra={"action": "x"})
        logging.getLogger("tickerq.test").info("dropped")
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["action"] == "x"


def test_configure_leaves_logging_alone_when_someone_set_it_up() -> None:
    theirs = logging.NullHandler()
    with bare_root() as root:
        root.addHandler(theirs)
        assert configure("DEBUG", "json") is None
        assert root.handlers == [theirs] and root.level == logging.WARNING


@pytest.mark.parametrize(
    ("level", "fmt", "named"), [("LOUD", "text", "'LOUD'"), ("INFO", "xml", "'xml'")]
)
def test_configure_names_a_bad_level_or_format(level: str, fmt: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        configure(level, fmt)

"""Store contract: bulk cancel, retry and update of time tickers and occurrences.

Each id of a bulk call is reported (done, requested, not found, not allowed with
the reason); the state rules are those of the single calls; bad input changes
nothing; a call is one transaction with a number of statements that does not
grow with the number of ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import event

from support import START
from tickerq import (
    BulkOutcome,
    InvalidArgumentError,
    InvalidRequestError,
    RunCondition,
    Status,
    TickerContext,
    TickerQ,
    TickerStateError,
    TimeTickerSpec,
)
from tickerq.enums import TickerKind
from tickerq.operations import CANCEL, MAX_BULK_IDS, RETRY, UPDATE
from tickerq.testing import run_until_idle

if TYPE_CHECKING:
    from contract.conftest import Ops

MakeApp = Callable[..., TickerQ]
LATER = START + timedelta(hours=1)

DONE, REQUESTED = BulkOutcome.DONE, BulkOutcome.REQUESTED
NOT_FOUND, NOT_ALLOWED = BulkOutcome.NOT_FOUND, BulkOutcome.NOT_ALLOWED


def outcomes(result: Any) -> list[tuple[UUID, BulkOutcome, Status | None]]:
    return [(i.id, i.outcome, i.status) for i in result]


async def status_of(app: TickerQ, ticker_id: UUID) -> Status:
    return (await app.time_tickers.get(ticker_id)).status


# -- cancel_many -------------------------------------------------------------------------


async def test_cancel_many_reports_each_id(app: TickerQ, ops: Ops) -> None:
    waiting = await ops.add("alpha", execution_time=LATER)
    on_cancel = await ops.add("beta", parent_id=waiting.id, run_condition=RunCondition.ON_CANCELLED)
    on_success = await ops.add("gamma", parent_id=waiting.id, run_condition=RunCondition.ON_SUCCESS)
    ended = await ops.add("beta")
    await ops.run(ended.id, Status.DONE)
    running = await ops.add("alpha")
    await ops.claim_one(running.id)
    bystander = await ops.add("alpha", execution_time=LATER)
    unknown = uuid4()
    ops.clock.tick(10)

    result = await app.time_tickers.cancel_many(
        [waiting.id, running.id, ended.id, unknown, str(waiting.id)]  # a repeat counts once
    )

    assert result.action == "cancel" and result.kind is TickerKind.TIME
    assert outcomes(result) == [
        (waiting.id, DONE, Status.IDLE),
        (running.id, REQUESTED, Status.IN_PROGRESS),
        (ended.id, NOT_ALLOWED, Status.DONE),
        (unknown, NOT_FOUND, None),
    ]
    assert result.done == [waiting.id] and result.requested == [running.id]
    assert [i.id for i in result.skipped] == [ended.id, unknown] and not result.ok
    assert result.of(ended.id).reason == CANCEL.reason(Status.DONE)
    assert result.of(ended.id).function == "beta"
    assert result.of(unknown).reason == "not found"
    assert result.summary() == (
        "cancel: 1 done, 1 requested, 2 skipped (1 is DONE; it has already ended, 1 not found)"
    )

    cancelled = await app.time_tickers.get(waiting.id)
    assert cancelled.status is Status.CANCELLED and cancelled.finished_at == ops.now
    assert cancelled.error_message == "cancelled before it started"
    # its chain is resolved as when a single cancel ends it
    assert await status_of(app, on_success.id) is Status.SKIPPED
    assert {j.id for j in await ops.claim(ops.at(7200))} == {on_cancel.id, bystander.id}
    # the running one is flagged for its node, and still runs
    assert await status_of(app, running.id) is Status.IN_PROGRESS
    assert await ops.store.cancel_requested([running.id]) == [running.id]
    assert await status_of(app, ended.id) is Status.DONE


async def test_cancel_many_skips_occurrences_and_vice_versa(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    occurrence = await app.cron_tickers.run_now(cron.id)
    ticker = await ops.add("beta", execution_time=LATER)

    as_tickers = await app.time_tickers.cancel_many([occurrence.id, ticker.id])
    assert outcomes(as_tickers) == [
        (occurrence.id, NOT_FOUND, None),
        (ticker.id, DONE, Status.IDLE),
    ]
    assert (await app.cron_tickers.get_occurrence(occurrence.id)).status is Status.IDLE

    as_occurrences = await app.cron_tickers.cancel_occurrences([ticker.id, occurrence.id])
    assert as_occurrences.kind is TickerKind.CRON_OCCURRENCE
    assert outcomes(as_occurrences) == [
        (ticker.id, NOT_FOUND, None),
        (occurrence.id, DONE, Status.IDLE),
    ]
    assert (await app.cron_tickers.get_occurrence(occurrence.id)).status is Status.CANCELLED
    assert await ops.claim(ops.at(3600)) == []


async def test_single_and_bulk_cancel_refuse_alike(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.run(ticker.id, Status.FAILED)
    (item,) = await app.time_tickers.cancel_many([ticker.id])
    with pytest.raises(TickerStateError) as refused:
        await app.time_tickers.cancel(ticker.id)
    assert str(refused.value) == f"time ticker {ticker.id} {item.reason}"
    assert item.reason == "is FAILED; it has already ended"


# -- retry_many --------------------------------------------------------------------------


async def test_retry_many_reports_each_id(app: TickerQ, ops: Ops) -> None:
    failed = await ops.add("alpha")
    cancelled = await ops.add("beta", execution_time=LATER)
    await ops.run(failed.id, Status.FAILED, error_message="boom")
    await app.time_tickers.cancel(cancelled.id)
    running = await ops.add("gamma")
    await ops.claim_one(running.id)
    unknown = uuid4()
    ops.clock.tick(30)

    result = await app.time_tickers.retry_many([failed.id, running.id, cancelled.id, unknown])

    assert result.action == "retry"
    assert outcomes(result) == [
        (failed.id, DONE, Status.FAILED),
        (running.id, NOT_ALLOWED, Status.IN_PROGRESS),
        (cancelled.id, DONE, Status.CANCELLED),
        (unknown, NOT_FOUND, None),
    ]
    assert result.of(running.id).reason == RETRY.reason(Status.IN_PROGRESS)
    for ticker_id in (failed.id, cancelled.id):
        again = await app.time_tickers.get(ticker_id)
        assert again.status is Status.IDLE and again.execution_time == ops.now
        assert again.error_message is None and again.lock_holder is None
    assert await status_of(app, running.id) is Status.IN_PROGRESS
    assert {j.id for j in await ops.claim()} == {failed.id, cancelled.id}
    with pytest.raises(TickerStateError, match="IN_PROGRESS"):
        await app.time_tickers.retry(running.id)


async def test_retry_occurrences(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    first = await app.cron_tickers.run_now(cron.id)
    await ops.run(first.id, Status.FAILED)
    ops.clock.tick(1)
    second = await app.cron_tickers.run_now(cron.id)
    await ops.claim_one(second.id)

    result = await app.cron_tickers.retry_occurrences([first.id, second.id])

    assert outcomes(result) == [
        (first.id, DONE, Status.FAILED),
        (second.id, NOT_ALLOWED, Status.IN_PROGRESS),
    ]
    assert (await app.cron_tickers.get_occurrence(first.id)).status is Status.IDLE
    assert [j.id for j in await ops.claim()] == [first.id]


# -- update_many -------------------------------------------------------------------------


async def test_update_many_changes_the_waiting_ones(app: TickerQ, ops: Ops) -> None:
    a = await ops.add("alpha", execution_time=LATER, description="a")
    b = await ops.add("beta", execution_time=LATER, description="b")
    ended = await ops.add("gamma")
    await ops.run(ended.id, Status.DONE)
    unknown = uuid4()
    ops.clock.tick(5)
    when = START + timedelta(minutes=30)

    result = await app.time_tickers.update_many(
        [a.id, ended.id, b.id, unknown],
        execution_time=when,
        description="moved",
        retries=2,
        retry_intervals=[5, 10],
        timeout=9,
        headers={"tenant": "t1"},
        request={"n": 1},
    )

    assert result.action == "update"
    assert outcomes(result) == [
        (a.id, DONE, Status.IDLE),
        (ended.id, NOT_ALLOWED, Status.DONE),
        (b.id, DONE, Status.IDLE),
        (unknown, NOT_FOUND, None),
    ]
    assert result.of(ended.id).reason == UPDATE.reason(Status.DONE)
    for ticker_id in (a.id, b.id):
        got = await app.time_tickers.get(ticker_id)
        assert (got.execution_time, got.description, got.retries) == (when, "moved", 2)
        assert (got.retry_intervals, got.timeout, got.request) == ((5.0, 10.0), 9, {"n": 1})
        assert got.headers == {"tenant": "t1"} and got.updated_at == ops.now
    untouched = await app.time_tickers.get(ended.id)
    assert untouched.description == "" and untouched.request is None
    # the store claims by the new time
    assert await ops.claim(when - timedelta(seconds=1)) == []
    assert {j.id for j in await ops.claim(when)} == {a.id, b.id}


async def test_update_many_checks_everything_before_writing(app: TickerQ, ops: Ops) -> None:
    @app.function("typed")
    async def typed(ctx: TickerContext[dict[str, int]]) -> None:
        return None

    plain = await ops.add("alpha", execution_time=LATER, request={"n": "x"})
    strict = await ops.add("typed", execution_time=LATER, request={"n": 1})
    before = [await app.time_tickers.get(t.id) for t in (plain, strict)]

    bad_calls: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (InvalidArgumentError, "retries", {"retries": -1}),
        (InvalidArgumentError, "timeout", {"timeout": "soon"}),
        (InvalidArgumentError, "execution_time", {"execution_time": "tomorrow"}),
        (InvalidArgumentError, "header", {"headers": {"k": 1}}),
        # fits alpha's (untyped) request, not typed's: nothing of either changes
        (InvalidRequestError, "typed", {"request": {"n": "many"}, "description": "x"}),
    ]
    for error, named, changes in bad_calls:
        with pytest.raises(error, match=named):
            await app.time_tickers.update_many([plain.id, strict.id], **changes)
    assert [await app.time_tickers.get(t.id) for t in (plain, strict)] == before


async def test_update_many_refuses_what_update_refuses(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.claim_one(ticker.id)
    (item,) = await app.time_tickers.update_many([ticker.id], description="late")
    assert item.outcome is NOT_ALLOWED and item.status is Status.IN_PROGRESS
    with pytest.raises(TickerStateError) as refused:
        await app.time_tickers.update(ticker.id, description="late")
    assert str(refused.value) == f"time ticker {ticker.id} {item.reason}"
    assert (await app.time_tickers.get(ticker.id)).description == ""


# -- input -------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["cancel_many", "retry_many", "update_many", "delete_many"])
async def test_bad_ids_change_nothing(app: TickerQ, ops: Ops, call: str) -> None:
    ticker = await ops.add("alpha", execution_time=LATER)
    before = await app.time_tickers.get(ticker.id)
    method = getattr(app.time_tickers, call)
    extra: dict[str, Any] = {"description": "x"} if call == "update_many" else {}
    with pytest.raises(InvalidArgumentError, match=r"ids\[1\] is not a ticker id.*'nope'"):
        await method([ticker.id, "nope"], **extra)
    with pytest.raises(InvalidArgumentError, match=r"ids\[0\].*12"):
        await method([12], **extra)
    with pytest.raises(InvalidArgumentError, match="must be a list of ticker ids"):
        await method(str(ticker.id), **extra)
    too_many = [ticker.id] + [uuid4() for _ in range(MAX_BULK_IDS)]
    with pytest.raises(InvalidArgumentError, match="1,001 ids; at most 1,000"):
        await method(too_many, **extra)
    assert await app.time_tickers.get(ticker.id) == before


async def test_no_ids_is_an_empty_result(app: TickerQ) -> None:
    for result in (
        await app.time_tickers.cancel_many([]),
        await app.time_tickers.retry_many([]),
        await app.time_tickers.update_many([], description="x"),
        await app.cron_tickers.cancel_occurrences([]),
    ):
        assert len(result) == 0 and result.ok and result.done == []


async def test_the_most_ids_in_one_call(app: TickerQ, ops: Ops) -> None:
    added = await app.time_tickers.add_many(
        [TimeTickerSpec(function="alpha", execution_time=LATER) for _ in range(MAX_BULK_IDS)]
    )
    ids = [t.id for t in added]
    cancelled = await app.time_tickers.cancel_many(ids)
    assert cancelled.done == ids
    assert await app.time_tickers.count(status=Status.CANCELLED) == MAX_BULK_IDS
    retried = await app.time_tickers.retry_many(ids)
    assert retried.done == ids
    updated = await app.time_tickers.update_many(ids, description="again")
    assert updated.done == ids
    assert await app.time_tickers.count(text="again") == MAX_BULK_IDS


# -- cost --------------------------------------------------------------------------------


async def test_a_bulk_call_is_one_transaction_of_few_statements(
    app: TickerQ, ops: Ops, store_kind: str
) -> None:
    if store_kind == "memory":
        pytest.skip("no statements")
    store: Any = app.store
    engines = [store.sa_engine.sync_engine] + ([store._writer] if store._writer is not None else [])

    async def cost(action: Callable[[], Any]) -> tuple[list[str], int]:
        statements: list[str] = []
        transactions: list[object] = []

        def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "pg_notify" in statement:
                statements.append("NOTIFY")
            elif not statement.lstrip().upper().startswith("BEGIN"):
                statements.append(statement.split(None, 1)[0].upper())

        def on_begin(conn: Any) -> None:
            transactions.append(conn)

        for engine in engines:
            event.listen(engine, "before_cursor_execute", on_execute)
            event.listen(engine, "begin", on_begin)
        try:
            await action()
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", on_execute)
                event.remove(engine, "begin", on_begin)
        return statements, len(transactions)

    waiting = [
        t.id
        for t in await app.time_tickers.add_many(
            [TimeTickerSpec(function="alpha", execution_time=LATER) for _ in range(300)]
        )
    ]
    running = [
        t.id
        for t in await app.time_tickers.add_many(
            [TimeTickerSpec(function="beta") for _ in range(40)]
        )
    ]
    assert len(await ops.claim(slots=100)) == 40
    notify = ["NOTIFY"] if store_kind == "postgresql" else []

    statements, transactions = await cost(lambda: app.time_tickers.cancel_many(waiting + running))
    # lock and read; flag the running (one notice each, in one statement); end the waiting
    assert statements == ["SELECT", "UPDATE", *notify, "UPDATE", *notify]
    assert transactions == 1

    statements, transactions = await cost(lambda: app.time_tickers.retry_many(waiting))
    assert statements == ["SELECT", "UPDATE", *notify] and transactions == 1

    statements, transactions = await cost(
        lambda: app.time_tickers.update_many(waiting, description="x")
    )
    assert statements == ["SELECT", "UPDATE", *notify] and transactions == 1
    statements, transactions = await cost(
        lambda: app.time_tickers.update_many(waiting, request={"k": 1})
    )
    # a new request is checked against the tickers' functions: read first, then written
    assert statements == ["SELECT", "SELECT", "UPDATE", *notify] and transactions == 2


# -- cancellation reaches the running node ------------------------------------------------


async def test_cancel_many_stops_jobs_running_here(make_app: MakeApp) -> None:
    app = make_app()
    started: list[str] = []
    both = asyncio.Event()

    @app.function()
    async def forever(ctx: TickerContext[str]) -> None:
        started.append(ctx.request)
        if len(started) == 2:
            both.set()
        await asyncio.Event().wait()

    async with app:
        a = await forever.enqueue("a")
        b = await forever.enqueue("b")
        await asyncio.wait_for(both.wait(), 5)
        result = await app.time_tickers.cancel_many([a.id, b.id])
        assert result.requested == [a.id, b.id]
        await run_until_idle(app)
        ended = [await app.time_tickers.get(t.id) for t in (a, b)]
    assert [t.status for t in ended] == [Status.CANCELLED, Status.CANCELLED]


async def test_cancel_many_reaches_jobs_on_another_node(make_app: MakeApp, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("the memory store is not shared")
    worker = make_app(node_id="worker")
    viewer = make_app(node_id="viewer")
    started = asyncio.Event()
    cancelled: list[str] = []

    @worker.function()
    async def forever(ctx: TickerContext[str]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.request)
            raise

    viewer.function("forever")(forever.func)
    await viewer.open()
    await worker.start()
    try:
        ticker = await forever.enqueue("job")
        await asyncio.wait_for(started.wait(), 5)
        result = await viewer.time_tickers.cancel_many([ticker.id])
        assert result.requested == [ticker.id]
        if store_kind == "sqlite":
            # no notices between SQLite processes: the worker's heartbeat reads the flag
            worker.clock.tick(worker.engine.options.heartbeat_interval)
        # on PostgreSQL the clock stands still: only the notice can tell the worker
        for _ in range(250):
            if cancelled:
                break
            await asyncio.sleep(0.02)
        assert cancelled == ["job"], "the running node did not cancel the job"
        await run_until_idle(worker)
        assert (await worker.time_tickers.get(ticker.id)).status is Status.CANCELLED
    finally:
        await worker.stop(grace=0)  # a job left running does not hold the test up

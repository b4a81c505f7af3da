"""Store contract: time tickers, through app.time_tickers and the store itself."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest

from support import START
from tickerq import (
    RunCondition,
    Status,
    TickerNotFoundError,
    TickerQ,
    TickerStateError,
    TimeTicker,
    TimeTickerSpec,
)
from tickerq.enums import TickerKind
from tickerq.stores.base import TickerQuery

if TYPE_CHECKING:
    from contract.conftest import Ops


def ids(items: Iterable[Any]) -> list[UUID]:
    """The ids of tickers or claimed jobs, in order."""
    return [item.id for item in items]


# -- add / get -------------------------------------------------------------------------


async def test_add_then_get_returns_every_field(app: TickerQ, ops: Ops) -> None:
    when = START + timedelta(minutes=5)
    added = await app.time_tickers.add(
        "alpha",
        request={"to": "a@b.c", "n": [1, 2]},
        execution_time=when,
        description="Send the invoice",
        retries=3,
        retry_intervals=[10, 60],
        timeout=12.5,
    )
    got = await app.time_tickers.get(added.id)
    assert got == added
    assert got.status is Status.IDLE and got.retry_count == 0
    assert got.execution_time == when
    assert got.request == {"to": "a@b.c", "n": [1, 2]}
    assert got.retry_intervals == (10.0, 60.0)
    assert got.lock_holder is None and got.executed_at is None
    assert await ops.store.get_time_ticker(uuid4()) is None
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.get(uuid4())


async def test_add_is_all_or_none(app: TickerQ, ops: Ops) -> None:
    now = ops.now
    good = TimeTicker(
        id=uuid4(), function="alpha", execution_time=now, created_at=now, updated_at=now
    )
    orphan = TimeTicker(
        id=uuid4(),
        function="alpha",
        execution_time=now,
        parent_id=uuid4(),  # no such parent
        created_at=now,
        updated_at=now,
    )
    with pytest.raises(TickerNotFoundError):
        await ops.store.add_time_tickers([good, orphan])
    assert await ops.store.get_time_ticker(good.id) is None
    assert await ops.store.count_time_tickers(TickerQuery()) == 0


async def test_add_many_stores_chains_parents_first(app: TickerQ, ops: Ops) -> None:
    added = await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="alpha",
                children=[
                    TimeTickerSpec(
                        function="beta",
                        run_condition=RunCondition.ON_SUCCESS,
                        children=[TimeTickerSpec(function="gamma")],
                    )
                ],
            )
        ]
    )
    parent, child, grandchild = added
    assert child.parent_id == parent.id and grandchild.parent_id == child.id
    stored_child = await app.time_tickers.get(child.id)
    assert stored_child.run_condition is RunCondition.ON_SUCCESS
    assert stored_child.execution_time is None and stored_child.status is Status.IDLE
    # only the root is runnable; children wait for their parent
    assert ids(await ops.claim()) == [parent.id]


# -- query / count ---------------------------------------------------------------------


async def test_query_filters_orders_and_pages(app: TickerQ, ops: Ops) -> None:
    a1 = await ops.add(
        "alpha", execution_time=START + timedelta(seconds=10), description="Send Invoice"
    )
    a2 = await ops.add(
        "alpha", execution_time=START + timedelta(seconds=20), description="nightly report"
    )
    b1 = await ops.add(
        "beta", execution_time=START + timedelta(seconds=30), description="Invoice reminder"
    )
    c1 = await ops.add(
        "gamma",
        execution_time=START + timedelta(seconds=40),
        parent_id=a1.id,
        run_condition=RunCondition.ON_SUCCESS,
        description="follow-up",
    )
    await app.time_tickers.cancel(b1.id)
    q = app.time_tickers.query

    assert ids(await q()) == [c1.id, b1.id, a2.id, a1.id]  # latest execution time first
    assert ids(await q(status=Status.IDLE)) == [c1.id, a2.id, a1.id]
    assert ids(await q(status="CANCELLED")) == [b1.id]
    assert ids(await q(status=[Status.CANCELLED, Status.IDLE])) == [c1.id, b1.id, a2.id, a1.id]
    assert await q(status=Status.DONE) == []
    assert ids(await q(function="alpha")) == [a2.id, a1.id]
    assert ids(await q(text="invoice")) == [b1.id, a1.id]  # description, any case
    assert ids(await q(text="ALPH")) == [a2.id, a1.id]  # function name, any case
    assert ids(await q(text=str(a2.id))) == [a2.id]
    assert ids(await q(text=str(a2.id).upper())) == [a2.id]
    assert ids(await q(parent_id=a1.id)) == [c1.id]
    assert ids(await q(roots_only=True)) == [b1.id, a2.id, a1.id]
    assert ids(await q(function="alpha", status=Status.IDLE, text="report")) == [a2.id]
    assert ids(await q(limit=2)) == [c1.id, b1.id]
    assert ids(await q(limit=2, offset=2)) == [a2.id, a1.id]
    assert ids(await q(limit=2, offset=3)) == [a1.id]
    assert await q(offset=4) == []

    count = app.time_tickers.count
    assert await count() == 4
    assert await count(status=Status.IDLE) == 3
    assert await count(function="alpha") == 2
    assert await count(text="invoice") == 2
    assert await count(function="nope") == 0
    store_count = ops.store.count_time_tickers
    assert await store_count(TickerQuery(limit=1, offset=3)) == 4  # the page is ignored
    assert await store_count(TickerQuery(parent_id=a1.id)) == 1
    assert await store_count(TickerQuery(roots_only=True)) == 3


async def test_query_lists_tickers_without_a_time_last(app: TickerQ, ops: Ops) -> None:
    # A chain child waiting for its parent has no execution time yet; "latest
    # execution time first" puts it after every scheduled ticker on every store.
    parent = await ops.add("alpha", execution_time=START + timedelta(seconds=10))
    other = await ops.add("beta", execution_time=START + timedelta(seconds=5))
    child = await ops.add("gamma", parent_id=parent.id)
    assert child.execution_time is None
    assert ids(await app.time_tickers.query()) == [parent.id, other.id, child.id]


async def test_query_text_matches_part_of_an_id(app: TickerQ, ops: Ops) -> None:
    wanted = await ops.add("alpha")
    await ops.add("beta")
    # ids start with the time they were made (both share it): the random tail tells them apart
    piece = str(wanted.id)[-12:]
    assert ids(await app.time_tickers.query(text=piece)) == [wanted.id]
    assert await app.time_tickers.count(text=piece) == 1
    assert wanted.id in ids(await app.time_tickers.query(text=str(wanted.id)[:8]))


async def test_query_text_is_matched_literally(app: TickerQ, ops: Ops) -> None:
    # "%" and "_" in the search text are characters, not wildcards.
    pct = await ops.add("alpha", execution_time=START, description="50% off")
    await ops.add("alpha", execution_time=START + timedelta(seconds=1), description="5000 items")
    snake = await ops.add(
        "alpha", execution_time=START + timedelta(seconds=2), description="snake_case"
    )
    await ops.add("alpha", execution_time=START + timedelta(seconds=3), description="snakeXcase")
    assert ids(await app.time_tickers.query(text="50%")) == [pct.id]
    assert ids(await app.time_tickers.query(text="e_c")) == [snake.id]
    assert await app.time_tickers.count(text="e_c") == 1


# -- update ----------------------------------------------------------------------------


async def test_update_changes_a_waiting_ticker(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add(
        "alpha", execution_time=START + timedelta(hours=1), request={"n": 1}, description="x"
    )
    ops.clock.tick(5)
    updated = await app.time_tickers.update(
        ticker.id,
        execution_time=START,
        request={"n": 2},
        description="y",
        retries=2,
        retry_intervals=[5],
        timeout=3,
    )
    got = await app.time_tickers.get(ticker.id)
    assert got == updated
    assert (got.execution_time, got.request, got.description) == (START, {"n": 2}, "y")
    assert (got.retries, got.retry_intervals, got.timeout) == (2, (5.0,), 3)
    assert got.updated_at == START + timedelta(seconds=5)
    assert got.created_at == ticker.created_at
    # the store claims by the new time, not the old one
    (job,) = await ops.claim()
    assert job.id == ticker.id and job.request == {"n": 2} and job.retries == 2
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.update(uuid4(), description="z")


async def test_update_refuses_tickers_that_are_not_idle(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    job = await ops.claim_one(ticker.id)
    with pytest.raises(TickerStateError, match="IN_PROGRESS"):
        await app.time_tickers.update(ticker.id, description="while running")
    await ops.complete(job, Status.DONE)
    with pytest.raises(TickerStateError, match="DONE"):
        await app.time_tickers.update(ticker.id, description="after the end")
    with pytest.raises(TickerStateError):
        await ops.store.update_time_ticker(
            ticker.id, {"description": "z"}, frozenset({Status.IDLE})
        )
    assert (await app.time_tickers.get(ticker.id)).description == ""


# -- delete ----------------------------------------------------------------------------


async def test_delete_takes_the_whole_chain(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    child = await ops.add("beta", parent_id=parent.id)
    grandchild = await ops.add("gamma", parent_id=child.id)
    other = await ops.add("alpha", execution_time=START + timedelta(minutes=1))
    assert await ops.store.delete_time_tickers([parent.id]) == 3
    for gone in (parent, child, grandchild):
        assert await ops.store.get_time_ticker(gone.id) is None
    assert ids(await app.time_tickers.query()) == [other.id]
    assert await ops.claim() == []  # nothing deleted can still be claimed
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.delete(parent.id)
    assert await app.time_tickers.delete_many([other.id, uuid4()]) == 1
    assert await app.time_tickers.count() == 0


async def test_delete_removes_the_attempt_history(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.run(ticker.id, Status.DONE)
    assert len(await app.time_tickers.attempts(ticker.id)) == 1
    await app.time_tickers.delete(ticker.id)
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.attempts(ticker.id)


async def test_delete_refuses_a_running_ticker(app: TickerQ, ops: Ops) -> None:
    running = await ops.add("alpha")
    await ops.claim_one(running.id)
    with pytest.raises(TickerStateError):
        await app.time_tickers.delete(running.id)
    assert (await app.time_tickers.get(running.id)).status is Status.IN_PROGRESS


async def test_delete_refuses_a_chain_with_a_running_child(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.IN_PROGRESS)
    parent_job = await ops.claim_one(parent.id)
    await ops.claim_one(child.id)
    await ops.complete(parent_job, Status.DONE)
    with pytest.raises(TickerStateError):
        await ops.store.delete_time_tickers([parent.id])
    # all or nothing: the parent is still there
    assert (await app.time_tickers.get(parent.id)).status is Status.DONE
    assert (await app.time_tickers.get(child.id)).status is Status.IN_PROGRESS


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_a_waiting_ticker(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha", execution_time=START + timedelta(minutes=1))
    on_cancel = await ops.add("beta", parent_id=ticker.id, run_condition=RunCondition.ON_CANCELLED)
    on_success = await ops.add("gamma", parent_id=ticker.id, run_condition=RunCondition.ON_SUCCESS)
    ops.clock.tick(10)
    cancelled = await app.time_tickers.cancel(ticker.id)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.finished_at == ops.now
    assert cancelled.lock_holder is None
    # its chain is resolved at once
    skipped = await app.time_tickers.get(on_success.id)
    assert skipped.status is Status.SKIPPED
    assert "ON_SUCCESS" in (skipped.skipped_reason or "")
    assert "CANCELLED" in (skipped.skipped_reason or "")
    assert ids(await ops.claim(ops.at(120))) == [on_cancel.id]
    with pytest.raises(TickerStateError, match="CANCELLED"):
        await app.time_tickers.cancel(ticker.id)
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.cancel(uuid4())


async def test_cancel_a_running_ticker_flags_it(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    bystander = await ops.add("beta")
    jobs = {j.id: j for j in await ops.claim()}
    before = await ops.store.cancel(TickerKind.TIME, ticker.id, ops.now)
    assert before is Status.IN_PROGRESS
    assert (await app.time_tickers.get(ticker.id)).status is Status.IN_PROGRESS
    asked = await ops.store.cancel_requested([ticker.id, bystander.id, uuid4()])
    assert asked == [ticker.id]
    # the node ends it as cancelled; the flag is then gone
    await ops.complete(jobs[ticker.id], Status.CANCELLED)
    assert (await app.time_tickers.get(ticker.id)).status is Status.CANCELLED
    assert await ops.store.cancel_requested([ticker.id]) == []
    assert await ops.store.cancel_requested([]) == []


async def test_cancel_of_a_claimed_ticker_is_not_lost(app: TickerQ, ops: Ops) -> None:
    # Cancelled between claim and start: the node must still learn about it.
    ticker = await ops.add("alpha")
    await ops.claim_one(ticker.id)
    await ops.store.cancel(TickerKind.TIME, ticker.id, ops.now)
    after = await app.time_tickers.get(ticker.id)
    flagged = await ops.store.cancel_requested([ticker.id])
    assert after.status is Status.CANCELLED or flagged == [ticker.id], (after.status, flagged)


# -- retry now -------------------------------------------------------------------------


async def test_retry_now_makes_an_ended_ticker_due(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.run(ticker.id, Status.FAILED, error_type="ValueError", error_message="bad")
    assert (await app.time_tickers.get(ticker.id)).error_message == "bad"
    ops.clock.tick(30)
    again = await app.time_tickers.retry(ticker.id)
    assert again.status is Status.IDLE
    assert again.execution_time == ops.now
    assert again.error_type is None and again.error_message is None
    assert again.lock_holder is None
    assert ids(await ops.claim()) == [ticker.id]


async def test_retry_now_runs_a_skipped_child(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE)
    await ops.run(parent.id, Status.DONE)
    assert (await app.time_tickers.get(child.id)).status is Status.SKIPPED
    await app.time_tickers.retry(child.id)
    got = await app.time_tickers.get(child.id)
    assert got.status is Status.IDLE and got.skipped_reason is None
    assert ids(await ops.claim()) == [child.id]


async def test_retry_now_refuses_a_running_ticker(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.claim_one(ticker.id)
    with pytest.raises(TickerStateError):
        await app.time_tickers.retry(ticker.id)  # queued
    with pytest.raises(TickerStateError):
        await app.time_tickers.retry(ticker.id)  # running
    assert (await app.time_tickers.get(ticker.id)).status is Status.IN_PROGRESS
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.retry(uuid4())

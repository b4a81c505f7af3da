"""Store contract: starting and completing work, attempts, chains, leases and nodes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest

from support import START
from tickerq import (
    Node,
    Priority,
    RunCondition,
    Status,
    TickerContext,
    TickerNotFoundError,
    TickerQ,
)
from tickerq.enums import TickerKind
from tickerq.models import TimeTicker
from tickerq.stores.base import Job

if TYPE_CHECKING:
    from contract.conftest import Ops


async def _noop(ctx: TickerContext) -> None:
    return None


# -- claim (which starts) / complete -----------------------------------------------------


async def test_claim_starts_the_job_and_opens_an_attempt(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    ops.clock.tick(1)
    await ops.claim_one(ticker.id)
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.IN_PROGRESS
    assert got.executed_at == ops.now
    assert got.lock_holder == "node-a"
    (attempt,) = await app.time_tickers.attempts(ticker.id)
    assert attempt.ticker_id == ticker.id and attempt.kind is TickerKind.TIME
    assert (attempt.number, attempt.node, attempt.status) == (0, "node-a", Status.IN_PROGRESS)
    assert attempt.started_at == ops.now and attempt.finished_at is None


async def test_complete_done(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    job = await ops.claim_one(ticker.id)
    finished = ops.at(2.5)
    await ops.complete(job, Status.DONE, finished_at=finished)
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.DONE
    assert got.finished_at == finished
    assert got.elapsed_ms == pytest.approx(2500)
    assert (got.lock_holder, got.locked_at, got.lease_until) == (None, None, None)
    assert got.error_type is None and got.error_message is None
    (attempt,) = await app.time_tickers.attempts(ticker.id)
    assert (attempt.status, attempt.finished_at) == (Status.DONE, finished)
    assert attempt.elapsed_ms == pytest.approx(2500)
    assert attempt.error_type is None and attempt.traceback is None
    assert await ops.claim(ops.at(3600)) == []


async def test_complete_failed_keeps_the_error(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.run(
        ticker.id,
        Status.FAILED,
        error_type="ValueError",
        error_message="bad value 7",
        traceback="Traceback (most recent call last):\n  ...\nValueError: bad value 7\n",
    )
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.FAILED
    assert (got.error_type, got.error_message) == ("ValueError", "bad value 7")
    (attempt,) = await app.time_tickers.attempts(ticker.id)
    assert attempt.status is Status.FAILED
    assert (attempt.error_type, attempt.error_message) == ("ValueError", "bad value 7")
    assert attempt.traceback is not None and attempt.traceback.endswith("bad value 7\n")


async def test_complete_several_outcomes_at_once(app: TickerQ, ops: Ops) -> None:
    done = await ops.add("alpha")
    skipped = await ops.add("beta")
    jobs = {j.id: j for j in await ops.claim()}
    await ops.store.complete(
        [
            ops.outcome(jobs[done.id], Status.DONE),
            ops.outcome(jobs[skipped.id], Status.SKIPPED, skipped_reason="already running"),
        ]
    )
    assert (await app.time_tickers.get(done.id)).status is Status.DONE
    got = await app.time_tickers.get(skipped.id)
    assert got.status is Status.SKIPPED and got.skipped_reason == "already running"
    await ops.store.complete([])


async def test_retry_goes_back_to_idle_at_its_time(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha", retries=2)
    job = await ops.claim_one(ticker.id)
    retry_at = ops.at(30)
    await ops.complete(
        job, Status.IDLE, retry_at=retry_at, error_type="RuntimeError", error_message="boom"
    )
    waiting = await app.time_tickers.get(ticker.id)
    assert waiting.status is Status.IDLE
    assert waiting.execution_time == retry_at
    assert waiting.retry_count == 1
    assert waiting.error_message == "boom"
    assert waiting.lock_holder is None
    assert await ops.store.next_due_time() == retry_at
    assert await ops.claim(ops.at(29)) == []
    (again,) = await ops.claim(retry_at)
    assert again.id == ticker.id and again.retry_count == 1
    await ops.complete(again, Status.DONE, started_at=retry_at)
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [(a.number, a.status) for a in attempts] == [(0, Status.FAILED), (1, Status.DONE)]
    assert attempts[0].error_message == "boom" and attempts[1].error_message is None
    assert [a.started_at for a in attempts] == [START, retry_at]
    final = await app.time_tickers.get(ticker.id)
    assert final.status is Status.DONE and final.retry_count == 1


async def test_interrupted_run_does_not_use_a_retry(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha", retries=1)
    job = await ops.claim_one(ticker.id)
    finished = ops.at(1)
    await ops.complete(job, Status.IDLE, counts_as_retry=False, finished_at=finished)
    waiting = await app.time_tickers.get(ticker.id)
    assert waiting.status is Status.IDLE
    assert waiting.retry_count == 0
    assert waiting.execution_time == finished  # no retry_at: due again at once
    (again,) = await ops.claim(finished)
    assert again.retry_count == 0


# -- chains ---------------------------------------------------------------------------


async def test_chain_children_are_resolved_with_their_parent(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    on_success = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    on_any = await ops.add("beta", parent_id=parent.id)
    on_failure = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE)
    grandchild = await ops.add("gamma", parent_id=on_failure.id)
    with_parent = await ops.add(
        "gamma", parent_id=parent.id, run_condition=RunCondition.IN_PROGRESS
    )
    own_time = START + timedelta(hours=1)
    later = await ops.add(
        "beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS, execution_time=own_time
    )
    (job,) = await ops.claim()
    assert job.id == parent.id

    ops.clock.tick(1)
    assert [j.id for j in await ops.claim()] == [with_parent.id]

    finished = ops.at(2)
    await ops.complete(job, Status.DONE, finished_at=finished)
    failed_branch = await app.time_tickers.get(on_failure.id)
    assert failed_branch.status is Status.SKIPPED
    assert "ON_FAILURE" in (failed_branch.skipped_reason or "")
    assert "DONE" in (failed_branch.skipped_reason or "")
    below = await app.time_tickers.get(grandchild.id)
    assert below.status is Status.SKIPPED  # recursively
    assert "SKIPPED" in (below.skipped_reason or "")
    assert (await app.time_tickers.get(on_success.id)).status is Status.IDLE
    assert await ops.claim(ops.at(1)) == []  # released for the parent's end, not before
    released = await ops.claim(finished)
    assert {j.id for j in released} == {on_success.id, on_any.id}
    assert all(j.parent_id == parent.id for j in released)
    assert await ops.claim(own_time - timedelta(seconds=1)) == []  # keeps its own later time
    assert [j.id for j in await ops.claim(own_time)] == [later.id]


async def test_chain_failure_releases_failure_children(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    on_success = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    on_failure = await ops.add(
        "beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE_OR_CANCELLED
    )
    await ops.run(parent.id, Status.FAILED, error_message="x")
    assert (await app.time_tickers.get(on_success.id)).status is Status.SKIPPED
    assert [j.id for j in await ops.claim(ops.at(5))] == [on_failure.id]


async def test_retry_of_a_parent_does_not_resolve_children(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha", retries=1)
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE)
    await ops.run(parent.id, Status.IDLE, retry_at=ops.at(10), error_message="once")
    got = await app.time_tickers.get(child.id)
    assert got.status is Status.IDLE
    assert [j.id for j in await ops.claim(ops.at(10))] == [parent.id]  # not the child


async def test_child_added_to_an_ended_parent_is_resolved_at_once(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    await ops.run(parent.id, Status.DONE)
    skipped = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE)
    runs = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    assert (await app.time_tickers.get(skipped.id)).status is Status.SKIPPED
    assert [j.id for j in await ops.claim()] == [runs.id]


async def test_in_progress_child_added_to_a_running_parent_starts(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha")
    await ops.claim_one(parent.id)
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.IN_PROGRESS)
    waiting = await ops.add("beta", parent_id=parent.id)
    assert [j.id for j in await ops.claim()] == [child.id]
    assert (await app.time_tickers.get(waiting.id)).status is Status.IDLE


@pytest.mark.parametrize("end", ["complete", "claim"])
async def test_child_added_to_a_running_parent_is_resolved_when_it_ends(
    app: TickerQ, ops: Ops, end: str
) -> None:
    """The parent's job was claimed before it had children: its end still resolves them
    (CI once saw such a child wait forever: the claim's "has children" was trusted)."""
    parent = await ops.add("alpha")
    job = await ops.claim_one(parent.id)
    runs = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    skipped = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_FAILURE)
    below = await ops.add("gamma", parent_id=skipped.id)
    if end == "complete":
        await ops.complete(job, Status.DONE, finished_at=ops.at(1))
    else:
        await ops.store.claim(
            ops.at(1),
            node="node-a",
            lease_until=ops.at(60),
            slots=0,
            capacity={},
            functions=["alpha", "beta", "gamma"],
            finished=[ops.outcome(job, Status.DONE, finished_at=ops.at(1))],
        )
    assert (await ops.get(parent.id)).status is Status.DONE
    assert (await ops.get(skipped.id)).status is Status.SKIPPED
    assert (await ops.get(below.id)).status is Status.SKIPPED
    assert [j.id for j in await ops.claim(ops.at(2))] == [runs.id]
    attempts = await app.time_tickers.attempts(parent.id)
    assert [a.status for a in attempts] == [Status.DONE]


async def test_a_child_added_as_its_parent_ends_is_never_stranded(
    app: TickerQ, ops: Ops, make_app: Callable[..., TickerQ], store_kind: str
) -> None:
    """Children are added from another connection while their parent's run ends,
    in random interleavings: each is resolved, whichever commits first."""
    other = app
    if store_kind != "memory":  # a memory store is not shared between apps
        other = make_app(node_id="node-b")
        other.function("beta")(_noop)
        await other.open()
    rng = random.Random(7)
    children: list[UUID] = []
    for _ in range(40):
        parent = await ops.add("alpha")
        job = await ops.claim_one(parent.id, functions=["alpha"])

        async def add_child(parent_id: UUID = parent.id) -> TimeTicker:
            await asyncio.sleep(rng.random() * 0.004)
            return await other.time_tickers.add(
                "beta", parent_id=parent_id, run_condition=RunCondition.ON_SUCCESS
            )

        async def end(job: Job = job) -> None:
            await asyncio.sleep(rng.random() * 0.004)
            await ops.complete(job, Status.DONE)

        child, _ = await asyncio.gather(add_child(), end())
        children.append(child.id)
    released = await ops.claim(ops.at(10), slots=1000, functions=["beta"])
    assert sorted(j.id for j in released) == sorted(children)


async def test_a_left_over_result_whose_write_fails_goes_with_the_next_claim(
    app: TickerQ, ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path leaves a chain parent's result to the general path after it has
    claimed new jobs: if that write fails, the jobs still come back and the result
    is written with the next claim (nothing lost, nothing run twice)."""
    store: Any = app.store
    if getattr(store, "hot", None) is None:
        pytest.skip("only the SQL stores' hot paths leave results over")
    parent = await ops.add("alpha")
    job = await ops.claim_one(parent.id)
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    other = await ops.add("gamma")
    real = store._write_outcomes
    failures = [RuntimeError("the database went away")]

    def flaky(conn: Any, outcomes: Any) -> None:
        if failures:
            raise failures.pop()
        real(conn, outcomes)

    monkeypatch.setattr(store, "_write_outcomes", flaky)
    claimed = await ops.store.claim(
        ops.at(1),
        node="node-a",
        lease_until=ops.at(60),
        slots=1,
        capacity={},
        functions=["gamma"],
        finished=[ops.outcome(job, Status.DONE, finished_at=ops.at(1))],
    )
    assert [j.id for j in claimed] == [other.id]
    assert (await ops.get(parent.id)).status is Status.IN_PROGRESS
    await ops.claim(ops.at(2), functions=[])  # carries the result over
    assert (await ops.get(parent.id)).status is Status.DONE
    assert [j.id for j in await ops.claim(ops.at(3), functions=["beta"])] == [child.id]
    assert [a.status for a in await app.time_tickers.attempts(parent.id)] == [Status.DONE]


# -- a node that lost its lock ---------------------------------------------------------


async def test_complete_from_a_node_that_lost_the_lock_changes_nothing(
    app: TickerQ, ops: Ops
) -> None:
    ticker = await ops.add("alpha")
    stale = await ops.claim_one(ticker.id, node="node-a", lease=60)
    later = ops.at(61)
    assert await ops.store.reclaim_expired(later) == 1
    (fresh,) = await ops.claim(later, node="node-b")

    # node-a wakes up and reports its (long lost) run
    await ops.store.complete([ops.outcome(stale, Status.DONE, node="node-a")])
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.IN_PROGRESS
    assert got.lock_holder == "node-b"
    current = (await app.time_tickers.attempts(ticker.id))[-1]
    assert (current.node, current.status, current.finished_at) == (
        "node-b",
        Status.IN_PROGRESS,
        None,
    )

    await ops.store.complete(
        [ops.outcome(fresh, Status.FAILED, node="node-b", started_at=later, error_message="b")]
    )
    got = await app.time_tickers.get(ticker.id)
    assert got.status is Status.FAILED and got.error_message == "b"
    last = (await app.time_tickers.attempts(ticker.id))[-1]
    assert (last.node, last.status, last.error_message) == ("node-b", Status.FAILED, "b")


# -- leases, heartbeats and nodes --------------------------------------------------------


def node(node_id: str, ops: Ops, **changes: object) -> Node:
    return Node(
        id=node_id,
        started_at=START,
        last_heartbeat=ops.now,
        version="9.9.9",
        max_concurrency=8,
        active=2,
        functions=("alpha", "beta"),
    ).evolve(**changes)


async def test_heartbeat_extends_the_leases_of_its_node(app: TickerQ, ops: Ops) -> None:
    for _ in range(3):
        await ops.add("alpha")
    mine = await ops.claim(node="node-a", slots=2, lease=60)
    theirs = await ops.claim(node="node-b", lease=60)
    assert len(mine) == 2 and len(theirs) == 1

    ops.clock.tick(30)
    extended = ops.at(300)
    await ops.store.heartbeat(node("node-a", ops), [j.id for j in mine], extended)
    for job in mine:
        assert (await app.time_tickers.get(job.id)).lease_until == extended
    (other,) = theirs
    assert (await app.time_tickers.get(other.id)).lease_until == START + timedelta(seconds=60)

    assert await ops.store.reclaim_expired(START + timedelta(seconds=61)) == 1  # only node-b's
    for job in mine:
        assert (await app.time_tickers.get(job.id)).status is Status.IN_PROGRESS
    assert (await app.time_tickers.get(other.id)).status is Status.IDLE


async def test_nodes_are_recorded_and_removed(app: TickerQ, ops: Ops) -> None:
    assert await ops.store.nodes() == []
    await ops.store.heartbeat(node("node-a", ops), [], ops.at(60))
    (seen,) = await ops.store.nodes()
    assert seen.id == "node-a"
    assert (seen.started_at, seen.last_heartbeat) == (START, ops.now)
    assert (seen.version, seen.max_concurrency, seen.active) == ("9.9.9", 8, 2)
    assert tuple(seen.functions) == ("alpha", "beta")

    ops.clock.tick(10)
    await ops.store.heartbeat(node("node-a", ops, active=5), [], ops.at(60))
    await ops.store.heartbeat(node("node-b", ops), [], ops.at(60))
    nodes = {n.id: n for n in await ops.store.nodes()}
    assert set(nodes) == {"node-a", "node-b"}  # one row per node
    assert nodes["node-a"].last_heartbeat == ops.now and nodes["node-a"].active == 5

    await ops.store.remove_node("node-a")
    assert [n.id for n in await ops.store.nodes()] == ["node-b"]
    await ops.store.remove_node("never-seen")
    assert [n.id for n in await ops.store.nodes()] == ["node-b"]


async def test_reclaim_expired_puts_lapsed_rows_back(
    app: TickerQ, ops: Ops, store_kind: str
) -> None:
    started = await ops.add("alpha", retries=3)
    await ops.claim_one(started.id, lease=60)
    queued = await ops.add("beta")
    await ops.claim_one(queued.id, lease=120)

    assert await ops.store.reclaim_expired(ops.at(60)) == 0  # the lease runs to its end
    assert await ops.store.reclaim_expired(ops.at(61)) == 1
    back = await app.time_tickers.get(started.id)
    assert back.status is Status.IDLE
    assert (back.lock_holder, back.locked_at, back.lease_until) == (None, None, None)
    assert back.retry_count == 0  # a lost node is not the job's failure
    assert (await app.time_tickers.get(queued.id)).status is Status.IN_PROGRESS
    assert await ops.store.reclaim_expired(ops.at(121)) == 1
    assert (await app.time_tickers.get(queued.id)).status is Status.IDLE
    assert await ops.store.reclaim_expired(ops.at(3600)) == 0

    # the lost attempt stays in the history; the row runs again elsewhere
    (lost,) = await app.time_tickers.attempts(started.id)
    assert (lost.number, lost.node, lost.started_at) == (0, "node-a", START)
    if store_kind != "memory":
        # SQL stores close the lost attempt; the memory store leaves it open
        # (IN_PROGRESS, no finished_at): a documented difference.
        assert lost.status is Status.FAILED
        assert lost.error_type == "LeaseExpired"
        assert lost.finished_at == ops.at(61)
    await ops.claim_one(started.id, node="node-b", now=ops.at(121))
    attempts = await app.time_tickers.attempts(started.id)
    assert [(a.node, a.status) for a in attempts][-1] == ("node-b", Status.IN_PROGRESS)
    assert len(attempts) == 2


async def test_attempts_of_an_unknown_ticker(app: TickerQ, ops: Ops) -> None:
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.attempts(uuid4())
    ticker = await ops.add("alpha")
    assert await app.time_tickers.attempts(ticker.id) == []
    with pytest.raises(TickerNotFoundError):  # a time ticker is not an occurrence
        await ops.store.attempts(TickerKind.CRON_OCCURRENCE, ticker.id)


# -- retention -------------------------------------------------------------------------


async def test_purge_deletes_ended_rows_oldest_first(app: TickerQ, ops: Ops) -> None:
    oldest = await ops.add("alpha")
    await ops.run(oldest.id, Status.DONE)  # finished at +2 s
    ops.clock.tick(10)
    older = await ops.add("alpha")
    await ops.run(older.id, Status.FAILED, error_message="x")  # finished at +12 s
    parent = await ops.add("beta")
    waiting_child = await ops.add("gamma", parent_id=parent.id, execution_time=ops.at(3600))
    await ops.run(parent.id, Status.DONE)  # ended, but its child still waits
    cron = await app.cron_tickers.add("alpha", "* * * * *")
    fire = START + timedelta(minutes=1)
    await ops.store.advance_cron_ticker(
        cron.id,
        expected_next=fire,
        new_next=fire + timedelta(minutes=1),
        fires=[fire],
        priority=Priority.NORMAL,
        now=ops.now,
    )
    ops.clock.set(fire)
    (occurrence_job,) = await ops.claim()
    await ops.complete(occurrence_job, Status.DONE)  # finished at 09:01:02
    ops.clock.tick(600)
    recent = await ops.add("alpha")
    await ops.run(recent.id, Status.DONE)
    pending = await ops.add("alpha", after=60)

    cutoff = START + timedelta(minutes=5)
    assert await ops.store.purge(cutoff, 1) == 1
    assert await ops.store.get_time_ticker(oldest.id) is None  # the oldest went first
    assert await ops.store.get_time_ticker(older.id) is not None
    assert await ops.store.purge(cutoff, 100) == 2
    assert await ops.store.get_time_ticker(older.id) is None
    assert await ops.store.get_occurrence(occurrence_job.id) is None
    with pytest.raises(TickerNotFoundError):
        await app.time_tickers.attempts(older.id)
    assert await ops.store.purge(cutoff, 100) == 0
    for kept in (parent, waiting_child, recent, pending):
        assert await ops.store.get_time_ticker(kept.id) is not None, kept
    assert await app.cron_tickers.get(cron.id) == cron.evolve(
        next_fire_at=fire + timedelta(minutes=1)
    )


# -- found by the differential test ----------------------------------------------------


async def test_a_retry_after_a_retried_end_has_no_end_time(app: TickerQ, ops: Ops) -> None:
    """An ended ticker run again by retry() that then fails with retries left waits with
    no finished_at (the memory store kept the old end)."""
    ticker = await ops.add("alpha", retries=1)
    await ops.run(ticker.id, Status.DONE)
    assert (await ops.get(ticker.id)).finished_at is not None
    await app.time_tickers.retry(ticker.id)
    job = await ops.claim_one(ticker.id)
    await ops.complete(job, Status.IDLE, retry_at=ops.at(60), error_message="boom")
    again = await ops.get(ticker.id)
    assert (again.status, again.finished_at) == (Status.IDLE, None)


async def test_a_cancelled_child_stays_cancelled_when_its_parent_starts(
    app: TickerQ, ops: Ops
) -> None:
    parent = await ops.add("alpha")
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.IN_PROGRESS)
    await app.time_tickers.cancel(child.id)
    before = await ops.get(child.id)
    ops.clock.tick(5)
    assert [j.id for j in await ops.claim()] == [parent.id]
    after = await ops.get(child.id)
    assert after.status is Status.CANCELLED
    assert (after.execution_time, after.updated_at) == (before.execution_time, before.updated_at)
    assert await ops.claim() == []

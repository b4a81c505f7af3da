"""Store contract: a time ticker's headers and what its runs returned.

Headers are stored with a time ticker by every add path (the memory store; the
SQL general path for bulk adds and chains; SQLite's group-committed enqueue;
PostgreSQL's one-statement enqueue, single and grouped), read back by every read
(get, query, the dashboard's page, chain children) and handed to the engine on
the claimed job by every claim path (hot and general). A successful attempt's
result is stored on its attempt and on its row by every write path (``complete``
and the results a claim carries, hot and general); any other end of an attempt
leaves the row's result None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest

from contract.test_payloads import PAYLOADS, same
from tickerq import Priority, RunCondition, Status, TickerQ
from tickerq.enums import TickerKind
from tickerq.models import TimeTicker
from tickerq.stores.base import Job, Outcome, TickerQuery
from tickerq.validation import MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_HEADERS, check_headers

if TYPE_CHECKING:
    from contract.conftest import Ops

HEADERS = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tenant": "żółw 🐢 \u2028",
    "x-quotes": "a \"b\" 'c' \\d\n\t{}[]",
    "x-empty": "",
    "Ünïcödé-Ключ": "値",
}


def _max_headers() -> dict[str, str]:
    """As many headers as allowed, names of the longest length, some values too."""
    out = {}
    for i in range(MAX_HEADERS):
        name = f"h{i:03d}-".ljust(MAX_HEADER_NAME, "ł")
        value = (f"{i}:" + "żółw🐢" * MAX_HEADER_VALUE)[:MAX_HEADER_VALUE] if i < 4 else str(i)
        out[name] = value
    return out


MAX = _max_headers()


def test_the_headers_of_these_tests_are_valid() -> None:
    """What the tests store is what check_headers lets through, at its limits."""
    assert check_headers(HEADERS) == HEADERS
    assert check_headers(MAX) == MAX
    assert len(MAX) == MAX_HEADERS
    assert {len(k) for k in MAX} == {MAX_HEADER_NAME}
    assert max(len(v) for v in MAX.values()) == MAX_HEADER_VALUE


def _ticker(
    ops: Ops,
    headers: dict[str, str] | None = None,
    *,
    function: str = "alpha",
    parent_id: UUID | None = None,
    run_condition: RunCondition | None = None,
) -> TimeTicker:
    """A new time ticker as the managers make one (due now unless it is a chain child)."""
    return TimeTicker(
        id=uuid4(),
        function=function,
        execution_time=None if parent_id is not None else ops.now,
        priority=Priority.NORMAL,
        parent_id=parent_id,
        run_condition=run_condition,
        headers=dict(headers or {}),
        created_at=ops.now,
        updated_at=ops.now,
    )


async def _read_everywhere(app: TickerQ, ops: Ops, ticker: TimeTicker) -> list[dict[str, str]]:
    """The ticker's headers as each read returns them: get, query, the dashboard's page."""
    got = [(await ops.get(ticker.id)).headers]
    query = TickerQuery(text=str(ticker.id))
    (queried,) = await ops.store.query_time_tickers(query)
    page = await ops.store.search_time_tickers(query)
    assert [t.id for t in page.items] == [ticker.id]
    return [*got, queried.headers, page.items[0].headers]


async def _claimed(ops: Ops, ids: Sequence[UUID], **kwargs: Any) -> dict[UUID, Job]:
    jobs = {j.id: j for j in await ops.claim(**kwargs)}
    assert set(ids) <= set(jobs), f"claimed {list(jobs)}, expected {list(ids)}"
    return jobs


# -- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [HEADERS, MAX, {}], ids=["unicode", "max", "none"])
async def test_headers_of_a_single_add_round_trip(
    app: TickerQ, ops: Ops, headers: dict[str, str]
) -> None:
    ticker = _ticker(ops, headers)
    await ops.store.add_time_tickers([ticker])  # PostgreSQL: the one-statement enqueue
    assert await _read_everywhere(app, ops, ticker) == [headers] * 3
    job = (await _claimed(ops, [ticker.id]))[ticker.id]
    assert job.headers == headers
    assert (await ops.get(ticker.id)).headers == headers  # a claim leaves them


async def test_headers_of_concurrent_single_adds_round_trip(app: TickerQ, ops: Ops) -> None:
    """Adds that wait for the same statement go together (PostgreSQL: one grouped
    statement of arrays; SQLite: one group commit): each keeps its own headers."""
    wanted = [HEADERS, {}, MAX, {"only": "one"}, {}, {"tenant": "b"}]
    tickers = [_ticker(ops, h) for h in wanted]
    await asyncio.gather(*(ops.store.add_time_tickers([t]) for t in tickers))
    for ticker, headers in zip(tickers, wanted, strict=True):
        assert (await ops.get(ticker.id)).headers == headers
    jobs = await _claimed(ops, [t.id for t in tickers])
    assert [jobs[t.id].headers for t in tickers] == wanted


async def test_grouped_pg_enqueue_stores_each_tickers_headers(
    app: TickerQ, ops: Ops, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouped statement of PostgreSQL's enqueue is the one used here."""
    if store_kind != "postgresql":
        pytest.skip("PostgreSQL's enqueue only")
    from tickerq.stores.sql import enqueue_pg

    sizes: list[int] = []
    real = enqueue_pg._arguments

    def counting(batch: Sequence[TimeTicker]) -> list[Any]:
        sizes.append(len(batch))
        return real(batch)

    monkeypatch.setattr(enqueue_pg, "_arguments", counting)
    wanted = [{"n": str(i)} if i % 2 else {} for i in range(8)] + [MAX]
    tickers = [_ticker(ops, h) for h in wanted]
    await asyncio.gather(*(ops.store.add_time_tickers([t]) for t in tickers))
    assert sizes and max(sizes) > 1
    assert [(await ops.get(t.id)).headers for t in tickers] == wanted


async def test_headers_of_a_bulk_add_with_a_chain_round_trip(app: TickerQ, ops: Ops) -> None:
    """Bulk adds and chain children (SQL: the general path's insert)."""
    parent = _ticker(ops, HEADERS)
    starts_with = _ticker(
        ops, {"k": "starts with"}, parent_id=parent.id, run_condition=RunCondition.IN_PROGRESS
    )
    after = _ticker(ops, MAX, function="beta", parent_id=parent.id)
    plain = _ticker(ops, function="gamma", parent_id=parent.id)
    await ops.store.add_time_tickers([parent, starts_with, after, plain])
    for ticker in (parent, starts_with, after, plain):
        assert (await ops.get(ticker.id)).headers == ticker.headers
    kids = (await ops.store.children_of([parent.id]))[parent.id]
    assert {k.id: k.headers for k in kids} == {t.id: t.headers for t in (starts_with, after, plain)}

    parent_job = (await _claimed(ops, [parent.id]))[parent.id]
    assert parent_job.headers == HEADERS
    jobs = await _claimed(ops, [starts_with.id])  # started with its parent
    assert jobs[starts_with.id].headers == {"k": "starts with"}
    await ops.complete(jobs[starts_with.id], Status.DONE)

    # a child added while its parent runs (SQLite: handed to the general path)
    late = _ticker(ops, {"late": "ż"}, function="beta", parent_id=parent.id)
    await ops.store.add_time_tickers([late])
    assert (await ops.get(late.id)).headers == {"late": "ż"}

    await ops.complete(parent_job, Status.DONE)
    jobs = await _claimed(ops, [after.id, plain.id, late.id], now=ops.at(5))
    assert jobs[after.id].headers == MAX
    assert jobs[plain.id].headers == {}
    assert jobs[late.id].headers == {"late": "ż"}


async def test_update_changes_the_headers(app: TickerQ, ops: Ops) -> None:
    ticker = _ticker(ops, HEADERS)
    await ops.store.add_time_tickers([ticker])
    idle = frozenset({Status.IDLE})
    changed = await ops.store.update_time_ticker(
        ticker.id, {"headers": {"tenant": "other", "new": "ñ"}, "updated_at": ops.at(1)}, idle
    )
    assert changed.headers == {"tenant": "other", "new": "ñ"}
    assert await _read_everywhere(app, ops, ticker) == [{"tenant": "other", "new": "ñ"}] * 3
    await ops.store.update_time_ticker(ticker.id, {"headers": MAX, "updated_at": ops.at(2)}, idle)
    assert (await ops.get(ticker.id)).headers == MAX
    cleared = await ops.store.update_time_ticker(
        ticker.id, {"headers": {}, "updated_at": ops.at(3)}, idle
    )
    assert cleared.headers == {}
    assert await _read_everywhere(app, ops, ticker) == [{}] * 3
    await ops.store.update_time_ticker(
        ticker.id, {"headers": {"last": "1"}, "updated_at": ops.at(4)}, idle
    )
    assert (await _claimed(ops, [ticker.id]))[ticker.id].headers == {"last": "1"}


async def test_a_returned_ticker_does_not_share_the_stored_headers(app: TickerQ, ops: Ops) -> None:
    """Changing the dict of a ticker read (or added) changes nothing stored."""
    ticker = _ticker(ops, {"a": "1"})
    await ops.store.add_time_tickers([ticker])
    ticker.headers["a"] = "changed by the caller"
    read = await ops.get(ticker.id)
    read.headers["b"] = "added by the caller"
    assert (await ops.get(ticker.id)).headers == {"a": "1"}


async def test_retry_now_keeps_the_headers(app: TickerQ, ops: Ops) -> None:
    ticker = _ticker(ops, HEADERS)
    await ops.store.add_time_tickers([ticker])
    await ops.run(ticker.id, Status.FAILED)
    await ops.store.retry_now(TickerKind.TIME, ticker.id, ops.at(10))
    assert (await ops.get(ticker.id)).headers == HEADERS
    assert (await _claimed(ops, [ticker.id], now=ops.at(10)))[ticker.id].headers == HEADERS


# -- results ----------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["complete", "claim"])
async def test_every_json_result_lands_on_the_attempt_and_the_ticker(
    app: TickerQ, ops: Ops, via: str
) -> None:
    """Results of one batch (hot stores: one statement), whether written by
    ``complete`` or carried by the next claim."""
    tickers = [await ops.add("alpha") for _ in PAYLOADS]
    jobs = await _claimed(ops, [t.id for t in tickers])
    outcomes = [
        ops.outcome(jobs[t.id], Status.DONE, result=value)
        for t, value in zip(tickers, PAYLOADS, strict=True)
    ]
    if via == "complete":
        await ops.store.complete(outcomes)
    else:
        assert await _claim_with(ops, outcomes) == []
    for ticker, value in zip(tickers, PAYLOADS, strict=True):
        got = await ops.get(ticker.id)
        assert got.status is Status.DONE
        assert same(got.result, value), (value, got.result)
        (attempt,) = await app.time_tickers.attempts(ticker.id)
        assert same(attempt.result, value), (value, attempt.result)
    page = await ops.store.search_time_tickers(TickerQuery(limit=len(PAYLOADS)))
    results = {t.id: t.result for t in page.items}
    assert all(same(results[t.id], v) for t, v in zip(tickers, PAYLOADS, strict=True))


async def _claim_with(ops: Ops, finished: list[Outcome], **kwargs: Any) -> list[Job]:
    """A claim that carries ``finished`` (the worker's one round trip)."""
    now = ops.at(3)
    return await ops.store.claim(
        now,
        node="node-a",
        lease_until=now + timedelta(seconds=60),
        slots=kwargs.pop("slots", 10),
        capacity={},
        functions=kwargs.pop("functions", ["alpha", "beta", "gamma"]),
        finished=finished,
        **kwargs,
    )


async def test_results_carried_by_a_claim_that_also_claims(app: TickerQ, ops: Ops) -> None:
    """The worker's batch: results of ended jobs (success, retry, failure) in, next jobs
    out, in one call; only the success stores a result."""
    ok = await ops.add("alpha")
    again = await ops.add("alpha", retries=2)
    failed = await ops.add("alpha")
    jobs = await _claimed(ops, [ok.id, again.id, failed.id])
    queued = _ticker(ops, {"next": "job"}, function="beta")
    await ops.store.add_time_tickers([queued])
    claimed = await _claim_with(
        ops,
        [
            ops.outcome(jobs[ok.id], Status.DONE, result={"sum": 3, "items": ["a", 1.5]}),
            ops.outcome(
                jobs[again.id], Status.IDLE, retry_at=ops.at(30), error_message="try again"
            ),
            ops.outcome(jobs[failed.id], Status.FAILED, error_type="ValueError"),
        ],
        functions=["beta"],
    )
    assert [(j.id, j.headers) for j in claimed] == [(queued.id, {"next": "job"})]
    assert (await ops.get(ok.id)).result == {"sum": 3, "items": ["a", 1.5]}
    for ticker_id in (again.id, failed.id):
        assert (await ops.get(ticker_id)).result is None
        (attempt,) = await app.time_tickers.attempts(ticker_id)
        assert attempt.status is Status.FAILED and attempt.result is None


async def test_a_failed_attempt_then_a_success(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha", retries=1)
    job = await ops.claim_one(ticker.id)
    await ops.complete(job, Status.IDLE, retry_at=ops.at(30), error_message="boom")
    assert (await ops.get(ticker.id)).result is None
    (job,) = await ops.claim(ops.at(30))
    await ops.complete(job, Status.DONE, started_at=ops.at(30), result=[1, "two", {"3": None}])
    got = await ops.get(ticker.id)
    assert (got.status, got.result) == (Status.DONE, [1, "two", {"3": None}])
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [(a.status, a.result) for a in attempts] == [
        (Status.FAILED, None),
        (Status.DONE, [1, "two", {"3": None}]),
    ]


async def test_a_result_stays_until_the_next_attempt_ends(app: TickerQ, ops: Ops) -> None:
    """A retry_now keeps the last result while the row waits and runs; the attempt's
    end replaces it (a failure leaves None); attempts keep their own."""
    ticker = await ops.add("alpha")
    await ops.run(ticker.id, Status.DONE, result={"first": True})
    await ops.store.retry_now(TickerKind.TIME, ticker.id, ops.at(10))
    assert (await ops.get(ticker.id)).result == {"first": True}
    job = (await _claimed(ops, [ticker.id], now=ops.at(10)))[ticker.id]
    assert (await ops.get(ticker.id)).result == {"first": True}
    await ops.complete(job, Status.FAILED, started_at=ops.at(10), error_type="KeyError")
    assert (await ops.get(ticker.id)).result is None
    await ops.store.retry_now(TickerKind.TIME, ticker.id, ops.at(20))
    job = (await _claimed(ops, [ticker.id], now=ops.at(20)))[ticker.id]
    await ops.complete(job, Status.DONE, started_at=ops.at(20), result="second")
    assert (await ops.get(ticker.id)).result == "second"
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [a.result for a in attempts] == [{"first": True}, None, "second"]


async def test_a_lost_run_leaves_no_result(app: TickerQ, ops: Ops) -> None:
    ticker = await ops.add("alpha")
    await ops.run(ticker.id, Status.DONE, result=7)
    await ops.store.retry_now(TickerKind.TIME, ticker.id, ops.at(10))
    await _claimed(ops, [ticker.id], now=ops.at(10), lease=5)
    assert await ops.store.reclaim_expired(ops.at(20)) == 1
    got = await ops.get(ticker.id)
    assert (got.status, got.result) == (Status.IDLE, None)
    attempts = await app.time_tickers.attempts(ticker.id)
    assert [(a.error_type, a.result) for a in attempts] == [(None, 7), ("LeaseExpired", None)]


async def test_the_result_of_a_chain_parent(app: TickerQ, ops: Ops) -> None:
    """A parent's end resolves its children (SQL stores: through the general path,
    even from the hot path's batch); its result is stored all the same."""
    parent = await ops.add("alpha")
    job = await ops.claim_one(parent.id)
    child = await ops.add("beta", parent_id=parent.id, run_condition=RunCondition.ON_SUCCESS)
    other = await ops.add("gamma")
    other_job = (await _claimed(ops, [other.id]))[other.id]
    await _claim_with(
        ops,
        [
            ops.outcome(job, Status.DONE, result={"parent": "ż"}),
            ops.outcome(other_job, Status.DONE, result=2.5),
        ],
        functions=[],
    )
    assert [j.id for j in await ops.claim(ops.at(5))] == [child.id]
    assert (await ops.get(parent.id)).result == {"parent": "ż"}
    assert same((await ops.get(other.id)).result, 2.5)
    (attempt,) = await app.time_tickers.attempts(parent.id)
    assert attempt.result == {"parent": "ż"}


async def test_an_occurrence_keeps_its_result(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    fire = ops.at(300)
    assert cron.next_fire_at == fire
    created = await ops.store.advance_cron_ticker(
        cron.id,
        expected_next=fire,
        new_next=ops.at(600),
        fires=[fire],
        priority=Priority.NORMAL,
        now=ops.now,
    )
    assert created == 1
    (job,) = await ops.claim(fire)
    assert job.kind is TickerKind.CRON_OCCURRENCE and job.headers == {}
    await ops.complete(job, Status.DONE, started_at=fire, result={"rows": 12})
    occurrence = await ops.store.get_occurrence(job.id)
    assert occurrence is not None and occurrence.result == {"rows": 12}
    (listed,) = await ops.store.occurrences(cron.id)
    assert listed.result == {"rows": 12}
    (attempt,) = await ops.store.attempts(TickerKind.CRON_OCCURRENCE, job.id)
    assert attempt.result == {"rows": 12}


async def test_purge_takes_rows_with_headers_and_results(app: TickerQ, ops: Ops) -> None:
    ticker = _ticker(ops, MAX)
    await ops.store.add_time_tickers([ticker])
    await ops.run(ticker.id, Status.DONE, result={"big": "x" * 10_000})
    assert await ops.store.purge(ops.at(3600), 10) == 1
    assert await ops.store.get_time_ticker(ticker.id) is None


async def test_no_headers_and_no_result_are_null_on_every_path(
    app: TickerQ, ops: Ops, store_kind: str
) -> None:
    """What is absent is stored as NULL (not as JSON ``{}`` or ``null``) by every path,
    so the fast paths and the general path store alike, and reads turn NULL into {}
    and None."""
    if store_kind == "memory":
        pytest.skip("SQL stores only")
    import sqlalchemy as sa

    single = _ticker(ops)
    await ops.store.add_time_tickers([single])  # the dialect's enqueue
    parent = _ticker(ops, {"a": "1"})
    child = _ticker(ops, parent_id=parent.id)
    await ops.store.add_time_tickers([parent, child])  # the general path
    await ops.store.update_time_ticker(
        parent.id, {"headers": {}, "updated_at": ops.at(1)}, frozenset({Status.IDLE})
    )
    jobs = await _claimed(ops, [single.id, parent.id])
    await ops.store.complete([ops.outcome(jobs[single.id], Status.DONE, result=None)])
    await _claim_with(ops, [ops.outcome(jobs[parent.id], Status.FAILED)], functions=[])
    store: Any = app.store
    async with store.sa_engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FROM tickerq_tickers "
                    "WHERE headers IS NOT NULL OR result IS NOT NULL"
                )
            )
        ).scalar()
        attempts = (
            await conn.execute(
                sa.text("SELECT count(*) FROM tickerq_attempts WHERE result IS NOT NULL")
            )
        ).scalar()
    assert (rows, attempts) == (0, 0)
    assert (await ops.get(parent.id)).headers == {}
    assert (await ops.get(single.id)).result is None

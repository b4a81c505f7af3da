"""Store contract: the read side for dashboards (``tickerq.stores.reads``).

Every test builds the same rows on each store and checks each read against
answers worked out here from the inputs alone (for the search, a reference
model of the documented semantics), so the memory store, SQLite and PostgreSQL
must give the same answers: census counts, throughput buckets, locks per node,
what is due next, pages of time tickers (filters, order, every kind of text
match, totals, the text window), chain children and the change marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from support import START
from tickerq import Priority, Status, TickerQ, TimeTicker
from tickerq.dashboard.queries import Queries
from tickerq.enums import TickerKind
from tickerq.models import Node
from tickerq.stores import reads
from tickerq.stores.base import TickerQuery
from tickerq.stores.reads import (
    CensusGroup,
    ChangeMarker,
    DueItem,
    NodeLocks,
    ThroughputBucket,
)

if TYPE_CHECKING:
    from contract.conftest import Ops

TIME, OCCURRENCE = TickerKind.TIME, TickerKind.CRON_OCCURRENCE


async def _occurrence(app: TickerQ, ops: Ops, function: str, at: datetime) -> UUID:
    """A waiting cron occurrence of ``function`` due at ``at``; its id."""
    cron = await app.cron_tickers.add(function, "0 0 1 1 *")
    await ops.store.advance_cron_ticker(
        cron.id,
        expected_next=cron.next_fire_at,
        new_next=cron.next_fire_at,
        fires=[at],
        priority=Priority.NORMAL,
        now=ops.now,
    )
    (occurrence,) = await app.cron_tickers.occurrences(cron.id)
    return occurrence.id


# -- census ----------------------------------------------------------------------------


async def test_census_counts_rows_by_kind_function_status_and_root(app: TickerQ, ops: Ops) -> None:
    later = START + timedelta(hours=1)
    parent = await ops.add("alpha", execution_time=later)
    await ops.add("alpha", execution_time=later)
    await ops.add("alpha", parent_id=parent.id)
    done = await ops.add("beta")
    await ops.run(done.id, Status.DONE)
    cancelled = await ops.add("gamma", execution_time=later)
    await app.time_tickers.cancel(cancelled.id)
    await _occurrence(app, ops, "alpha", later)

    census = await ops.store.census()
    assert census.counts == {
        CensusGroup(TIME, "alpha", Status.IDLE, True): 2,
        CensusGroup(TIME, "alpha", Status.IDLE, False): 1,
        CensusGroup(TIME, "beta", Status.DONE, True): 1,
        CensusGroup(TIME, "gamma", Status.CANCELLED, True): 1,
        CensusGroup(OCCURRENCE, "alpha", Status.IDLE, True): 1,
    }
    mix = census.by_status()
    assert set(mix) == set(TickerKind) and all(set(m) == set(Status) for m in mix.values())
    assert (mix[TIME][Status.IDLE], mix[TIME][Status.DONE], mix[TIME][Status.FAILED]) == (3, 1, 0)
    assert mix[OCCURRENCE][Status.IDLE] == 1
    assert census.total() == 5
    assert census.total(statuses=[Status.IDLE], function="alpha", roots_only=True) == 2
    assert census.total(OCCURRENCE) == 1
    assert await Queries(ops.store).status_counts() == mix


# -- throughput ------------------------------------------------------------------------


def _expected_buckets(
    ended: Sequence[tuple[datetime, Status]], now: datetime, span: timedelta, size: int
) -> list[ThroughputBucket]:
    """Buckets of ``size`` seconds, aligned on the UNIX epoch, the last one holding
    ``now``, covering ``span``: rows counted by the bucket their end falls in."""
    end = int(now.timestamp()) // size * size + size
    start = end - int(span.total_seconds()) // size * size
    out = []
    for b in range(start, end, size):
        mine = [s for at, s in ended if b <= at.timestamp() < b + size]
        out.append(
            ThroughputBucket(
                datetime.fromtimestamp(b, UTC),
                succeeded=sum(s in (Status.DONE, Status.DUE_DONE) for s in mine),
                failed=sum(s is Status.FAILED for s in mine),
                other=sum(s not in (Status.DONE, Status.DUE_DONE, Status.FAILED) for s in mine),
            )
        )
    return out


async def test_throughput_counts_ended_rows_per_bucket(app: TickerQ, ops: Ops) -> None:
    ends = {
        "alpha": (START - timedelta(minutes=150), Status.DONE),
        "beta": (START - timedelta(minutes=100), Status.FAILED),
        "gamma": (START - timedelta(minutes=95), Status.DUE_DONE),
        "low": (START - timedelta(minutes=10), Status.CANCELLED),
        "high": (START - timedelta(hours=5), Status.DONE),  # before every span below
    }
    added = {f: await ops.add(f, execution_time=START - timedelta(hours=6)) for f in ends}
    jobs = {j.function: j for j in await ops.claim()}
    assert set(jobs) == set(ends)
    for function, (at, status) in ends.items():
        await ops.complete(
            jobs[function], status, started_at=at - timedelta(seconds=1), finished_at=at
        )
    waiting = await ops.add("alpha", execution_time=START + timedelta(hours=1))
    await app.time_tickers.cancel(waiting.id)  # ends now, in the last bucket
    ended = [*ends.values(), (START, Status.CANCELLED)]

    for span, size in (
        (timedelta(hours=4), 3600),
        (timedelta(hours=3), 1800),
        (timedelta(hours=8), 7200),
    ):
        got = await ops.store.throughput(START, span, timedelta(seconds=size))
        assert got == _expected_buckets(ended, START, span, size), (span, size)
        again = await Queries(ops.store).throughput(START, span, timedelta(seconds=size))
        assert again == got  # kept counts give the same answer

    await app.time_tickers.delete(added["alpha"].id)
    ops.store.forget_kept_reads()
    got = await ops.store.throughput(START, timedelta(hours=4), timedelta(hours=1))
    assert got == _expected_buckets(ended[1:], START, timedelta(hours=4), 3600)
    assert got[0].succeeded == 0  # the deleted row's hour


# -- locks and due work ----------------------------------------------------------------


async def test_locks_by_node_counts_claimed_and_running_rows(app: TickerQ, ops: Ops) -> None:
    assert await ops.store.locks_by_node() == []
    for function in ("alpha", "alpha", "beta", "gamma"):
        await ops.add(function)
    a_jobs = await ops.claim(node="node-a", functions=["alpha"])
    await ops.claim(node="node-b", functions=["beta"])
    assert await ops.store.locks_by_node() == [NodeLocks("node-a", 2), NodeLocks("node-b", 1)]
    await ops.complete(a_jobs[0], Status.DONE)
    assert await ops.store.locks_by_node() == [NodeLocks("node-a", 1), NodeLocks("node-b", 1)]
    assert await Queries(ops.store).locks_by_node() == {"node-a": 1, "node-b": 1}


async def test_next_due_lists_waiting_rows_soonest_first(app: TickerQ, ops: Ops) -> None:
    at = {m: START + timedelta(minutes=m) for m in (1, 5, 7, 10, 20, 30)}
    a = await ops.add("alpha", execution_time=at[10])
    await ops.add("alpha", parent_id=a.id)  # waits for its parent: no time
    b = await ops.add("beta", execution_time=at[5])
    high = await ops.add("high", execution_time=at[20])
    low = await ops.add("low", execution_time=at[30])
    cancelled = await ops.add("gamma", execution_time=at[1])
    await app.time_tickers.cancel(cancelled.id)
    running = await ops.add("gamma", execution_time=START)
    await ops.claim_one(running.id)
    occurrence = await _occurrence(app, ops, "alpha", at[7])

    everything = [
        DueItem(TIME, b.id, "beta", at[5]),
        DueItem(OCCURRENCE, occurrence, "alpha", at[7]),
        DueItem(TIME, a.id, "alpha", at[10]),
        DueItem(TIME, high.id, "high", at[20]),
        DueItem(TIME, low.id, "low", at[30]),
    ]
    assert await ops.store.next_due(10) == everything
    assert await ops.store.next_due(3) == everything[:3]
    assert await Queries(ops.store).next_due(1) == everything[:1]


# -- pages of time tickers -------------------------------------------------------------


def _list_order(t: TimeTicker) -> tuple[bool, datetime, datetime, UUID]:
    """Sorted in reverse: latest execution time first (none last), latest created, highest id."""
    return (
        t.execution_time is not None,
        t.execution_time or datetime.min.replace(tzinfo=UTC),
        t.created_at,
        t.id,
    )


def _reference(
    tickers: Sequence[TimeTicker], query: TickerQuery, window: int
) -> tuple[list[UUID], int, int | None]:
    """(ids of the page, total, searched) as the semantics in tickerq.stores.reads say."""
    passing = sorted(
        (
            t
            for t in tickers
            if (not query.statuses or t.status in query.statuses)
            and (query.function is None or t.function == query.function)
            and (query.parent_id is None or t.parent_id == query.parent_id)
            and (not query.roots_only or t.parent_id is None)
        ),
        key=_list_order,
        reverse=True,
    )
    searched = None
    if query.text:
        words = query.text.lower()
        digits = words.replace("-", "")
        is_hex = bool(digits) and all(c in "0123456789abcdef" for c in digits)
        try:
            exact: UUID | None = UUID(query.text)
        except ValueError:
            exact = None
        if exact is not None:
            passing = [t for t in passing if t.id == exact]
        else:
            searched = window if len(passing) > window else None
            passing = [
                t
                for i, t in enumerate(passing)
                if (
                    i < window
                    and (
                        words in t.function.lower()
                        or words in t.description.lower()
                        or (is_hex and digits in t.id.hex)
                    )
                )
                or (is_hex and 4 <= len(digits) <= 32 and t.id.hex.startswith(digits))
            ]
    page = passing[query.offset : query.offset + query.limit]
    return [t.id for t in page], len(passing), searched


async def _search_data(app: TickerQ, ops: Ops) -> list[TimeTicker]:
    """Tickers with ties in time, a chain, several statuses; every one as stored."""
    t0 = START + timedelta(hours=1)
    specs: list[tuple[str, int, str]] = [
        ("alpha", 10, "Send Invoice"),
        ("alpha", 20, "nightly report"),
        ("beta", 30, "Invoice reminder"),
        ("beta", 30, "50% off"),  # same time as the one above
        ("gamma", 30, "5000 items"),
        ("gamma", 40, "snake_case"),
        ("alpha", 40, "snakeXcase"),
        ("beta", 5, ""),
        ("gamma", 50, "Ünïcode invoice"),
    ]
    added = []
    for i, (function, minutes, description) in enumerate(specs):
        if i % 3 == 0:
            ops.clock.tick(1)  # some tickers share created_at too
        when = t0 + timedelta(minutes=minutes)
        added.append(await ops.add(function, execution_time=when, description=description))
    child = await ops.add("gamma", parent_id=added[0].id, description="invoice follow-up")
    grandchild = await ops.add("beta", parent_id=child.id)
    await app.time_tickers.cancel(added[2].id)
    await app.time_tickers.cancel(added[5].id)
    return [await app.time_tickers.get(t.id) for t in [*added, child, grandchild]]


def _texts(tickers: Sequence[TimeTicker]) -> list[str | None]:
    one = tickers[3].id
    text = str(one)
    return [
        None,
        "invoice",
        "INVOICE",
        "ALPH",
        "50%",
        "e_c",
        "snake",
        text,
        text.upper(),
        one.hex,
        "{" + text + "}",
        text[:8],
        text[:6],  # a hex prefix, and pieces of ids in the window
        one.hex[:4].upper(),
        text[12:20],  # a piece with a dash
        one.hex[20:26],
        one.hex[-3:],
        "-",
        "%",
        "_",
        "nothing like it",
    ]


async def _check_queries(ops: Ops, tickers: Sequence[TimeTicker], window: int) -> None:
    store = ops.store
    parent = tickers[0].id
    filters: list[dict[str, Any]] = [
        {},
        {"statuses": [Status.IDLE]},
        {"statuses": [Status.CANCELLED, Status.DONE]},
        {"function": "beta"},
        {"roots_only": True},
        {"parent_id": parent},
        {"function": "alpha", "statuses": [Status.IDLE]},
    ]
    for text in _texts(tickers):
        for where in filters:
            for limit, offset in ((100, 0), (2, 1)) if not where else ((100, 0),):
                query = TickerQuery(text=text, limit=limit, offset=offset, **where)
                ids, total, searched = _reference(tickers, query, window)
                page = await store.search_time_tickers(query)
                got = ([t.id for t in page.items], page.total, page.searched)
                assert got == (ids, total, searched), query
                assert [t.id for t in await store.query_time_tickers(query)] == ids, query
                assert await store.count_time_tickers(query) == total, query


async def test_search_pages_follow_one_semantics(app: TickerQ, ops: Ops) -> None:
    tickers = await _search_data(app, ops)
    assert len(tickers) < reads.TEXT_WINDOW
    await _check_queries(ops, tickers, reads.TEXT_WINDOW)
    # spot checks of the reference itself, as the semantics say
    by_id = {t.id: t for t in tickers}
    page = await ops.store.search_time_tickers(TickerQuery(text="invoice"))
    assert sorted(by_id[t.id].description for t in page.items) == [
        "Invoice reminder",
        "Send Invoice",
        "invoice follow-up",
        "Ünïcode invoice",
    ]
    assert page.total == 4 and page.searched is None
    exact = await ops.store.search_time_tickers(TickerQuery(text=tickers[3].id.hex))
    assert [t.id for t in exact.items] == [tickers[3].id]
    # the dashboard's page is the store's (its text stripped)
    dashboard = await Queries(ops.store).time_tickers(text="  invoice ", limit=2, offset=1)
    assert dashboard == await ops.store.search_time_tickers(
        TickerQuery(text="invoice", limit=2, offset=1)
    )


async def test_search_text_window(app: TickerQ, ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reads, "TEXT_WINDOW", 3)
    oldest = await ops.add("beta", execution_time=START, description="needle 0")
    for i in range(1, 6):
        await ops.add(
            "alpha", execution_time=START + timedelta(minutes=i), description=f"needle {i}"
        )
    tickers = await ops.store.query_time_tickers(TickerQuery())
    assert len(tickers) == 6
    await _check_queries(ops, tickers, 3)

    page = await ops.store.search_time_tickers(TickerQuery(text="needle"))
    assert [t.description for t in page.items] == ["needle 5", "needle 4", "needle 3"]
    assert (page.total, page.searched) == (3, 3)
    assert await ops.store.count_time_tickers(TickerQuery(text="needle")) == 3
    narrowed = await ops.store.search_time_tickers(TickerQuery(text="needle", function="beta"))
    assert [t.id for t in narrowed.items] == [oldest.id] and narrowed.searched is None
    # ids: by prefix and exactly in the whole store, pieces only in the window
    prefix = await ops.store.search_time_tickers(TickerQuery(text=oldest.id.hex[:8]))
    assert oldest.id in {t.id for t in prefix.items} and prefix.searched == 3
    exact = await ops.store.search_time_tickers(TickerQuery(text=str(oldest.id)))
    assert ([t.id for t in exact.items], exact.searched) == ([oldest.id], None)


async def test_children_of_lists_chain_children_oldest_first(app: TickerQ, ops: Ops) -> None:
    parent = await ops.add("alpha", execution_time=START + timedelta(hours=1))
    lone = await ops.add("beta", execution_time=START + timedelta(hours=1))
    kids = []
    for i in range(4):
        if i != 2:
            ops.clock.tick(1)  # two children share created_at: ordered by id
        kids.append(await ops.add("gamma", parent_id=parent.id))
    grandchild = await ops.add("beta", parent_id=kids[0].id)
    expected = sorted(kids, key=lambda k: (k.created_at, k.id))
    unknown = UUID(int=7)

    got = await ops.store.children_of([parent.id, lone.id, kids[0].id, unknown])
    assert {p: [k.id for k in v] for p, v in got.items()} == {
        parent.id: [k.id for k in expected],
        lone.id: [],
        kids[0].id: [grandchild.id],
        unknown: [],
    }
    assert got[parent.id][0] == await app.time_tickers.get(expected[0].id)
    limited = await Queries(ops.store).children_of([parent.id], limit=2)
    assert [k.id for k in limited[parent.id]] == [k.id for k in expected[:2]]
    assert await ops.store.children_of([]) == {}


# -- change marker ---------------------------------------------------------------------


async def _moved(ops: Ops, before: ChangeMarker, part: str) -> ChangeMarker:
    """The marker now, asserting that its ``part`` moved since ``before``."""
    marker = await ops.store.change_marker()
    assert marker is not None
    assert getattr(marker, part) != getattr(before, part), (part, before, marker)
    return marker


async def test_change_marker_moves_on_writes(app: TickerQ, ops: Ops, store_kind: str) -> None:
    marker = await ops.store.change_marker()
    if store_kind == "memory":
        assert marker is None  # no other process writes to it: the event bus sees it all
        assert await Queries(ops.store).change_marker() is None
        return
    assert marker is not None
    assert await Queries(ops.store).change_marker() == marker.parts()
    assert await ops.store.change_marker() == marker  # nothing changed

    ops.clock.tick(1)
    ticker = await ops.add("alpha", execution_time=START + timedelta(hours=1))
    after_add = await _moved(ops, marker, "time_tickers")
    assert after_add.time_tickers == ops.now

    ops.clock.tick(1)
    await ops.run((await ops.add("beta")).id)
    after_run = await _moved(ops, after_add, "time_tickers")
    assert after_run.time_tickers != after_add.time_tickers

    ops.clock.tick(1)
    await app.cron_tickers.add("gamma", "0 0 * * *")
    after_cron = await _moved(ops, after_run, "crons")
    assert after_cron.crons[1] == after_run.crons[1] + 1

    ops.clock.tick(1)
    node = Node(
        id="node-z", started_at=ops.now, last_heartbeat=ops.now, version="t", max_concurrency=1
    )
    await ops.store.heartbeat(node, [], ops.now + timedelta(minutes=1))
    after_beat = await _moved(ops, after_cron, "nodes")
    assert after_beat.nodes == (ops.now, after_cron.nodes[1] + 1)

    await app.time_tickers.delete(ticker.id)
    if store_kind == "sqlite":  # PostgreSQL counts deletions in its statistics, seconds later
        after_delete = await ops.store.change_marker()
        assert after_delete is not None
        assert after_delete.deletions == after_beat.deletions - 1  # the rows left
        assert after_delete.parts() != after_beat.parts()

"""The dashboard's read queries: pages, totals, text search, chains and kept throughput counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest

from tickerq import TickerQ, TimeTickerSpec
from tickerq.dashboard.auth import DashboardUser
from tickerq.dashboard.service import Service
from tickerq.enums import Status
from tickerq.models import TimeTicker
from tickerq.stores import reads
from tickerq.stores.sql import SqlStore

LATER = datetime(2100, 1, 1, tzinfo=UTC)


async def _add(app: TickerQ, n: int, description: str = "", minutes: int = 0) -> list[TimeTicker]:
    return [
        await app.time_tickers.add(
            "charge",
            request=None,
            description=f"{description} {i}".strip(),
            execution_time=LATER + timedelta(minutes=minutes + i // 2),  # pairs tie
        )
        for i in range(n)
    ]


async def test_pages_follow_the_list_order_without_gaps(app: TickerQ) -> None:
    added = await _add(app, 7)
    service = Service(app)
    everything = await service.time_ticker_page(function="charge", limit=100)
    assert everything.total == 7
    assert {t.id for t in everything.items} == {t.id for t in added}
    times = [t.execution_time for t in everything.items]
    assert times == sorted(times, reverse=True)
    pages = [
        (await service.time_ticker_page(function="charge", limit=3, offset=o)).items
        for o in (0, 3, 6)
    ]
    assert [t.id for page in pages for t in page] == [t.id for t in everything.items]


async def test_text_search_by_id_prefix_and_words(app: TickerQ) -> None:
    added = await _add(app, 3, "invoice for ACME")
    other = (await _add(app, 1, "unrelated", minutes=60))[0]
    service = Service(app)
    target = added[1]

    exact = await service.time_ticker_page(text=str(target.id))
    assert [t.id for t in exact.items] == [target.id] and exact.total == 1
    prefix = await service.time_ticker_page(text=str(target.id)[:8])
    assert target.id in {t.id for t in prefix.items}
    words = await service.time_ticker_page(text="acme", limit=2)
    assert words.total == 3 and len(words.items) == 2 and words.searched is None
    assert other.id not in {t.id for t in words.items}
    assert (await service.time_ticker_page(text="100% _nothing_")).total == 0


async def test_text_search_looks_at_the_latest_rows_and_says_so(
    app: TickerQ, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "TEXT_WINDOW", 3)
    await _add(app, 5, "needle")
    body = (await client.get("/api/time-tickers", params={"q": "needle"})).json()
    assert (body["total"], body["searched"]) == (3, 3)
    # the newest three: latest execution time first
    assert [i["description"] for i in body["items"]] == ["needle 4", "needle 3", "needle 2"]
    html = (await client.get("/time-tickers", params={"q": "needle"})).text
    assert 'data-testid="search-window"' in html
    full = await client.get("/api/time-tickers", params={"q": "needle", "function": "charge"})
    assert full.json()["searched"] == 3


async def test_chain_trees_for_a_page_and_totals_of_roots(app: TickerQ) -> None:
    await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="charge",
                execution_time=LATER,
                children=[
                    TimeTickerSpec(function="charge", children=[TimeTickerSpec(function="charge")]),
                    TimeTickerSpec(function="charge"),
                ],
            )
            for _ in range(2)
        ]
    )
    service = Service(app)
    page = await service.time_ticker_page(roots_only=True)
    assert page.total == 2
    root_ids = [t.id for t in page.items]
    trees = await service.chain_trees(root_ids)
    for root in root_ids:
        depths = [d for d, _ in trees[root]]
        assert sorted(depths) == [1, 1, 2]
        assert trees[root] == await service.children_tree(root)
    assert (await service.time_ticker_page()).total == 8


async def test_kept_throughput_counts_follow_the_dashboards_deletes(app: TickerQ) -> None:
    if app.store_url.startswith("memory"):
        pytest.skip("the memory store counts its rows every time")
    now = datetime.now(UTC)
    ended = now - timedelta(hours=3)
    ticker = TimeTicker(
        id=uuid4(),
        function="charge",
        execution_time=ended,
        status=Status.DONE,
        finished_at=ended,
        created_at=ended,
        updated_at=ended,
    )
    await app.store.add_time_tickers([ticker])
    await app.store.update_time_ticker(
        ticker.id,
        {"status": Status.DONE.value, "finished_at": ended, "updated_at": ended},
        frozenset(Status),
    )
    service = Service(app)
    chart = await service.throughput(24, 3600)
    assert sum(chart.succeeded) == 1
    assert sum((await service.throughput(24, 3600)).succeeded) == 1  # from the kept hours
    await service.delete(DashboardUser("tester"), ticker.id)
    assert sum((await service.throughput(24, 3600)).succeeded) == 0


async def test_throughput_groups_by_bucket_in_the_database(app: TickerQ) -> None:
    """One row per (bucket, status) comes back, not one per distinct second (a true
    division in SQL made every second its own group: 6 s instead of 0.1 s on 1M rows)."""
    sql = app.store
    if not isinstance(sql, SqlStore):
        pytest.skip("SQL stores only")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for second in (1, 2, 3):
        ticker = (await _add(app, 1))[0]
        when = hour + timedelta(seconds=second)
        await app.store.update_time_ticker(
            ticker.id, {"status": "DONE", "finished_at": when}, frozenset(Status)
        )
    start = int(hour.timestamp())
    rows = await sql._bucket_counts(hour, start, start + 3600, 3600)
    assert rows == [(start, Status.DONE, 3)]

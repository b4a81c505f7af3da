"""Select rows, then retry or cancel them: through chromium, seen in the page and the store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import expect

from dashboard.browser.conftest import Browse
from tickerq import Status


def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(0.05)


def row(page: Any, ticker_id: UUID) -> Any:
    return page.locator(f"[data-testid=ticker-row][data-id='{ticker_id}']")


@pytest.mark.timeout(90)
def test_select_then_cancel_and_retry_time_tickers(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    tt = shop.app.time_tickers
    tag = f"bulk-{time.monotonic_ns()}"
    later = datetime.now(UTC) + timedelta(days=30)
    waiting = [
        shop.run(
            tt.add(
                "resize_image",
                request={"path": f"p/{i}.jpg", "width": 640},
                execution_time=later,
                description=f"{tag} waiting {i}",
            )
        ).id
        for i in range(2)
    ]
    failing = [
        shop.run(
            tt.add("import_feed", request={"note": "bad row"}, description=f"{tag} feed {i}")
        ).id
        for i in range(2)
    ]
    eventually(lambda: all(shop.run(tt.get(i)).status is Status.FAILED for i in failing))

    browse.goto(f"/time-tickers?q={tag}")
    expect(page.get_by_test_id("ticker-row")).to_have_count(4)

    # nothing selected: the page says so, asks nothing and posts nothing
    page.get_by_test_id("bulk-retry").click()
    expect(page.get_by_test_id("flash")).to_have_text("Select at least one row first.")
    assert browse.watch.dialogs == []

    # select all on the page, cancel: the waiting ones end, the ended ones are skipped
    page.get_by_test_id("select-all").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("4 selected")
    page.get_by_test_id("bulk-cancel").click()
    expect(page.get_by_test_id("bulk-summary")).to_have_text(
        "Cancelled 2 ticker(s). Skipped 2: 2 already ended (2 FAILED)."
    )
    assert browse.watch.dialogs[-1].startswith("confirm: Cancel the 4 selected ticker(s)?")
    assert f"q={tag}" in page.url and "did=cancel" in page.url  # the same list, filtered
    skipped = page.get_by_test_id("bulk-skipped-row")
    expect(skipped).to_have_count(2)
    assert {UUID(x) for x in skipped.evaluate_all("rs => rs.map(r => r.dataset.id)")} == set(
        failing
    )
    expect(skipped.first).to_contain_text("is FAILED; it has already ended")
    for ticker_id in waiting:
        expect(row(page, ticker_id)).to_have_attribute("data-status", "CANCELLED")
        assert shop.run(tt.get(ticker_id)).status is Status.CANCELLED
    for ticker_id in failing:
        assert shop.run(tt.get(ticker_id)).status is Status.FAILED

    # select the failed ones, retry them: they run again (and fail again)
    for ticker_id in failing:
        row(page, ticker_id).get_by_test_id("select-row").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
    page.get_by_test_id("bulk-retry").click()
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Retried 2 ticker(s) (due now).")
    assert browse.watch.dialogs[-1].startswith("confirm: Run the 2 selected ticker(s) again now?")
    expect(page.get_by_test_id("bulk-skipped")).to_have_count(0)
    for ticker_id in failing:
        eventually(lambda t=ticker_id: len(shop.run(tt.attempts(t))) == 2)
        expect(row(page, ticker_id)).to_have_attribute("data-status", "FAILED")
    assert f"q={tag}" in page.url  # back on the same filtered list

    shop.run(tt.delete_many(waiting + failing))
    browse.watch.assert_clean()


@pytest.mark.timeout(60)
def test_select_then_retry_occurrences(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    ct = shop.app.cron_tickers
    cron = shop.seeded.cron_inventory
    browse.goto(f"/cron-tickers/{cron}")
    ended = page.locator("[data-testid=occurrence-row][data-status=DONE]").first
    first = UUID(ended.get_attribute("data-id") or "")
    before = len(shop.run(ct.attempts(first)))

    ended.get_by_test_id("select-row").check()
    page.get_by_test_id("bulk-retry").click()
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Retried 1 occurrence(s) (due now).")
    assert browse.watch.dialogs[-1].startswith("confirm: Run the 1 selected run(s) again now?")
    eventually(lambda: len(shop.run(ct.attempts(first))) == before + 1)
    browse.watch.assert_clean()


@pytest.mark.timeout(60)
def test_a_live_refresh_never_wipes_a_selection(browse: Browse) -> None:
    """A refresh already on its way when rows get selected is dropped, not swapped in
    (it would clear the checkboxes); the list refreshes once nothing is selected."""
    page, shop = browse.page, browse.shop
    tt = shop.app.time_tickers
    tag = f"keep-{time.monotonic_ns()}"
    later = datetime.now(UTC) + timedelta(days=30)

    def add(i: int) -> UUID:
        return shop.run(
            tt.add(
                "resize_image",
                request={"path": f"k/{i}.jpg", "width": 320},
                execution_time=later,
                description=f"{tag} {i}",
            )
        ).id

    first = add(0)
    browse.goto(f"/time-tickers?q={tag}")
    held: list[Any] = []

    def hold_refreshes(route: Any) -> None:
        if route.request.headers.get("x-tickerq-refresh"):
            held.append(route)
        else:
            route.continue_()

    page.route("**/time-tickers?*", hold_refreshes)
    second = add(1)  # its live event starts a refresh of the list, held here
    eventually(lambda: held or page.wait_for_timeout(50))
    row(page, first).get_by_test_id("select-row").check()
    for route in held:
        route.continue_()
    page.unroute("**/time-tickers?*")
    page.wait_for_timeout(500)  # the held answer arrived and was dropped
    expect(row(page, first).get_by_test_id("select-row")).to_be_checked()
    expect(row(page, second)).to_have_count(0)

    row(page, first).get_by_test_id("select-row").uncheck()
    expect(row(page, second)).to_have_count(1, timeout=8000)  # refreshed later
    shop.run(tt.delete_many([first, second]))
    browse.watch.assert_clean()

"""Every operation through the pages, its effect seen in the page and in the store."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import expect

from dashboard.browser.conftest import Browse
from tickerq import Status
from tickerq.errors import TickerNotFoundError

DETAIL = re.compile(r"/time-tickers/([0-9a-f-]{36})$")
CRON_DETAIL = re.compile(r"/cron-tickers/([0-9a-f-]{36})$")


def current_id(page: Any, pattern: re.Pattern[str]) -> UUID:
    page.wait_for_url(pattern)
    match = pattern.search(page.url)
    assert match, page.url
    return UUID(match.group(1))


def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_time_ticker_operations(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    tt = shop.app.time_tickers
    browse.goto("/time-tickers")

    # add
    page.get_by_test_id("add-time-ticker").click()
    page.wait_for_url(re.compile("/time-tickers/new$"))
    page.get_by_test_id("form-function").select_option("send_email")
    page.get_by_test_id("form-request").fill('{"to": "ops@example.com", "subject": "Stock low"}')
    page.get_by_test_id("form-execution-time").fill("2031-05-04T10:00:00")
    page.get_by_test_id("form-description").fill("stock alert")
    page.get_by_test_id("form-retries").fill("1")
    page.get_by_test_id("form-submit").click()
    added_id = current_id(page, DETAIL)
    expect(page.get_by_test_id("ticker-description")).to_have_text("stock alert")
    added = shop.run(tt.get(added_id))
    assert added.function == "send_email" and added.status is Status.IDLE
    assert added.request == {"to": "ops@example.com", "subject": "Stock low"}
    assert added.execution_time == datetime(2031, 5, 4, 10, tzinfo=UTC)
    assert added.retries == 1

    # edit
    page.get_by_test_id("action-edit").click()
    page.wait_for_url(re.compile("/edit$"))
    expect(page.get_by_test_id("form-execution-time")).to_have_value(
        re.compile(r"^2031-05-04T10:00(:00)?$")
    )
    page.get_by_test_id("form-description").fill("stock alert (edited)")
    page.get_by_test_id("form-execution-time").fill("2031-05-05T11:30:00")
    page.get_by_test_id("form-submit").click()
    page.wait_for_url(DETAIL)
    expect(page.get_by_test_id("ticker-description")).to_have_text("stock alert (edited)")
    edited = shop.run(tt.get(added_id))
    assert edited.description == "stock alert (edited)"
    assert edited.execution_time == datetime(2031, 5, 5, 11, 30, tzinfo=UTC)

    # a bad edit is refused with a message naming the value, nothing changes
    page.get_by_test_id("action-edit").click()
    page.get_by_test_id("form-request").fill("{not json")
    page.get_by_test_id("form-submit").click()
    expect(page.get_by_test_id("form-error")).to_contain_text("not valid JSON")
    browse.watch.allow(r"(HTTP 422: POST|status of 422 ).*/time-tickers/")
    assert shop.run(tt.get(added_id)).request == added.request
    browse.goto(f"/time-tickers/{added_id}")

    # duplicate: the copy is due now, runs, and the page shows it ending without a reload
    page.get_by_test_id("action-duplicate").click()
    page.wait_for_url(lambda url: DETAIL.search(url) is not None and str(added_id) not in url)
    copy_id = current_id(page, DETAIL)
    copy = shop.run(tt.get(copy_id))
    assert copy.function == "send_email" and copy.request == added.request
    assert copy.description == "stock alert (edited)"
    expect(page.get_by_test_id("ticker-detail")).to_have_attribute(
        "data-status", re.compile("DONE|DUE_DONE"), timeout=8000
    )
    assert shop.run(tt.get(copy_id)).status.is_final
    expect(page.get_by_test_id("attempt-row")).to_have_count(1)

    # delete (after a confirm dialog)
    page.get_by_test_id("action-delete").click()
    page.wait_for_url(re.compile("/time-tickers$"))
    with pytest.raises(TickerNotFoundError):
        shop.run(tt.get(copy_id))
    assert any("Delete this ticker" in d for d in browse.watch.dialogs)

    # cancel the waiting original
    browse.goto(f"/time-tickers/{added_id}")
    page.get_by_test_id("action-cancel").click()
    expect(page.get_by_test_id("ticker-detail")).to_have_attribute("data-status", "CANCELLED")
    assert shop.run(tt.get(added_id)).status is Status.CANCELLED

    # retry now: it runs at once
    page.get_by_test_id("action-retry").click()
    expect(page.get_by_test_id("ticker-detail")).to_have_attribute(
        "data-status", re.compile("DONE|DUE_DONE"), timeout=8000
    )
    assert shop.run(tt.get(added_id)).status.is_final

    # batch delete: check two rows, delete them
    tag = f"batch-{time.monotonic_ns()}"
    later = datetime.now(UTC) + timedelta(days=30)
    for i in range(3):
        shop.run(
            tt.add(
                "charge_card",
                request={"order_id": i, "amount": 1.0},
                execution_time=later,
                description=f"{tag} {i}",
            )
        )
    browse.goto(f"/time-tickers?q={tag}")
    rows = page.get_by_test_id("ticker-row")
    expect(rows).to_have_count(3)
    rows.nth(0).get_by_test_id("select-row").check()
    rows.nth(1).get_by_test_id("select-row").check()
    chosen = rows.evaluate_all("rs => rs.slice(0, 2).map(r => r.dataset.id)")
    page.get_by_test_id("batch-delete").click()
    expect(page.get_by_test_id("deleted-notice")).to_have_text("Deleted 2 ticker(s).")
    left = shop.run(tt.query(text=tag))
    assert len(left) == 1 and str(left[0].id) not in chosen
    # select-all then delete the rest
    browse.goto(f"/time-tickers?q={tag}")
    page.get_by_test_id("select-all").check()
    expect(page.get_by_test_id("select-row")).to_be_checked()
    page.get_by_test_id("batch-delete").click()
    expect(page.get_by_test_id("deleted-notice")).to_have_text("Deleted 1 ticker(s).")
    assert shop.run(tt.count(text=tag)) == 0

    shop.run(tt.delete(added_id))
    browse.watch.assert_clean()


@pytest.mark.timeout(60)
def test_cron_operations(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    ct = shop.app.cron_tickers
    browse.goto("/cron-tickers")

    page.get_by_test_id("add-cron-ticker").click()
    page.wait_for_url(re.compile("/cron-tickers/new$"))
    page.get_by_test_id("form-function").select_option("nightly_report")
    page.get_by_test_id("form-expression").fill("15 4 * * sun")
    page.get_by_test_id("form-timezone").fill("Asia/Tokyo")
    expect(page.get_by_test_id("cron-preview-description")).to_have_text(
        "at 04:15 on Sunday (Asia/Tokyo)"
    )
    expect(page.get_by_test_id("cron-preview-fire").first).to_contain_text("Sun ")
    page.get_by_test_id("form-description").fill("weekly stock report")
    page.get_by_test_id("form-submit").click()
    cron_id = current_id(page, CRON_DETAIL)
    cron = shop.run(ct.get(cron_id))
    assert (cron.function, cron.expression, cron.timezone) == (
        "nightly_report",
        "15 4 * * sun",
        "Asia/Tokyo",
    )
    assert cron.enabled and cron.description == "weekly stock report"
    expect(page.get_by_test_id("cron-description")).to_contain_text("at 04:15 on Sunday")
    expect(page.get_by_test_id("next-fire")).to_have_count(10)

    # disable / enable on the detail page
    page.get_by_test_id("cron-disable").click()
    expect(page.get_by_test_id("cron-state")).to_have_text("disabled")
    assert shop.run(ct.get(cron_id)).enabled is False
    expect(page.get_by_test_id("next-fires")).to_contain_text("Disabled")
    page.get_by_test_id("cron-enable").click()
    expect(page.get_by_test_id("cron-state")).to_have_text("enabled")
    assert shop.run(ct.get(cron_id)).enabled is True

    # run now: an occurrence appears and ends, live
    expect(page.get_by_test_id("occurrence-row")).to_have_count(0)
    page.get_by_test_id("cron-run").click()
    expect(page.get_by_test_id("occurrence-row")).to_have_count(1)
    expect(page.get_by_test_id("occurrence-row")).to_have_attribute(
        "data-status", re.compile("DONE|DUE_DONE"), timeout=8000
    )
    (occurrence,) = shop.run(ct.occurrences(cron_id))
    assert occurrence.status.is_final
    # the chart shows the run
    expect(page.locator("#occurrence-chart canvas")).to_be_visible(timeout=8000)

    # disable from the list page
    browse.goto("/cron-tickers")
    row = page.locator(f"[data-testid=cron-row][data-id='{cron_id}']")
    row.get_by_test_id("cron-disable").click()
    expect(row).to_have_attribute("data-enabled", "false")
    assert shop.run(ct.get(cron_id)).enabled is False
    assert page.url.endswith("/cron-tickers")

    # delete
    row.get_by_test_id("cron-link").click()
    page.wait_for_url(CRON_DETAIL)
    page.get_by_test_id("cron-delete").click()
    page.wait_for_url(re.compile("/cron-tickers$"))
    expect(row).to_have_count(0)
    with pytest.raises(TickerNotFoundError):
        shop.run(ct.get(cron_id))
    browse.watch.assert_clean()


def test_pause_and_resume_the_engine(browse: Browse) -> None:
    page, app = browse.page, browse.shop.app
    browse.goto("/")
    try:
        page.get_by_test_id("engine-pause").click()
        expect(page.get_by_test_id("engine-state")).to_contain_text("paused")
        assert app.paused
        assert any("Pause claiming new work" in d for d in browse.watch.dialogs)
        browse.goto("/nodes")
        expect(page.locator("[data-testid=node-row][data-node=web-1]")).to_contain_text("paused")
        browse.goto("/")
        page.get_by_test_id("engine-resume").click()
        expect(page.get_by_test_id("engine-state")).to_contain_text("running")
        assert not app.paused
    finally:
        if app.paused:
            browse.shop.loop.call_soon_threadsafe(app.resume)
    browse.watch.assert_clean()

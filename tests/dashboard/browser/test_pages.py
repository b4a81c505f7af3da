"""Every page loads in chromium with data and without errors; filters, paging, timezones.

Each page is also captured as a full-page screenshot, 1280 px wide (see conftest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.browser.conftest import Browse, wait_charts
from tickerq import Status


def shot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    assert path.stat().st_size > 10_000
    return path


@pytest.mark.timeout(90)
def test_every_page_loads_with_data(browse: Browse, screenshot_dir: Path) -> None:
    page, seeded, run = browse.page, browse.shop.seeded, browse.shop.run
    tt = browse.shop.app.time_tickers

    browse.goto("/")
    expect(page).to_have_title(re.compile("Overview"))
    counts = run(tt.count(status=Status.FAILED))
    expect(page.get_by_test_id("status-mix-FAILED").locator("td").nth(1)).to_have_text(str(counts))
    expect(page.get_by_test_id("engine-state")).to_contain_text("running")
    expect(page.get_by_test_id("function-row")).to_have_count(6)
    expect(page.locator("[data-testid=node-row][data-node=web-1]")).to_be_visible()
    expect(page.get_by_test_id("next-run")).not_to_have_text("–")
    wait_charts(page)
    expect(page.locator("#throughput-chart canvas")).to_be_visible()
    shot(page, screenshot_dir, "overview")

    browse.goto("/time-tickers")
    expect(page.get_by_test_id("ticker-row").first).to_be_visible()
    expect(page.get_by_test_id("page-info")).to_contain_text("page 1 of")
    chain = page.locator(f"[data-testid=ticker-row][data-id='{seeded.chain_parent}']")
    expect(chain).to_have_attribute("data-depth", "0")
    for child in seeded.chain_children:
        expect(page.locator(f"[data-testid=ticker-row][data-id='{child}']")).to_have_attribute(
            "data-depth", "1"
        )
    shot(page, screenshot_dir, "time-tickers")

    browse.goto(f"/time-tickers/{seeded.retrying}")
    retrying = run(tt.get(seeded.retrying))
    assert retrying.status is Status.IDLE and retrying.retry_count == 1
    expect(page.get_by_test_id("ticker-detail")).to_have_attribute("data-status", "IDLE")
    expect(page.get_by_test_id("retry-status")).to_contain_text("1 of 2 retries used")
    expect(page.get_by_test_id("payload")).to_contain_text("grace@bounce.example")
    expect(page.get_by_test_id("attempt-row")).to_have_count(1)
    page.locator("summary", has_text="traceback").click()
    expect(page.get_by_test_id("traceback")).to_contain_text("ConnectionError: SMTP 550")
    shot(page, screenshot_dir, "time-ticker")

    browse.goto("/cron-tickers")
    expect(page.get_by_test_id("cron-row")).to_have_count(
        len(run(browse.shop.app.cron_tickers.query()))
    )
    nightly = page.locator(f"[data-testid=cron-row][data-id='{seeded.cron_nightly}']")
    expect(nightly.get_by_test_id("cron-description")).to_have_text("at 03:00 every day")
    expect(nightly.get_by_test_id("cron-next")).to_contain_text("03:00:00 CET")
    shot(page, screenshot_dir, "cron-tickers")

    browse.goto(f"/cron-tickers/{seeded.cron_inventory}")
    occurrences = run(browse.shop.app.cron_tickers.occurrences(seeded.cron_inventory, limit=25))
    assert len(occurrences) >= 5
    expect(page.get_by_test_id("occurrence-row")).to_have_count(len(occurrences))
    expect(page.get_by_test_id("next-fire")).to_have_count(10)
    wait_charts(page)
    expect(page.locator("#occurrence-chart canvas")).to_be_visible()
    shot(page, screenshot_dir, "cron-ticker")

    browse.goto("/nodes")
    expect(page.locator("[data-testid=node-row][data-node=web-1]")).to_contain_text("this process")
    expect(page.locator("[data-testid=node-row][data-node=worker-2]")).to_be_visible()
    shot(page, screenshot_dir, "nodes")

    browse.goto("/time-tickers/new")
    page.get_by_test_id("form-function").select_option("send_email")
    page.get_by_test_id("form-request").fill('{"to": "ada@example.com", "subject": "Hello"}')
    page.get_by_test_id("form-description").fill("welcome mail")
    shot(page, screenshot_dir, "add-time-ticker")

    browse.goto("/cron-tickers/new")
    page.get_by_test_id("form-function").select_option("nightly_report")
    page.get_by_test_id("form-expression").fill("30 6 * * mon-fri")
    page.get_by_test_id("form-timezone").fill("Europe/Berlin")
    expect(page.get_by_test_id("cron-preview-description")).to_contain_text(
        "at 06:30 on Monday through Friday (Europe/Berlin)"
    )
    expect(page.get_by_test_id("cron-preview-fire")).to_have_count(5)
    expect(page.get_by_test_id("cron-preview-fire").first).to_contain_text("06:30:00 CE")
    page.get_by_test_id("form-expression").fill("61 * * * *")
    expect(page.get_by_test_id("cron-preview-error")).to_be_visible()
    page.get_by_test_id("form-expression").fill("30 6 * * mon-fri")
    expect(page.get_by_test_id("cron-preview-fire")).to_have_count(5)
    shot(page, screenshot_dir, "add-cron-ticker")

    browse.watch.assert_clean()


def test_timezone_selector_changes_displayed_times(browse: Browse) -> None:
    page, seeded = browse.page, browse.shop.seeded
    waiting = browse.shop.run(browse.shop.app.time_tickers.get(seeded.waiting))
    assert waiting.execution_time is not None
    browse.goto(f"/time-tickers/{seeded.waiting}")
    due = page.locator("[data-testid=ticker-fields] time").first
    utc = waiting.execution_time.strftime("%Y-%m-%d %H:%M:%S")
    expect(due).to_have_text(utc)

    page.get_by_test_id("tz-select").select_option("Asia/Tokyo")
    page.wait_for_url(re.compile(r"tz=Asia%2FTokyo"))
    from zoneinfo import ZoneInfo

    tokyo = waiting.execution_time.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    expect(due).to_have_text(tokyo)
    expect(page.locator("footer")).to_contain_text("times in Asia/Tokyo")
    # the choice sticks (cookie) on the next page
    browse.goto("/time-tickers")
    expect(page.get_by_test_id("tz-select")).to_have_value("Asia/Tokyo")
    row = page.locator(f"[data-testid=ticker-row][data-id='{seeded.waiting}'] time")
    expect(row).to_have_text(tokyo)
    browse.watch.assert_clean()


def test_filter_by_status_function_text_and_page(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    tt = shop.app.time_tickers
    browse.goto("/time-tickers")

    page.get_by_test_id("filter-status").select_option("FAILED")
    page.get_by_test_id("filter-apply").click()
    page.wait_for_url(re.compile("status=FAILED"))
    failed = shop.run(tt.count(status=Status.FAILED))
    expect(page.get_by_test_id("total")).to_have_text(f"{failed} ticker(s)")
    rows = page.get_by_test_id("ticker-row")
    expect(rows.first).to_be_visible()
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.status)")) == {"FAILED"}

    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-function").select_option("charge_card")
    page.get_by_test_id("filter-apply").click()
    page.wait_for_url(re.compile("function=charge_card"))
    charges = shop.run(tt.count(function="charge_card"))
    expect(page.get_by_test_id("total")).to_have_text(f"{charges} ticker(s)")
    names = page.locator("[data-testid=ticker-row] [data-testid=ticker-link]")
    assert set(names.all_inner_texts()) == {"charge_card"}

    page.get_by_test_id("filter-function").select_option("")
    page.get_by_test_id("filter-text").fill("order")
    page.get_by_test_id("filter-apply").click()
    page.wait_for_url(re.compile("q=order"))
    orders = shop.run(tt.count(text="order"))
    assert orders > 25
    pages = -(-orders // 25)
    expect(page.get_by_test_id("total")).to_have_text(f"{orders} ticker(s)")
    expect(rows).to_have_count(25)
    expect(page.get_by_test_id("page-info")).to_have_text(f"page 1 of {pages}")
    first_page = set(rows.evaluate_all("rs => rs.map(r => r.dataset.id)"))

    page.get_by_test_id("page-next").click()
    page.wait_for_url(re.compile("page=2"))
    expect(page.get_by_test_id("page-info")).to_have_text(f"page 2 of {pages}")
    expect(rows).to_have_count(min(25, orders - 25))
    second_page = set(rows.evaluate_all("rs => rs.map(r => r.dataset.id)"))
    assert not first_page & second_page
    expected = [str(t.id) for t in shop.run(tt.query(text="order", limit=50))]
    assert first_page | second_page == set(expected)
    # the filter survives paging
    expect(page.get_by_test_id("filter-text")).to_have_value("order")
    page.get_by_test_id("page-prev").click()
    page.wait_for_url(re.compile("page=1"))
    expect(page.get_by_test_id("page-info")).to_contain_text("page 1 of")

    page.get_by_test_id("filter-reset").click()
    expect(page.get_by_test_id("filter-text")).to_have_value("")
    browse.watch.assert_clean()

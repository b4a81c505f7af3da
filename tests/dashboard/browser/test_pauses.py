"""Pausing from the Functions page: buttons, what the page shows, what the nodes do."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.browser.conftest import Browse
from dashboard.browser.shop import Email
from tickerq import Status


def _resume_everything(browse: Browse) -> None:
    shop = browse.shop

    async def clear() -> None:
        for pause in await shop.app.pauses.query():
            if pause.cluster:
                await shop.app.pauses.resume_cluster()
            else:
                await shop.app.pauses.resume(pause.function)

    shop.run(clear())


def _status(browse: Browse, ticker_id: Any) -> Status:
    return browse.shop.run(browse.shop.app.time_tickers.get(ticker_id)).status


@pytest.mark.timeout(60)
def test_pause_and_resume_a_function_and_all_nodes(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    browse.goto("/functions")
    row = page.locator("[data-testid=function-page-row][data-function=send_email]")
    try:
        expect(row).to_have_attribute("data-paused", "false")
        row.get_by_test_id("function-pause").click()
        expect(row).to_have_attribute("data-paused", "true")
        expect(row.get_by_test_id("function-state")).to_contain_text("by local")
        assert any("Pause send_email on every node" in d for d in browse.watch.dialogs)
        pause = shop.run(shop.app.pauses.get("send_email"))
        assert pause is not None and pause.paused_by == "local"

        # neither node starts it (once their view of the pauses is fresh: within
        # 0.5 s, so a second here); the page counts it as held back (live update)
        time.sleep(1.0)
        held = shop.run(
            shop.app.time_tickers.add("send_email", request=Email("held@example.com", "Hi"))
        )
        expect(row.get_by_test_id("function-held")).to_have_text("1")
        time.sleep(1.0)
        assert _status(browse, held.id) is Status.IDLE

        row.get_by_test_id("function-resume").click()
        expect(row).to_have_attribute("data-paused", "false")
        deadline = time.monotonic() + 5
        while _status(browse, held.id) is Status.IDLE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(browse, held.id) in (Status.IN_PROGRESS, Status.DONE)

        # all nodes
        box = page.get_by_test_id("cluster-box")
        box.get_by_test_id("cluster-pause").click()
        expect(box.get_by_test_id("cluster-state")).to_contain_text("all work paused")
        expect(row.get_by_test_id("function-state")).to_contain_text("all nodes paused")
        assert shop.run(shop.app.pauses.get("*")) is not None
        box.get_by_test_id("cluster-resume").click()
        expect(box.get_by_test_id("cluster-state")).to_have_text("running")
        assert shop.run(shop.app.pauses.query()) == []

        # a pause made by another node shows up live
        shop.run(shop.worker.pauses.pause("charge_card", by="worker-2"))
        other = page.locator("[data-testid=function-page-row][data-function=charge_card]")
        expect(other).to_have_attribute("data-paused", "true")
        expect(other.get_by_test_id("function-state")).to_contain_text("by worker-2")
    finally:
        _resume_everything(browse)
    browse.watch.assert_clean()


def test_the_overview_tells_the_cluster_pause_from_this_nodes(browse: Browse) -> None:
    page = browse.page
    browse.goto("/")
    try:
        expect(page.get_by_test_id("cluster-state")).to_have_text("all nodes: running")
        expect(page.get_by_test_id("engine-state")).to_contain_text("this node (web-1)")
        page.get_by_test_id("cluster-pause").click()
        expect(page.get_by_test_id("cluster-state")).to_have_text("all nodes: paused by local")
        assert browse.page.url.rstrip("/") == browse.url
        assert not browse.shop.app.paused  # this node's own pause is another thing
        page.get_by_test_id("cluster-resume").click()
        expect(page.get_by_test_id("cluster-state")).to_have_text("all nodes: running")
    finally:
        _resume_everything(browse)
    browse.watch.assert_clean()

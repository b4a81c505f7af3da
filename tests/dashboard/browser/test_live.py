"""Live updates: a change made by another process, or in another browser page, shows up
in an open page without a reload."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from playwright.sync_api import expect

from dashboard.browser.conftest import Browse
from tickerq import Status, TickerContext, TickerQ
from tickerq.dashboard.server import start_server

OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime, timezone
    from tickerq import TickerContext, TickerQ

    app = TickerQ(sys.argv[1], node_id="script")

    @app.function()
    async def charge_card(ctx: TickerContext[dict]) -> None:
        return None

    async def main() -> None:
        await app.open()
        ticker = await app.time_tickers.add(
            "charge_card",
            request={"order_id": 7001, "amount": 12.5},
            execution_time=datetime(2035, 1, 1, tzinfo=timezone.utc),
            description=sys.argv[2],
        )
        print(ticker.id)
        await app.stop()

    asyncio.run(main())
    """
)


def test_a_ticker_added_by_another_process_appears(browse: Browse) -> None:
    page, shop = browse.page, browse.shop
    browse.goto("/time-tickers")
    tag = f"from another process {time.monotonic_ns()}"
    rows = page.locator("[data-testid=ticker-row]", has_text=tag)
    expect(rows).to_have_count(0)

    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, shop.store_url, tag],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    added = done.stdout.strip()
    started = time.monotonic()
    expect(rows).to_have_count(1, timeout=3000)
    took = time.monotonic() - started
    assert rows.get_attribute("data-id") == added
    assert took < 2.0, f"the page showed it after {took:.2f} s"
    # the overview's waiting count follows a deletion in the store, without a reload
    page.get_by_test_id("nav-overview").click()
    counter = page.get_by_test_id("waiting-running")
    expect(counter).to_have_text(re.compile(r"^\d+ / \d+$"))
    waiting = int(counter.inner_text().split("/")[0])
    shop.run(shop.app.time_tickers.delete(UUID(added)))
    expect(counter).to_contain_text(f"{waiting - 1} /")
    browse.watch.assert_clean()


def test_an_operation_in_one_page_shows_in_another(browse: Browse) -> None:
    shop = browse.shop
    tag = f"two pages {time.monotonic_ns()}"
    other, other_watch = browse.new_page()
    other.goto(f"{shop.url}/time-tickers?q={tag.replace(' ', '+')}")
    other.locator("#live-status.live-on").wait_for()
    expect(other.get_by_test_id("empty")).to_be_visible()

    page = browse.page
    browse.goto("/time-tickers/new")
    page.get_by_test_id("form-function").select_option("resize_image")
    page.get_by_test_id("form-request").fill('{"path": "products/hero.jpg", "width": 800}')
    later = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_test_id("form-execution-time").fill(later)
    page.get_by_test_id("form-description").fill(tag)
    page.get_by_test_id("form-submit").click()
    page.wait_for_url(lambda url: "/time-tickers/" in url and not url.endswith("/new"))
    started = time.monotonic()
    row = other.get_by_test_id("ticker-row")
    expect(row).to_have_count(1, timeout=2000)
    assert time.monotonic() - started < 1.5
    ticker_id = row.get_attribute("data-id")
    assert ticker_id and ticker_id in page.url
    expect(row).to_have_attribute("data-status", "IDLE")

    page.get_by_test_id("action-cancel").click()
    started = time.monotonic()
    expect(row).to_have_attribute("data-status", "CANCELLED", timeout=2000)
    assert time.monotonic() - started < 1.5
    tickers = shop.run(shop.app.time_tickers.query(text=tag))
    assert [t.status for t in tickers] == [Status.CANCELLED]
    shop.run(shop.app.time_tickers.delete(tickers[0].id))
    expect(other.get_by_test_id("empty")).to_be_visible(timeout=2000)
    # the page still showing the deleted ticker says so, once, and stops refreshing it
    expect(page.get_by_test_id("flash")).to_contain_text("This was deleted", timeout=2000)
    expect(page.locator("[data-live][data-gone]").first).to_be_attached()
    # a live refresh of a deleted ticker is answered 204 + X-Tickerq-Gone, not 404:
    # nothing shows up as a failed request or a console error
    browse.watch.assert_clean()
    other_watch.assert_clean()


def test_a_change_during_a_refresh_is_not_lost(browse: Browse) -> None:
    """A change that arrives while the page is re-reading a part of itself is read
    again after that refresh, even though the refresh replaced the part (CI once saw a
    row stay IN_PROGRESS when the page had read it just before it ended)."""
    page, shop = browse.page, browse.shop
    tag = f"refresh race {time.monotonic_ns()}"
    later = datetime.now(UTC) + timedelta(days=30)
    first = shop.run(
        shop.app.time_tickers.add(
            "charge_card",
            request={"order_id": 1, "amount": 1.0},
            execution_time=later,
            description=tag,
        )
    )
    browse.goto(f"/time-tickers?q={tag.replace(' ', '+')}")
    row = page.locator(f"[data-testid=ticker-row][data-id='{first.id}']")
    expect(row).to_have_attribute("data-status", "IDLE")
    held: list[str] = []

    def slow_refresh(route: Any) -> None:
        if held or route.request.headers.get("x-tickerq-refresh") != "1":
            route.continue_()
            return
        held.append(route.request.url)
        stale = route.fetch()  # the page as it is now: the first ticker waits
        shop.run(shop.app.time_tickers.cancel(first.id))  # its change event comes now
        time.sleep(1.5)  # the event reaches the page while this refresh is out
        route.fulfill(response=stale)

    page.route("**/time-tickers?*", slow_refresh)
    shop.run(  # a change that starts the refresh held above
        shop.app.time_tickers.add(
            "charge_card",
            request={"order_id": 2, "amount": 2.0},
            execution_time=later,
            description=tag,
        )
    )
    expect(page.get_by_test_id("ticker-row")).to_have_count(2, timeout=5000)
    assert held, "no live refresh went out"
    expect(row).to_have_attribute("data-status", "CANCELLED", timeout=2500)
    browse.watch.assert_clean()


def test_a_change_made_while_the_stream_was_down_shows_when_it_is_back(browse: Browse) -> None:
    """No event tells a page what changed while its event stream was broken (here the
    dashboard restarts): once the stream is back, the page reads its live parts again."""
    page, shop = browse.page, browse.shop
    first = shop.run(start_server(shop.app.dashboard(title="restarting"), port=0))
    port = int(first.url.rstrip("/").rsplit(":", 1)[1])
    second = None
    try:
        tag = f"while restarting {time.monotonic_ns()}"
        page.goto(f"{first.url.rstrip('/')}/time-tickers?q={tag.replace(' ', '+')}")
        browse.wait_live()
        rows = page.locator("[data-testid=ticker-row]", has_text=tag)
        expect(rows).to_have_count(0)
        shop.run(first.stop())
        page.locator("#live-status.live-off").wait_for(timeout=10000)
        _add_far_ahead(browse, shop.app, tag)
        second = shop.run(start_server(shop.app.dashboard(title="restarting"), port=port))
        browse.wait_live()
        expect(rows).to_have_count(1)
    finally:
        for server in (first, second):
            if server is not None:
                shop.run(server.stop())
    browse.watch.assert_clean()


def test_an_action_whose_form_a_live_refresh_replaced_leaves_the_page_live(
    browse: Browse,
) -> None:
    """An action's form sits in a live part. When a live refresh of that part lands
    while the action's request is out, the form that sent it leaves the page before its
    answer comes: the page must still learn that the request ended, or it holds every
    later live refresh back for good (the dashboard stopped updating after "Run now")."""
    page, shop = browse.page, browse.shop
    ct = shop.app.cron_tickers
    cron = shop.run(ct.add("nightly_report", "0 5 1 1 *", description="refresh race"))
    try:
        browse.goto(f"/cron-tickers/{cron.id}")
        refreshes: list[Any] = []
        actions: list[Any] = []

        def hold_refreshes(route: Any) -> None:
            if route.request.headers.get("x-tickerq-refresh"):
                refreshes.append(route)  # answered below, once the action's request is out
            else:
                route.continue_()

        def hold_action(route: Any) -> None:
            actions.append(route)  # Playwright wants a function of its own, not a bound method

        page.route(re.compile(rf"/cron-tickers/{cron.id}$"), hold_refreshes)
        page.route(re.compile(rf"/cron-tickers/{cron.id}/run$"), hold_action)
        # a change elsewhere: the page reads its live parts again (held back)
        shop.run(ct.update(cron.id, description="refresh race, changed"))
        deadline = time.monotonic() + 10
        while len(refreshes) < 2 and time.monotonic() < deadline:  # both live parts
            page.wait_for_timeout(50)
        assert len(refreshes) == 2, refreshes
        page.get_by_test_id("cron-run").click()  # its form is in a live part
        while not actions and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert actions, "the action was not sent"
        for route in refreshes:
            route.continue_()  # the live parts are swapped: the form leaves the page
        page.wait_for_timeout(300)
        page.unroute(re.compile(rf"/cron-tickers/{cron.id}$"))
        actions[0].continue_()
        expect(page.get_by_test_id("occurrence-row")).to_have_count(1)
        # later changes still show up live
        shop.run(ct.disable(cron.id))
        expect(page.get_by_test_id("cron-state")).to_have_text("disabled", timeout=6000)
    finally:
        page.unroute_all()
        shop.run(ct.delete(cron.id))
    browse.watch.assert_clean()


def test_streams_that_end_on_purpose_keep_the_page_live_without_reading_it_again(
    browse: Browse,
) -> None:
    """Each event stream ends after ``stream_max_age`` (so a server's graceful shutdown
    never waits on it for long) and the browser opens the next one: the page stays
    live, its dot stays on, and it reads its parts again only when it missed a change.
    An app of its own, with no engine: nothing else changes while the page is watched."""
    page, shop = browse.page, browse.shop
    quiet = TickerQ("memory://", node_id="quiet")

    @quiet.function()
    async def charge_card(ctx: TickerContext[dict[str, Any]]) -> None:
        return None

    shop.run(quiet.open())
    server = shop.run(start_server(quiet.dashboard(stream_max_age=0.8), port=0))
    try:
        tag = f"across stream ends {time.monotonic_ns()}"
        page.goto(f"{server.url.rstrip('/')}/time-tickers?q={tag.replace(' ', '+')}")
        browse.wait_live()
        streams: list[str] = []
        refreshes: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)
        page.on(
            "request",
            lambda r: refreshes.append(r.url) if r.headers.get("x-tickerq-refresh") else None,
        )
        dots: list[str] = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            dots.append(page.locator("#live-status").get_attribute("class") or "")
            page.wait_for_timeout(100)
        assert len(streams) >= 2, streams  # it came back after each end
        assert all("live-on" in d for d in dots), dots
        assert refreshes == []  # nothing changed: nothing read again
        _add_far_ahead(browse, quiet, tag)
        expect(page.locator("[data-testid=ticker-row]", has_text=tag)).to_have_count(1)
    finally:
        shop.run(server.stop())
        shop.run(quiet.stop())
    browse.watch.assert_clean()


def _add_far_ahead(browse: Browse, app: TickerQ, tag: str) -> None:
    """Add to ``app`` (on the shop's loop) a ticker due in 30 days, described by ``tag``."""
    browse.shop.run(
        app.time_tickers.add(
            "charge_card",
            request={"order_id": 3, "amount": 3.0},
            execution_time=datetime.now(UTC) + timedelta(days=30),
            description=tag,
        )
    )

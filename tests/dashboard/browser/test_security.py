"""Security in a real browser: basic auth, loopback-only default, cross-site POSTs, XSS, CSP."""

from __future__ import annotations

import base64
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from dashboard.browser.conftest import Browse, Shop, Watch, watch_page
from dashboard.browser.shop import XSS
from tickerq import Status
from tickerq.dashboard import CSP, BasicAuth


def waiting_ticker(shop: Shop, description: str) -> Any:
    later = datetime.now(UTC) + timedelta(days=10)
    return shop.run(
        shop.app.time_tickers.add(
            "charge_card",
            request={"order_id": 1, "amount": 3.0},
            execution_time=later,
            description=description,
        )
    )


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    try:  # the address used to reach the outside (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            found.add(probe.getsockname()[0])
    except OSError:
        pass
    usable = sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")
    return usable[0] if usable else None


def refused_navigation(page: Any, url: str) -> bool:
    """True if chromium does not get the page: a 401, or it gives up on the credentials."""
    try:
        response = page.goto(url)
    except PlaywrightError as error:
        return "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
    return response is not None and response.status == 401 and "tickerq" not in page.title()


def test_basic_auth_login(browser: Any, shop: Shop) -> None:
    url = shop.serve(shop.app.dashboard(auth=BasicAuth("admin", "s3cret")))
    ticker = waiting_ticker(shop, f"basic auth {time.monotonic_ns()}")

    context = browser.new_context()  # no credentials: the login challenge
    try:
        response = context.request.get(url + "/")
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert refused_navigation(context.new_page(), url + "/")
        wrong = base64.b64encode(b"admin:wrong").decode()
        refused = context.request.post(
            url + "/engine/pause", headers={"authorization": f"Basic {wrong}"}
        )
        assert refused.status == 401
        assert not shop.app.paused
    finally:
        context.close()
    context = browser.new_context(http_credentials={"username": "admin", "password": "wrong"})
    try:
        assert refused_navigation(context.new_page(), url + "/")
    finally:
        context.close()

    context = browser.new_context(
        http_credentials={"username": "admin", "password": "s3cret"},
        viewport={"width": 1280, "height": 900},
    )
    try:
        page, watch = context.new_page(), Watch()
        watch_page(page, watch)
        response = page.goto(f"{url}/time-tickers/{ticker.id}")
        assert response is not None and response.status == 200
        expect(page.get_by_test_id("current-user")).to_have_text("admin")
        page.locator("#live-status.live-on").wait_for()
        page.get_by_test_id("action-cancel").click()
        expect(page.get_by_test_id("ticker-detail")).to_have_attribute("data-status", "CANCELLED")
        assert shop.run(shop.app.time_tickers.get(ticker.id)).status is Status.CANCELLED
        watch.assert_clean()
    finally:
        context.close()
        shop.run(shop.app.time_tickers.delete(ticker.id))


def test_without_auth_a_non_loopback_client_is_refused(browse: Browse) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    shop = browse.shop
    port = shop.serve(shop.app.dashboard(), host="0.0.0.0").rsplit(":", 1)[1]
    page = browse.page
    browse.watch.allow(f"(403|Forbidden).*{address}")
    # plain HTTP to a non-loopback address is not a trustworthy origin: chromium ignores COOP
    browse.watch.allow("Cross-Origin-Opener-Policy header has been ignored")

    refused = page.goto(f"http://{address}:{port}/")
    assert refused is not None and refused.status == 403
    expect(page.locator("body")).to_contain_text("only loopback clients")
    api = page.request.get(f"http://{address}:{port}/api/overview")
    assert api.status == 403 and "auth" in api.json()["error"]
    pause = page.request.post(f"http://{address}:{port}/engine/pause")
    assert pause.status == 403
    assert not shop.app.paused
    # the same server answers a loopback client
    ok = page.goto(f"http://127.0.0.1:{port}/")
    assert ok is not None and ok.status == 200
    browse.watch.assert_clean()


def test_a_cross_site_post_is_refused(browse: Browse, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickerq.dashboard")
    shop = browse.shop
    ticker = waiting_ticker(shop, f"csrf target {time.monotonic_ns()}")
    target = f"{shop.url}/time-tickers/{ticker.id}/cancel"
    pause = f"{shop.url}/engine/pause"

    async def evil_page(request: Any) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>win a prize</title>"
            f'<form method="post" action="{target}"><button id="go">claim</button></form>'
        )

    evil = shop.serve(Starlette(routes=[Route("/", evil_page)]))
    browse.watch.allow("/favicon.ico")  # the pages without HTML (the evil one, the 403)
    page = browse.page
    browse.watch.allow(r"(HTTP 403|status of 403)")
    page.goto(evil + "/")
    with page.expect_response(target) as posted:
        page.locator("#go").click()
    assert posted.value.status == 403
    expect(page.locator("body")).to_contain_text("cross-site request refused")
    assert shop.run(shop.app.time_tickers.get(ticker.id)).status is Status.IDLE

    page.goto(evil + "/")
    # a script's fetch: the dashboard refuses it (logged), and its answer is not even
    # readable there (Cross-Origin-Resource-Policy: same-origin)
    with page.expect_event("requestfailed", lambda r: r.url == pause) as failed:
        outcome = page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',"
            " body: new URLSearchParams({a: '1'})}).then(r => 'answered').catch(e => 'failed')",
            pause,
        )
    assert outcome == "failed"
    assert "ERR_BLOCKED_BY_RESPONSE" in (failed.value.failure or "")
    browse.watch.allow("ERR_BLOCKED_BY_RESPONSE")
    assert not shop.app.paused
    refusals = [r.getMessage() for r in caplog.records if "cross-site request" in r.getMessage()]
    assert any("POST '/engine/pause'" in m for m in refusals), refusals
    assert any(f"POST '/time-tickers/{ticker.id}/cancel'" in m for m in refusals), refusals
    shop.run(shop.app.time_tickers.delete(ticker.id))
    browse.watch.assert_clean()


def test_xss_in_payload_and_error_runs_nothing(browse: Browse) -> None:
    shop, page = browse.shop, browse.page
    tt = shop.app.time_tickers
    ticker = shop.run(tt.add("import_feed", request={"note": XSS, "url": XSS}, description=XSS))
    deadline = time.monotonic() + 8
    while shop.run(tt.get(ticker.id)).status is not Status.FAILED:
        assert time.monotonic() < deadline, "the XSS job did not fail in time"
        time.sleep(0.05)

    def assert_inert() -> None:
        assert page.evaluate("() => typeof window.__xss") == "undefined"
        assert page.locator("img[src='x']").count() == 0
        assert page.locator("main svg").count() == 0
        assert browse.watch.dialogs == []

    response = browse.goto(f"/time-tickers/{ticker.id}")
    assert response.headers["content-security-policy"] == CSP
    expect(page.get_by_test_id("payload")).to_contain_text("<script>window.__xss=1</script>")
    expect(page.get_by_test_id("ticker-error")).to_contain_text(
        '<img src=x onerror="window.__xss=2">'
    )
    expect(page.get_by_test_id("ticker-description")).to_have_text(XSS)
    page.locator("summary", has_text="traceback").click()
    expect(page.get_by_test_id("traceback")).to_contain_text('"><svg onload="window.__xss=3">')
    assert_inert()

    for path in ("/time-tickers?function=import_feed", "/time-tickers", "/"):
        browse.goto(path)
        assert_inert()
    row = page.locator(f"[data-testid=ticker-row][data-id='{ticker.id}']")
    browse.goto("/time-tickers?function=import_feed")
    expect(row).to_contain_text("feed rejected: <script>window.__xss=1</script>")

    # the duplicate form shows the payload in a textarea: still text
    browse.goto(f"/time-tickers/{ticker.id}")
    page.get_by_test_id("action-duplicate").click()
    page.wait_for_url(lambda url: str(ticker.id) not in url and "/time-tickers/" in url)
    page.wait_for_timeout(300)
    assert_inert()
    browse.watch.assert_clean()

    # the CSP blocks inline script even if some got into the page
    violated = page.evaluate(
        """() => new Promise(resolve => {
            document.addEventListener('securitypolicyviolation',
                e => resolve(e.effectiveDirective), {once: true});
            const s = document.createElement('script');
            s.textContent = 'window.__inline = 1';
            document.body.appendChild(s);
            setTimeout(() => resolve(null), 2000);
        })"""
    )
    assert violated in ("script-src-elem", "script-src")
    assert page.evaluate("() => typeof window.__inline") == "undefined"
    browse.watch.allow("Content Security Policy")
    for t in shop.run(tt.query(function="import_feed", limit=10)):
        shop.run(tt.delete(t.id))
    browse.watch.assert_clean()

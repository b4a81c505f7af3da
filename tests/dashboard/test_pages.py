"""Every page renders with real data; filters and paging; escaping; headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from tickerq import RunCondition, TickerQ, TimeTickerSpec
from tickerq.dashboard import CSP


async def test_every_page_renders_with_data(app: TickerQ, client: httpx.AsyncClient) -> None:
    t = await app.time_tickers.add(
        "send_email", request={"to": "a@example.com"}, description="hello"
    )
    cron = (await app.cron_tickers.query())[0]
    occurrence = await app.cron_tickers.run_now(cron.id)
    pages = {
        "/": ["overview-stats", "send_email", "functions-table"],
        "/time-tickers": ["time-tickers-table", str(t.id), "hello"],
        f"/time-tickers/{t.id}": ["ticker-detail", "a@example.com", "attempts-table"],
        f"/time-tickers/{t.id}/edit": ["time-form", "a@example.com"],
        "/time-tickers/new": ["time-form", "send_email"],
        "/cron-tickers": ["cron-tickers-table", "at 03:00 every day", "Europe/Berlin"],
        f"/cron-tickers/{cron.id}": ["occurrences-table", str(occurrence.id), "next-fire"],
        f"/cron-tickers/{cron.id}/edit": ["cron-form", "0 3 * * *"],
        "/cron-tickers/new": ["cron-form"],
        f"/occurrences/{occurrence.id}": ["occurrence-detail", "nightly"],
        "/nodes": ["nodes-table"],
    }
    for path, expected in pages.items():
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        for text in expected:
            assert text in response.text, (path, text)


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for path in ("/", "/api/overview", "/static/app.js", "/nope"):
        response = await client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


async def test_no_inline_script_or_style(app: TickerQ, client: httpx.AsyncClient) -> None:
    t = await app.time_tickers.add("send_email", request={"to": "x"})
    for path in ("/", "/time-tickers", f"/time-tickers/{t.id}", "/cron-tickers", "/nodes"):
        html = (await client.get(path)).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert " style=" not in html and "<style" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path


async def test_payload_and_error_text_are_escaped(app: TickerQ, client: httpx.AsyncClient) -> None:
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    t = await app.time_tickers.add(
        "send_email", request={"to": "fail " + evil, "subject": evil}, description=evil
    )
    async with app:  # run it: the error message repeats the payload
        await app.engine.wait_idle()
    for path in (f"/time-tickers/{t.id}", "/time-tickers", "/time-tickers?view=flat"):
        html = (await client.get(path)).text
        assert "<script>alert(1)" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    detail = (await client.get(f"/time-tickers/{t.id}")).text
    assert "&lt;b&gt;" in detail  # the exception text, escaped
    assert "ConnectionError" in detail


async def test_filters_and_paging(app: TickerQ, client: httpx.AsyncClient) -> None:
    for i in range(30):
        await app.time_tickers.add("send_email", request={"to": f"u{i}"}, description=f"mail {i}")
    await app.time_tickers.add("charge", request={"n": 1}, description="card")
    bad = await app.time_tickers.add("charge", request={"n": 2}, description="cancel me")
    await app.time_tickers.cancel(bad.id)

    page1 = (await client.get("/time-tickers?view=flat")).text
    assert page1.count('data-testid="ticker-row"') == 25
    assert "page 1 of 2" in page1
    page2 = (await client.get("/time-tickers?view=flat&page=2")).text
    assert page2.count('data-testid="ticker-row"') == 7

    by_function = (await client.get("/time-tickers?function=charge")).text
    assert by_function.count('data-testid="ticker-row"') == 2
    by_status = (await client.get("/time-tickers?status=CANCELLED")).text
    assert by_status.count('data-testid="ticker-row"') == 1 and str(bad.id) in by_status
    by_text = (await client.get("/time-tickers?q=mail+1")).text
    assert by_text.count('data-testid="ticker-row"') == 11  # mail 1, mail 10..19

    api = (await client.get("/api/time-tickers?status=CANCELLED,IDLE&limit=5&offset=0")).json()
    assert api["total"] == 32 and len(api["items"]) == 5
    api = (await client.get("/api/time-tickers", params={"function": "charge"})).json()
    assert {i["description"] for i in api["items"]} == {"card", "cancel me"}


async def test_chains_show_as_a_tree(app: TickerQ, client: httpx.AsyncClient) -> None:
    rows = await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="charge",
                request={"order": 1},
                children=[
                    TimeTickerSpec(
                        function="send_email",
                        request={"to": "ok"},
                        run_condition=RunCondition.ON_SUCCESS,
                        children=[TimeTickerSpec(function="charge", request={"n": 3})],
                    )
                ],
            )
        ]
    )
    html = (await client.get("/time-tickers")).text
    depths = re.findall(
        r'data-testid="ticker-row" data-id="([^"]+)" data-status="[A-Z_]+" data-depth="(\d)"', html
    )
    assert [(i, int(d)) for i, d in depths] == [(str(r.id), n) for n, r in enumerate(rows)]
    detail = (await client.get(f"/time-tickers/{rows[0].id}")).text
    assert detail.count('data-testid="chain-row"') == 2
    child = (await client.get(f"/time-tickers/{rows[1].id}")).text
    assert 'data-testid="parent-link"' in child and "ON_SUCCESS" in child


async def test_attempts_with_traceback_and_retry_status(memory_app: TickerQ, client_for) -> None:
    app = memory_app
    t = await app.time_tickers.add("send_email", request={"to": "fail@x"})
    async with app:
        await app.engine.wait_idle()
    async with client_for(app.dashboard()) as client:
        html = (await client.get(f"/time-tickers/{t.id}")).text
        assert html.count('data-testid="attempt-row"') == 1
        assert 'data-testid="traceback"' in html and "Traceback" in html
        assert "1 of 2 retries used" in html
        detail = (await client.get(f"/api/time-tickers/{t.id}")).json()
        assert detail["attempts"][0]["error_type"] == "ConnectionError"
        assert detail["attempts"][0]["node"] == "dash-node"


async def test_timezone_selector(app: TickerQ, client: httpx.AsyncClient) -> None:
    when = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    t = await app.time_tickers.add("send_email", request={"to": "x"}, execution_time=when)
    html = (await client.get(f"/time-tickers/{t.id}?tz=Asia/Tokyo")).text
    assert "2030-06-01 21:00:00" in html
    response = await client.get(f"/time-tickers/{t.id}?tz=America/New_York")
    assert "2030-06-01 08:00:00" in response.text
    assert "America/New_York" in response.headers["set-cookie"]
    client.cookies.set("tickerq_tz", "Asia/Tokyo")
    assert "2030-06-01 21:00:00" in (await client.get(f"/time-tickers/{t.id}")).text
    # an unknown zone falls back instead of failing
    assert (await client.get("/?tz=Mars/Olympus")).status_code == 200


async def test_overview_numbers(memory_app: TickerQ, client_for) -> None:
    app = memory_app
    await app.time_tickers.add("send_email", request={"to": "ok"})
    await app.time_tickers.add("send_email", request={"to": "fail"}, retries=0)
    later = await app.time_tickers.add(
        "charge", request={}, execution_time=datetime.now(UTC) + timedelta(hours=1)
    )
    async with app:
        await app.engine.wait_idle()
        async with client_for(app.dashboard()) as client:
            data = (await client.get("/api/overview")).json()
            assert data["engine"] == {"node": "dash-node", "running": True, "paused": False}
            assert data["success_rate_24h"] == 0.5
            assert data["status_counts"]["TIME"]["DONE"] == 1
            assert data["status_counts"]["TIME"]["FAILED"] == 1
            assert data["next_due"][0]["id"] == str(later.id)
            assert [n["id"] for n in data["nodes"]] == ["dash-node"]
            assert data["slots"] == 4
            fns = {f["name"]: f for f in data["functions"]}
            assert fns["send_email"]["request_type"] == "Email"
            assert fns["charge"]["priority"] == 2
            chart = (await client.get("/api/throughput?hours=6")).json()
            assert sum(chart["succeeded"]) == 1 and sum(chart["failed"]) == 1
            assert len(chart["t"]) == len(chart["succeeded"]) == 72
            html = (await client.get("/")).text
            assert "50.0 %" in html and "engine-pause" in html


async def test_cron_preview(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/api/cron/preview", params={"expression": "0 9 * * mon-fri", "timezone": "Europe/Berlin"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["description"] == "at 09:00 on Monday through Friday"
    assert len(body["next_fires"]) == 5
    assert all("09:00:00" in f for f in body["next_fires_local"])
    bad = await client.get("/api/cron/preview", params={"expression": "61 * * * *"})
    assert bad.status_code == 422 and "61" in bad.json()["error"]
    fragment = await client.get("/cron-preview", params={"expression": "*/15 * * * *"})
    assert 'data-testid="cron-preview-fire"' in fragment.text and "<html" not in fragment.text
    fragment = await client.get("/cron-preview", params={"expression": "bogus <b>"})
    assert "cron-preview-error" in fragment.text and "&lt;b&gt;" in fragment.text


async def test_a_live_refresh_of_a_deleted_ticker_is_not_an_error(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    ticker = await app.time_tickers.add("charge", description="soon gone")
    page = f"/time-tickers/{ticker.id}"
    assert (await client.get(page)).status_code == 200
    await app.time_tickers.delete(ticker.id)
    # a person opening it gets a 404 page ...
    assert (await client.get(page)).status_code == 404
    # ... the page's own live refresh gets "gone" without an error status
    refresh = await client.get(page, headers={"X-Tickerq-Refresh": "1", "HX-Request": "true"})
    assert refresh.status_code == 204
    assert refresh.headers["X-Tickerq-Gone"] == "1"
    assert refresh.content == b""
    # the same for the page's chart data, fetched from the JSON API
    api = f"/api/time-tickers/{ticker.id}"
    assert (await client.get(api)).status_code == 404
    gone = await client.get(api, headers={"X-Tickerq-Refresh": "1"})
    assert (gone.status_code, gone.headers["X-Tickerq-Gone"]) == (204, "1")

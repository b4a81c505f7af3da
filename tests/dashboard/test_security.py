"""Loopback-only default, basic/bearer/callable auth, permissions, same-origin, redaction."""

from __future__ import annotations

import pytest

from tickerq import TickerContext, TickerQ
from tickerq.dashboard import BasicAuth, BearerAuth, Permission
from tickerq.testing import run_until_idle


async def test_without_auth_only_loopback_clients(memory_app: TickerQ, client_for) -> None:
    dash = memory_app.dashboard()
    for addr in ("127.0.0.1", "127.5.0.1", "::1"):
        async with client_for(dash, addr=addr) as client:
            assert (await client.get("/")).status_code == 200, addr
    for addr in ("10.0.0.7", "192.168.1.2", "2001:db8::1", "testclient"):
        async with client_for(dash, addr=addr) as client:
            r = await client.get("/")
            assert r.status_code == 403, addr
            assert "loopback" in r.text
            api = await client.get("/api/overview")
            assert api.status_code == 403 and "auth" in api.json()["error"]
            assert (await client.get("/static/app.js")).status_code == 403


async def test_basic_auth(memory_app: TickerQ, client_for) -> None:
    dash = memory_app.dashboard(auth=BasicAuth({"admin": "s3cret", "ops": "pw2"}))
    async with client_for(dash, addr="10.1.2.3") as client:
        r = await client.get("/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert (await client.get("/", auth=("admin", "wrong"))).status_code == 401
        assert (await client.get("/", auth=("nobody", "s3cret"))).status_code == 401
        ok = await client.get("/", auth=("admin", "s3cret"))
        assert ok.status_code == 200 and 'data-testid="current-user">admin<' in ok.text
        assert (await client.get("/api/overview", auth=("ops", "pw2"))).status_code == 200
        bad_header = await client.get("/", headers={"authorization": "Basic !!!"})
        assert bad_header.status_code == 401


async def test_bearer_auth(memory_app: TickerQ, client_for) -> None:
    dash = memory_app.dashboard(auth=BearerAuth({"tok-1": "ci"}))
    async with client_for(dash, addr="10.1.2.3") as client:
        assert (await client.get("/api/overview")).status_code == 401
        wrong = await client.get("/api/overview", headers={"authorization": "Bearer tok-2"})
        assert wrong.status_code == 401
        ok = await client.get("/api/overview", headers={"authorization": "Bearer tok-1"})
        assert ok.status_code == 200
        # a token in the query string is not accepted
        assert (await client.get("/api/overview?access_token=tok-1")).status_code == 401


async def test_host_app_callable_and_permissions(memory_app: TickerQ, client_for) -> None:
    class User:
        def __init__(self, username: str) -> None:
            self.username = username

    async def auth(request):  # type: ignore[no-untyped-def]
        name = request.headers.get("x-user")
        return User(name) if name else None

    roles = {
        "viewer": {Permission.VIEW},
        "operator": {"view", "operate"},
        "editor": {"view", "edit"},
        "deleter": {"view", "delete"},
    }
    dash = memory_app.dashboard(auth=auth, permissions=lambda u: roles.get(u.username, set()))
    t = await memory_app.time_tickers.add("charge", request={})
    cron = (await memory_app.cron_tickers.query())[0]
    actions = {
        "operate": [
            ("post", f"/api/time-tickers/{t.id}/retry"),
            ("post", f"/api/cron-tickers/{cron.id}/disable"),
            ("post", f"/api/cron-tickers/{cron.id}/run"),
            ("post", f"/time-tickers/{t.id}/retry"),
        ],
        "edit": [
            ("post", "/api/time-tickers", {"function": "charge"}),
            ("put", f"/api/time-tickers/{t.id}", {"description": "x"}),
            ("post", f"/api/time-tickers/{t.id}/duplicate"),
            ("post", "/api/cron-tickers", {"function": "charge", "expression": "* * * * *"}),
        ],
        "delete": [
            ("delete", f"/api/cron-tickers/{cron.id}"),
            ("post", "/api/time-tickers/delete", {"ids": [str(t.id)]}),
            ("post", f"/time-tickers/{t.id}/delete"),
        ],
    }
    async with client_for(dash, addr="10.9.9.9") as client:
        assert (await client.get("/")).status_code == 401
        stranger = await client.get("/", headers={"x-user": "stranger"})
        assert stranger.status_code == 403
        for who, granted in roles.items():
            headers = {"x-user": who}
            assert (await client.get("/api/overview", headers=headers)).status_code == 200
            for permission, calls in actions.items():
                if permission in granted:
                    continue
                for call in calls:
                    method, path, *body = call
                    kwargs = {"json": body[0]} if body else {}
                    r = await client.request(method.upper(), path, headers=headers, **kwargs)
                    assert r.status_code == 403, (who, path, r.text)
                    assert permission in r.text
        html = (await client.get(f"/time-tickers/{t.id}", headers={"x-user": "viewer"})).text
        assert 'data-testid="read-only-banner"' in html
        assert 'data-testid="action-retry" class="btn btn-primary" disabled' in html
        html = (await client.get(f"/time-tickers/{t.id}", headers={"x-user": "operator"})).text
        assert 'data-testid="action-retry" class="btn btn-primary">' in html
        assert 'data-testid="action-delete" class="btn btn-danger" disabled' in html
        # the operator may operate
        r = await client.post(f"/api/time-tickers/{t.id}/cancel", headers={"x-user": "operator"})
        assert r.status_code == 200


def test_unknown_permission_fails_early(memory_app: TickerQ) -> None:
    with pytest.raises(ValueError, match="'admin'"):
        memory_app.dashboard(permissions={"view", "admin"})


async def test_cross_site_posts_are_refused(memory_app: TickerQ, client_for) -> None:
    t = await memory_app.time_tickers.add("charge", request={})
    async with client_for(memory_app.dashboard()) as client:
        for headers in (
            {"origin": "http://evil.example"},
            {"referer": "http://evil.example/page"},
            {"origin": "null"},
            {"sec-fetch-site": "cross-site"},
            {"origin": "http://localhost:8787.evil.example"},
        ):
            r = await client.post(f"/time-tickers/{t.id}/cancel", headers=headers)
            assert r.status_code == 403, headers
            assert "cross-site" in r.text
            r = await client.delete(f"/api/time-tickers/{t.id}", headers=headers)
            assert r.status_code == 403, headers
        assert (await memory_app.time_tickers.get(t.id)).status.value == "IDLE"
        # GETs are fine from anywhere; same-origin POSTs go through
        assert (await client.get("/", headers={"origin": "http://evil.example"})).status_code == 200
        ok = await client.post(
            f"/time-tickers/{t.id}/cancel",
            headers={"origin": "http://localhost:8787", "sec-fetch-site": "same-origin"},
        )
        assert ok.status_code == 303


async def test_allowed_origins_for_proxies(memory_app: TickerQ, client_for) -> None:
    dash = memory_app.dashboard(allowed_origins=["https://jobs.example.com"])
    async with client_for(dash) as client:
        r = await client.post(
            "/api/time-tickers",
            json={"function": "charge"},
            headers={"origin": "https://jobs.example.com"},
        )
        assert r.status_code == 201


async def test_changes_need_unsafe_methods(memory_app: TickerQ, client_for) -> None:
    t = await memory_app.time_tickers.add("charge", request={})
    async with client_for(memory_app.dashboard()) as client:
        for path in (f"/time-tickers/{t.id}/cancel", f"/api/time-tickers/{t.id}/cancel"):
            assert (await client.get(path)).status_code == 405
    assert (await memory_app.time_tickers.get(t.id)).status.value == "IDLE"


async def test_redaction_hook(memory_app: TickerQ, client_for) -> None:
    def redact(function: str, payload):  # type: ignore[no-untyped-def]
        if function == "send_email":
            return {**payload, "to": "***"}
        return payload

    t = await memory_app.time_tickers.add("send_email", request={"to": "secret@x", "subject": "s"})
    async with client_for(memory_app.dashboard(redact=redact)) as client:
        for path in (f"/time-tickers/{t.id}", f"/api/time-tickers/{t.id}", "/api/time-tickers"):
            text = (await client.get(path)).text
            assert "secret@x" not in text and "***" in text, path
        edit = (await client.get(f"/time-tickers/{t.id}/edit")).text
        assert "secret@x" not in edit and "partly hidden" in edit
        # saving the form without a request keeps the real payload
        r = await client.post(f"/time-tickers/{t.id}", data={"description": "d", "request": ""})
        assert r.status_code == 303
    assert (await memory_app.time_tickers.get(t.id)).request["to"] == "secret@x"


async def test_failing_redaction_hides_the_payload(memory_app: TickerQ, client_for) -> None:
    def redact(function: str, payload):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    t = await memory_app.time_tickers.add("send_email", request={"to": "secret@x"})
    async with client_for(memory_app.dashboard(redact=redact)) as client:
        text = (await client.get(f"/api/time-tickers/{t.id}")).text
        assert "secret@x" not in text and "redaction hook failed" in text


async def test_htmx_error_answers_are_plain_text(memory_app: TickerQ, client_for) -> None:
    async with client_for(memory_app.dashboard()) as client:
        r = await client.post(
            "/time-tickers/00000000-0000-0000-0000-000000000000/cancel",
            headers={"HX-Request": "true"},
        )
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
        r = await client.get("/time-tickers/00000000-0000-0000-0000-000000000000")
        assert r.status_code == 404 and 'data-testid="error-page"' in r.text


@pytest.mark.parametrize("addr", ["::ffff:127.0.0.1"])
async def test_ipv4_mapped_loopback(memory_app: TickerQ, client_for, addr: str) -> None:
    async with client_for(memory_app.dashboard(), addr=addr) as client:
        assert (await client.get("/")).status_code == 200


def test_basic_auth_needs_a_password() -> None:
    with pytest.raises(ValueError):
        BasicAuth("admin", "")
    with pytest.raises(ValueError):
        BearerAuth("")


async def test_results_and_headers_are_shown_escaped_redacted_and_masked(
    memory_app: TickerQ, client_for
) -> None:
    @memory_app.function()
    async def echo(ctx: TickerContext[dict]) -> dict:  # type: ignore[type-arg]
        return {"card": ctx.request["card"], "note": "<script>alert(1)</script>"}

    def redact(function: str, payload):  # type: ignore[no-untyped-def]
        if function == "echo" and isinstance(payload, dict) and "card" in payload:
            return {**payload, "card": "****"}
        return payload

    await memory_app.engine.start()
    t = await echo.enqueue(
        {"card": "4111-1111"},
        headers={"tenant": "acme", "Authorization": "Bearer abc.def", "trace": "<b>t</b>"},
    )
    await run_until_idle(memory_app)
    async with client_for(memory_app.dashboard(redact=redact)) as client:
        page = (await client.get(f"/time-tickers/{t.id}")).text
        api = (await client.get(f"/api/time-tickers/{t.id}")).json()
    assert 'data-testid="result"' in page and "4111-1111" not in page
    assert "&lt;script&gt;" in page and "<script>alert" not in page  # escaped
    assert "acme" in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert "Bearer abc.def" not in page and "••••••" in page  # a secret-looking header
    assert api["ticker"]["result"] == {"card": "****", "note": "<script>alert(1)</script>"}
    assert api["ticker"]["headers"]["Authorization"] == "••••••"
    assert api["ticker"]["headers"]["tenant"] == "acme"
    assert api["attempts"][0]["result"]["card"] == "****"


async def test_headers_can_be_given_through_the_api_and_survive_a_duplicate(
    memory_app: TickerQ, client_for
) -> None:
    async with client_for(memory_app.dashboard()) as client:
        r = await client.post(
            "/api/time-tickers",
            json={"function": "charge", "request": 1, "headers": {"tenant": "acme"}},
        )
        assert r.status_code == 201, r.text
        first = r.json()
        assert first["headers"] == {"tenant": "acme"}
        copy = (await client.post(f"/api/time-tickers/{first['id']}/duplicate")).json()
        bad = await client.post(
            "/api/time-tickers", json={"function": "charge", "headers": {"n": "\x00"}}
        )
    assert copy["id"] != first["id"] and copy["headers"] == {"tenant": "acme"}
    assert (await memory_app.time_tickers.get(copy["id"])).headers == {"tenant": "acme"}
    assert bad.status_code == 422 and "NUL" in bad.text
    assert await memory_app.time_tickers.count() == 2  # the bad one was not stored

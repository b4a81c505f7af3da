"""Issue 8 item 10: DNS rebinding, proxies, falsy auth results, all-or-nothing forms,
streamed body limits, logged refusals and store URLs without their passwords."""

from __future__ import annotations

import base64
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.provisional import domains
from starlette.requests import HTTPConnection

from tickerq import TickerQ
from tickerq.dashboard import BasicAuth, Permission
from tickerq.dashboard.auth import FORWARDING_HEADERS, is_loopback_host, local_refusal, same_origin
from tickerq.dashboard.context import MAX_BODY

# -- without auth: loopback names only, no proxies (DNS rebinding) -----------------------

LOOPBACK_HOSTS = [
    "localhost",
    "localhost:8787",
    "LocalHost:1",
    "127.0.0.1",
    "127.0.0.1:8787",
    "127.45.6.7:65535",
    "[::1]",
    "[::1]:8787",
    "[::ffff:127.0.0.1]:80",
]
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:8787",
    "127.0.0.1.evil.example",
    "localhost.evil.example:8787",
    "evil.localhost",
    "10.0.0.7:8787",
    "0.0.0.0:8787",
    "[::]:8787",
    "::1",
    "localhost:http",
    "localhost:8787:1",
    "[::1",
    "",
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_without_auth_loopback_host_names_get_in(
    memory_app: TickerQ, client_for: Any, host: str
) -> None:
    async with client_for(memory_app.dashboard()) as client:
        assert (await client.get("/", headers={"host": host})).status_code == 200, host


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_without_auth_other_host_names_are_refused(
    memory_app: TickerQ, client_for: Any, host: str
) -> None:
    # A page of evil.example whose DNS name was rebound to 127.0.0.1: the client is
    # loopback, but the browser sends the page's own name as Host.
    async with client_for(memory_app.dashboard()) as client:
        r = await client.get("/", headers={"host": host})
        assert r.status_code == 403, host
        assert "Host" in r.text and "auth" in r.text
        api = await client.get("/api/overview", headers={"host": host})
        assert api.status_code == 403 and "loopback" in api.json()["error"]


async def test_a_rebound_page_cannot_post(memory_app: TickerQ, client_for: Any) -> None:
    t = await memory_app.time_tickers.add("charge", request={})
    rebound = {"host": "evil.example:8787", "origin": "http://evil.example:8787"}
    async with client_for(memory_app.dashboard()) as client:
        r = await client.post(f"/time-tickers/{t.id}/cancel", headers=rebound)
        assert r.status_code == 403
        r = await client.post("/api/time-tickers", json={"function": "charge"}, headers=rebound)
        assert r.status_code == 403
    assert (await memory_app.time_tickers.get(t.id)).status.value == "IDLE"
    assert len(await memory_app.time_tickers.query()) == 1


@pytest.mark.parametrize("header", FORWARDING_HEADERS)
async def test_without_auth_proxied_requests_are_refused(
    memory_app: TickerQ, client_for: Any, header: str
) -> None:
    # behind a proxy on the same machine every client would look like 127.0.0.1
    async with client_for(memory_app.dashboard()) as client:
        r = await client.get("/api/overview", headers={header: "203.0.113.9"})
        assert r.status_code == 403, header
        assert "proxy" in r.json()["error"] and header in r.json()["error"]


async def test_with_auth_proxies_and_any_host_are_fine(
    memory_app: TickerQ, client_for: Any
) -> None:
    dash = memory_app.dashboard(auth=BasicAuth("admin", "pw"))
    headers = {"host": "jobs.example.com", "x-forwarded-for": "203.0.113.9"}
    async with client_for(dash, addr="10.0.0.2") as client:
        r = await client.get("/api/overview", headers=headers, auth=("admin", "pw"))
        assert r.status_code == 200


def connection(host: str | None, **headers: str) -> HTTPConnection:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    if host is not None:
        raw.append((b"host", host.encode()))
    scope = {"type": "http", "headers": raw, "client": ("127.0.0.1", 50000), "method": "POST"}
    return HTTPConnection(scope)


@given(domains(), st.one_of(st.none(), st.integers(0, 65535)))
def test_no_domain_name_but_localhost_passes(name: str, port: int | None) -> None:
    host = name if port is None else f"{name}:{port}"
    assert is_loopback_host(host) == (name.lower() == "localhost")
    refused = local_refusal(connection(host)) is not None
    assert refused == (name.lower() != "localhost")


@given(
    st.ip_addresses(),
    st.one_of(st.none(), st.integers(0, 65535)),
)
def test_only_loopback_addresses_pass(address: Any, port: int | None) -> None:
    shown = f"[{address}]" if address.version == 6 else str(address)
    host = shown if port is None else f"{shown}:{port}"
    mapped = getattr(address, "ipv4_mapped", None)
    assert is_loopback_host(host) == (address.is_loopback or bool(mapped and mapped.is_loopback))


def test_without_auth_the_origin_must_be_loopback_too() -> None:
    rebound = connection("evil.example:8787", origin="http://evil.example:8787")
    assert not same_origin(rebound, local_only=True)
    assert same_origin(rebound)  # with auth the browser holds no credentials for it
    local = connection("localhost:8787", origin="http://localhost:8787")
    assert same_origin(local, local_only=True)
    other_port = connection("localhost:8787", origin="http://localhost:3000")
    assert not same_origin(other_port, local_only=True)
    allowed = connection("localhost:8787", origin="https://jobs.example.com")
    assert same_origin(allowed, ["https://jobs.example.com"], local_only=True)
    assert not same_origin(connection("localhost", origin="http://[::1"), local_only=True)


# -- a host-app auth callable: only a truthy user gets in --------------------------------

FALSY = [None, False, 0, 0.0, "", [], {}, (), set(), b""]


@pytest.mark.parametrize("result", FALSY, ids=repr)
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_falsy_auth_result_is_refused(
    memory_app: TickerQ, client_for: Any, result: Any, is_async: bool
) -> None:
    def auth(request: Any) -> Any:
        return result

    async def async_auth(request: Any) -> Any:
        return result

    dash = memory_app.dashboard(auth=async_auth if is_async else auth)
    async with client_for(dash, addr="10.0.0.3") as client:
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/api/overview")).status_code == 401
        r = await client.post("/api/time-tickers", json={"function": "charge"})
        assert r.status_code == 401
    assert await memory_app.time_tickers.query() == []


@pytest.mark.parametrize("result", [1, "ops", ["ops"], {"name": "ops"}, True])
async def test_a_truthy_auth_result_gets_in(
    memory_app: TickerQ, client_for: Any, result: Any
) -> None:
    dash = memory_app.dashboard(auth=lambda request: result)
    async with client_for(dash, addr="10.0.0.3") as client:
        assert (await client.get("/api/overview")).status_code == 200


# -- the cron edit form: all or nothing under permissions --------------------------------

ROLES = {
    "editor": {"view", "edit"},
    "operator": {"view", "operate"},
    "both": {"view", "edit", "operate"},
}


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("toggle", [False, True])
async def test_the_cron_form_changes_all_or_nothing(
    memory_app: TickerQ, client_for: Any, who: str, toggle: bool
) -> None:
    dash = memory_app.dashboard(
        auth=lambda request: request.headers.get("x-user"),
        permissions=lambda user: ROLES.get(user, set()),
    )
    cron = (await memory_app.cron_tickers.query())[0]
    assert cron.enabled
    form = {"expression": "*/5 * * * *", "description": "changed", "misfire": "RUN_ONCE"}
    if not toggle:
        form["enabled"] = "on"  # an unticked box disables it: that needs "operate"
    async with client_for(dash, addr="10.0.0.4") as client:
        r = await client.post(f"/cron-tickers/{cron.id}", data=form, headers={"x-user": who})
    after = await memory_app.cron_tickers.get(cron.id)
    allowed = "edit" in ROLES[who] and (not toggle or "operate" in ROLES[who])
    if allowed:
        assert r.status_code == 303, r.text
        assert (after.expression, after.description) == ("*/5 * * * *", "changed")
        assert after.enabled is not toggle
    else:
        assert r.status_code == 403, r.text
        assert (after.expression, after.description, after.enabled) == (
            cron.expression,
            cron.description,
            cron.enabled,
        )


# -- request bodies: refused while they stream in ----------------------------------------

CHUNK = 64 * 1024
HUGE = 50 * 1024 * 1024


def filler(content_type: str) -> bytes:
    """About CHUNK bytes that can repeat forever in a body of this type: blanks
    before a JSON value, or one more small form field (each under every
    per-field limit of the form parser)."""
    kind = content_type.split(";", maxsplit=1)[0]
    if kind == "application/x-www-form-urlencoded":
        return b"&f=" + b"x" * (CHUNK - 3)
    if kind == "multipart/form-data":
        head = b'--xyz\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
        return head + b"x" * (CHUNK - len(head) - 2) + b"\r\n"
    return b" " * CHUNK


async def post_stream(
    asgi: Any, path: str, content_type: str, declared: str | None, total: int = HUGE
) -> tuple[int, int]:
    """POST ``total`` bytes in chunks straight to the ASGI app; (status, bytes it read)."""
    headers = [(b"host", b"localhost:8787"), (b"content-type", content_type.encode())]
    if declared is not None:
        headers.append((b"content-length", declared.encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
    }
    chunk = filler(content_type)
    sent = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent >= total:
            return {"type": "http.disconnect"}
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await asgi(scope, receive, send)
    return status, sent


BODY_ROUTES = [
    ("/api/time-tickers", "application/json"),
    ("/api/time-tickers/delete", "application/json"),
    ("/time-tickers", "application/x-www-form-urlencoded"),
    ("/cron-tickers", "application/x-www-form-urlencoded"),
    ("/time-tickers", "multipart/form-data; boundary=xyz"),
]


@pytest.mark.parametrize(("path", "content_type"), BODY_ROUTES)
@pytest.mark.parametrize("declared", [None, "10", str(MAX_BODY)])
async def test_a_large_body_is_refused_as_it_streams(
    memory_app: TickerQ, path: str, content_type: str, declared: str | None
) -> None:
    status, read = await post_stream(memory_app.dashboard(), path, content_type, declared)
    assert status == 413
    assert read <= MAX_BODY + CHUNK, f"read {read:,} bytes of a refused body"


async def test_a_declared_large_body_is_refused_unread(memory_app: TickerQ) -> None:
    asgi = memory_app.dashboard()
    status, read = await post_stream(asgi, "/api/time-tickers", "application/json", str(HUGE))
    assert (status, read) == (413, 0)


async def test_a_refused_body_costs_little_memory(memory_app: TickerQ) -> None:
    asgi = memory_app.dashboard()
    await post_stream(asgi, "/api/time-tickers", "application/json", None, total=CHUNK)
    tracemalloc.start()
    try:
        status, _ = await post_stream(asgi, "/api/time-tickers", "application/json", None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 413
    assert peak < 3 * MAX_BODY, f"a refused 50 MB body cost {peak:,} bytes"


async def test_a_body_under_the_limit_still_works(memory_app: TickerQ, client_for: Any) -> None:
    async with client_for(memory_app.dashboard()) as client:
        pad = "x" * (MAX_BODY // 2)
        r = await client.post("/api/time-tickers", json={"function": "charge", "request": pad})
        assert r.status_code != 413, r.text


# -- refusals are logged: who, what, never the password ----------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tickerq.dashboard" and r.levelno == logging.WARNING
    ]


async def test_refused_logins_are_logged_without_the_password(
    memory_app: TickerQ, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "tickerq.dashboard")
    dash = memory_app.dashboard(auth=BasicAuth("admin", "right-pw"))
    async with client_for(dash, addr="10.1.2.3") as client:
        assert (await client.get("/api/overview")).status_code == 401  # the challenge
        assert warnings_of(caplog) == []
        r = await client.get("/api/overview?x=1", auth=("admin", "hunter2-pw"))
        assert r.status_code == 401
    [line] = warnings_of(caplog)
    assert "10.1.2.3" in line and "/api/overview" in line and "401" in line
    token = base64.b64encode(b"admin:hunter2-pw").decode()
    assert "hunter2" not in caplog.text and token not in caplog.text


async def test_403s_are_logged(
    memory_app: TickerQ, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "tickerq.dashboard")
    t = await memory_app.time_tickers.add("charge", request={})
    viewer = memory_app.dashboard(auth=lambda r: "viewer", permissions={Permission.VIEW})
    async with client_for(viewer, addr="10.4.4.4") as client:
        assert (await client.post(f"/api/time-tickers/{t.id}/cancel")).status_code == 403
        assert (await client.post(f"/time-tickers/{t.id}/cancel")).status_code == 403
    async with client_for(memory_app.dashboard(), addr="10.5.5.5") as client:
        assert (await client.get("/nodes")).status_code == 403
    async with client_for(memory_app.dashboard()) as client:
        r = await client.post("/api/time-tickers", headers={"origin": "http://evil.example"})
        assert r.status_code == 403
    lines = warnings_of(caplog)
    assert len(lines) == 4, lines
    assert "10.4.4.4" in lines[0] and f"/api/time-tickers/{t.id}/cancel" in lines[0]
    assert "'viewer'" in lines[0] and "operate" in lines[0]
    assert "10.4.4.4" in lines[1] and f"/time-tickers/{t.id}/cancel" in lines[1]
    assert "10.5.5.5" in lines[2] and "/nodes" in lines[2] and "loopback" in lines[2]
    assert "127.0.0.1" in lines[3] and "evil.example" in lines[3]


# -- store URLs: pages never show a password --------------------------------------------


@pytest.mark.filterwarnings("ignore:Query string argument:sqlalchemy.exc.SAWarning")
async def test_pages_never_show_the_store_password(tmp_path: Path, client_for: Any) -> None:
    app = TickerQ(f"sqlite:///{tmp_path}/x.db?password=ss-word")
    await app.open()
    try:
        async with client_for(app.dashboard()) as client:
            for path in ("/", "/nodes", "/time-tickers", "/cron-tickers"):
                text = (await client.get(path)).text
                assert "ss-word" not in text, path
                assert "password=***" in text, path
    finally:
        await app.stop()

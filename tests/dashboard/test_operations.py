"""Every operation, through the JSON API and through the pages' forms, changes the store."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tickerq import Priority, Status, TickerQ


async def test_api_time_ticker_lifecycle(app: TickerQ, client: httpx.AsyncClient) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    r = await client.post(
        "/api/time-tickers",
        json={
            "function": "send_email",
            "request": {"to": "a@x"},
            "execution_time": when.isoformat(),
            "description": "first",
            "retries": 1,
            "retry_intervals": [5],
        },
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    stored = await app.time_tickers.get(tid)
    assert stored.request == {"to": "a@x", "subject": ""} and stored.retries == 1
    assert stored.execution_time == when

    r = await client.put(f"/api/time-tickers/{tid}", json={"description": "changed", "timeout": 9})
    assert r.status_code == 200, r.text
    stored = await app.time_tickers.get(tid)
    assert stored.description == "changed" and stored.timeout == 9 and stored.retries == 1

    r = await client.post(f"/api/time-tickers/{tid}/duplicate")
    assert r.status_code == 201
    copy = await app.time_tickers.get(r.json()["id"])
    assert copy.request == stored.request and copy.id != stored.id

    r = await client.post(f"/api/time-tickers/{tid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert (await app.time_tickers.get(tid)).status is Status.CANCELLED
    again = await client.post(f"/api/time-tickers/{tid}/cancel")
    assert again.status_code == 409 and "CANCELLED" in again.json()["error"]

    r = await client.post(f"/api/time-tickers/{tid}/retry")
    assert r.status_code == 200 and r.json()["status"] == "IDLE"
    assert (await app.time_tickers.get(tid)).status is Status.IDLE

    r = await client.delete(f"/api/time-tickers/{tid}")
    assert r.status_code == 204
    assert (await client.get(f"/api/time-tickers/{tid}")).status_code == 404

    others = [(await app.time_tickers.add("charge", request={})).id for _ in range(3)]
    r = await client.post(
        "/api/time-tickers/delete", json={"ids": [str(i) for i in others] + [str(copy.id)]}
    )
    assert r.json() == {"deleted": 4}
    assert await app.time_tickers.count() == 0


async def test_api_cron_lifecycle(app: TickerQ, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/cron-tickers",
        json={"function": "charge", "expression": "*/5 * * * *", "timezone": "Asia/Tokyo"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    cid = body["id"]
    assert body["description_of_expression"].startswith("every fifth minute")
    assert len(body["next_fires"]) == 5

    r = await client.put(f"/api/cron-tickers/{cid}", json={"expression": "0 12 * * *"})
    assert r.status_code == 200 and r.json()["expression"] == "0 12 * * *"
    assert (await app.cron_tickers.get(cid)).expression == "0 12 * * *"

    assert (await client.post(f"/api/cron-tickers/{cid}/disable")).json()["enabled"] is False
    assert (await app.cron_tickers.get(cid)).enabled is False
    assert (await client.post(f"/api/cron-tickers/{cid}/enable")).json()["enabled"] is True

    r = await client.post(f"/api/cron-tickers/{cid}/run")
    assert r.status_code == 201
    oid = r.json()["id"]
    page = (await client.get(f"/api/cron-tickers/{cid}/occurrences")).json()
    assert [o["id"] for o in page["items"]] == [oid]
    detail = (await client.get(f"/api/occurrences/{oid}")).json()
    assert detail["occurrence"]["status"] == "IDLE" and detail["attempts"] == []
    assert (await client.post(f"/api/occurrences/{oid}/cancel")).json()["status"] == "CANCELLED"
    assert (await client.post(f"/api/occurrences/{oid}/retry")).json()["status"] == "IDLE"

    assert (await client.delete(f"/api/cron-tickers/{cid}")).status_code == 204
    assert (await client.get(f"/api/cron-tickers/{cid}")).status_code == 404


async def test_pause_and_resume(memory_app: TickerQ, client_for) -> None:
    app = memory_app
    async with client_for(app.dashboard()) as client:
        r = await client.post("/api/engine/pause")
        assert r.status_code == 409 and "no engine" in r.json()["error"]
        async with app:
            r = await client.post("/api/engine/pause")
            assert r.json()["paused"] is True and app.paused
            t = await app.time_tickers.add("charge", request={})
            await app.engine.wait_idle()
            assert (await app.time_tickers.get(t.id)).status is Status.IDLE
            html = (await client.get("/")).text
            assert "engine-resume" in html
            r = await client.post("/engine/resume")  # the page's form
            assert r.status_code == 303 and not app.paused
            await app.engine.wait_idle()
            assert (await app.time_tickers.get(t.id)).status is Status.DONE


async def test_forms_add_edit_and_actions(app: TickerQ, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/time-tickers",
        data={
            "function": "send_email",
            "request": '{"to": "form@x"}',
            "execution_time": "2031-01-02T03:04:05",
            "description": "from the form",
            "retries": "3",
            "retry_intervals": "1, 2",
        },
    )
    assert r.status_code == 303, r.text
    tid = r.headers["location"].rsplit("/", 1)[1]
    t = await app.time_tickers.get(tid)
    assert t.request["to"] == "form@x" and t.retries == 3 and t.retry_intervals == (1.0, 2.0)
    assert t.execution_time == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)  # app timezone UTC

    r = await client.post(f"/time-tickers/{tid}", data={"description": "edited", "request": ""})
    assert r.status_code == 303
    t = await app.time_tickers.get(tid)
    assert t.description == "edited" and t.request["to"] == "form@x"

    bad = await client.post(
        "/time-tickers", data={"function": "send_email", "request": "{not json", "retries": "1"}
    )
    assert bad.status_code == 422
    assert 'data-testid="form-error"' in bad.text and "request: not valid JSON" in bad.text
    assert "{not json" in bad.text  # the form keeps what was typed

    assert (await client.post(f"/time-tickers/{tid}/cancel")).status_code == 303
    assert (await app.time_tickers.get(tid)).status is Status.CANCELLED
    assert (await client.post(f"/time-tickers/{tid}/retry")).status_code == 303
    r = await client.post(f"/time-tickers/{tid}/duplicate")
    assert r.status_code == 303 and tid not in r.headers["location"]
    r = await client.post(f"/time-tickers/{tid}/delete", headers={"HX-Request": "true"})
    assert r.status_code == 204 and r.headers["hx-location"].endswith("/time-tickers")

    ids = [str((await app.time_tickers.add("charge", request={})).id) for _ in range(2)]
    r = await client.post("/time-tickers/delete", data={"ids": ids})
    assert r.status_code == 303 and "deleted=2" in r.headers["location"]

    r = await client.post(
        "/cron-tickers",
        data={
            "function": "charge",
            "expression": "30 6 * * *",
            "timezone": "Europe/Paris",
            "misfire": "SKIP",
            "enabled": "1",
        },
    )
    assert r.status_code == 303, r.text
    cid = r.headers["location"].rsplit("/", 1)[1]
    cron = await app.cron_tickers.get(cid)
    assert cron.timezone == "Europe/Paris" and cron.misfire.value == "SKIP" and cron.enabled
    r = await client.post(
        f"/cron-tickers/{cid}", data={"expression": "45 6 * * *", "timezone": "Europe/Paris"}
    )
    assert r.status_code == 303
    cron = await app.cron_tickers.get(cid)
    assert cron.expression == "45 6 * * *" and not cron.enabled  # unchecked box disables
    for action in ("enable", "run", "disable"):
        assert (await client.post(f"/cron-tickers/{cid}/{action}")).status_code == 303
    assert len(await app.cron_tickers.occurrences(cid)) == 1
    bad = await client.post(
        "/cron-tickers", data={"function": "charge", "expression": "0 25 * * *"}
    )
    assert bad.status_code == 422 and "hour" in bad.text
    assert (await client.post(f"/cron-tickers/{cid}/delete")).status_code == 303
    assert await app.cron_tickers.query(function="charge") == []


async def test_operations_are_logged_with_the_user(
    memory_app: TickerQ, client_for, caplog: pytest.LogCaptureFixture
) -> None:
    from tickerq.dashboard import BasicAuth

    dash = memory_app.dashboard(auth=BasicAuth("alice", "pw"))
    async with client_for(dash, auth=("alice", "pw")) as client:
        with caplog.at_level(logging.INFO, logger="tickerq.dashboard"):
            r = await client.post("/api/time-tickers", json={"function": "charge", "request": 1})
            assert r.status_code == 201
            await client.post(f"/api/time-tickers/{r.json()['id']}/cancel")
    messages = [rec.getMessage() for rec in caplog.records if rec.name == "tickerq.dashboard"]
    assert any("alice added time ticker" in m for m in messages)
    assert any("alice cancelled time" in m for m in messages)
    assert all(
        getattr(rec, "user", None) == "alice"
        for rec in caplog.records
        if rec.name == "tickerq.dashboard"
    )


async def test_bad_api_input_is_4xx_naming_the_value(client: httpx.AsyncClient) -> None:
    cases = [
        ("post", "/api/time-tickers", {"function": "nope"}, 422, "nope"),
        ("post", "/api/time-tickers", {"function": "send_email", "request": {"to": 5}}, 422, "to"),
        ("post", "/api/time-tickers", {"function": "charge", "retries": -1}, 422, "retries"),
        ("post", "/api/time-tickers", {"function": "charge", "zzz": 1}, 422, "zzz"),
        ("post", "/api/time-tickers", [1, 2], 422, "body"),
        ("post", "/api/cron-tickers", {"function": "charge", "expression": "* * *"}, 422, "* * *"),
        (
            "post",
            "/api/cron-tickers",
            {"function": "charge", "expression": "* * * * *", "timezone": "Nowhere/City"},
            422,
            "Nowhere/City",
        ),
        ("post", "/api/time-tickers/delete", {"ids": ["not-a-uuid"]}, 422, "not-a-uuid"),
    ]
    for method, path, body, status, needle in cases:
        r = await getattr(client, method)(path, json=body)
        assert r.status_code == status, (path, body, r.text)
        assert needle in r.json()["error"], (path, body, r.text)
    r = await client.post(
        "/api/time-tickers", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = await client.post("/api/time-tickers", content=b"[" * 100_000)
    assert r.status_code == 400
    r = await client.get("/api/time-tickers/xyz")
    assert r.status_code == 422 and "xyz" in r.json()["error"]
    r = await client.get("/api/time-tickers?limit=0")
    assert r.status_code == 422 and "limit" in r.json()["error"]
    r = await client.get("/api/time-tickers?status=DONEISH")
    assert r.status_code == 422 and "DONEISH" in r.json()["error"]
    r = await client.get("/api/time-tickers/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    r = await client.get("/api/nothing-here")
    assert r.status_code == 404


async def test_standalone_dashboard_adds_for_functions_it_does_not_have(
    tmp_path, make_app, client_for
) -> None:
    url = f"sqlite:///{tmp_path}/standalone.db"
    worker = make_app(url)
    await worker.open()
    await worker.time_tickers.add("send_email", request={"to": "seen"})
    await worker.stop()
    viewer = TickerQ(url, seed_crons=False)  # no functions registered, like `tickerq dashboard`
    try:
        async with client_for(viewer.dashboard()) as client:
            assert (await client.get("/")).status_code == 200
            r = await client.post(
                "/api/time-tickers", json={"function": "send_email", "request": {"to": "new"}}
            )
            assert r.status_code == 201, r.text
            assert r.json()["request"] == {"to": "new"}
            r = await client.post("/api/time-tickers", json={"function": "unknown_fn"})
            assert r.status_code == 422 and "unknown_fn" in r.json()["error"]
            r = await client.post("/api/engine/pause")
            assert r.status_code == 409
    finally:
        await viewer.stop()


async def test_standalone_dashboard_edits_runs_and_copies_what_it_does_not_have(
    tmp_path, make_app, client_for
) -> None:
    url = f"sqlite:///{tmp_path}/standalone.db"
    worker = make_app(url)
    await worker.open()
    await worker.time_tickers.add("send_email", request={"to": "seen"})
    await worker.stop()
    viewer = TickerQ(url, seed_crons=False)  # no functions registered
    try:
        async with client_for(viewer.dashboard()) as client:
            r = await client.post(
                "/api/time-tickers", json={"function": "send_email", "request": {"to": "a"}}
            )
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            r = await client.put(
                f"/api/time-tickers/{tid}", json={"request": {"to": "b"}, "description": "d"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["request"] == {"to": "b"} and r.json()["description"] == "d"
            r = await client.put(f"/api/time-tickers/{tid}", json={"request": {"k\u0000": 1}})
            assert r.status_code == 422 and "send_email" in r.json()["error"], r.text
            assert (await viewer.time_tickers.get(tid)).request == {"to": "b"}
            r = await client.post(f"/api/time-tickers/{tid}/duplicate")
            assert r.status_code == 201, r.text
            assert r.json()["function"] == "send_email" and r.json()["request"] == {"to": "b"}
            assert r.json()["priority"] == Priority.NORMAL and r.json()["id"] != tid

            r = await client.post(
                "/api/cron-tickers",
                json={"function": "send_email", "expression": "*/5 * * * *", "request": [1]},
            )
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            r = await client.put(f"/api/cron-tickers/{cid}", json={"request": {"to": "c"}})
            assert r.status_code == 200 and r.json()["request"] == {"to": "c"}, r.text
            r = await client.post(f"/api/cron-tickers/{cid}/run")
            assert r.status_code == 201, r.text
            oid = r.json()["id"]
            r = await client.post(f"/api/occurrences/{oid}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
            r = await client.post(f"/api/occurrences/{oid}/retry")
            assert r.status_code == 200 and r.json()["status"] == "IDLE", r.text
            r = await client.post(
                "/api/cron-tickers", json={"function": "unknown_fn", "expression": "* * * * *"}
            )
            assert r.status_code == 422 and "unknown_fn" in r.json()["error"], r.text
        assert len(await viewer.cron_tickers.query()) == 1
        assert await viewer.time_tickers.count() == 3
    finally:
        await viewer.stop()

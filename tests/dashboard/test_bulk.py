"""Bulk cancel, retry and update through the JSON API and the pages' forms."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import httpx
from starlette.datastructures import QueryParams

from tickerq import Status, TickerQ
from tickerq.dashboard import Permission
from tickerq.dashboard.bulk import SHOWN_SKIPPED, notice_of, result_query
from tickerq.enums import TickerKind
from tickerq.operations import BulkItem, BulkOutcome, BulkResult


async def _ended(app: TickerQ, function: str = "charge") -> UUID:
    """A time ticker that ended CANCELLED."""
    ticker = await app.time_tickers.add(function, request={})
    await app.time_tickers.cancel(ticker.id)
    return ticker.id


async def _waiting(app: TickerQ, n: int = 1) -> list[UUID]:
    return [(await app.time_tickers.add("charge", request={"n": i})).id for i in range(n)]


# -- JSON API --------------------------------------------------------------------------


async def test_api_cancel_and_retry_report_each_id(app: TickerQ, client: httpx.AsyncClient) -> None:
    waiting = await _waiting(app, 2)
    ended = await _ended(app)
    unknown = uuid4()
    ids = [str(i) for i in (*waiting, ended, unknown)]

    r = await client.post("/api/time-tickers/cancel", json={"ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["action"], body["done"], body["requested"], body["skipped"]) == ("cancel", 2, 0, 2)
    assert [(i["id"], i["outcome"], i["status"]) for i in body["items"]] == [
        (ids[0], "done", "IDLE"),
        (ids[1], "done", "IDLE"),
        (ids[2], "not_allowed", "CANCELLED"),
        (ids[3], "not_found", None),
    ]
    assert body["items"][2]["reason"] == "is CANCELLED; it has already ended"
    assert body["items"][2]["function"] == "charge"
    for ticker_id in waiting:
        assert (await app.time_tickers.get(ticker_id)).status is Status.CANCELLED

    r = await client.post("/api/time-tickers/retry", json={"ids": ids[:3]})
    assert r.status_code == 200, r.text
    assert [i["outcome"] for i in r.json()["items"]] == ["done", "done", "done"]
    for ticker_id in (*waiting, ended):
        assert (await app.time_tickers.get(ticker_id)).status is Status.IDLE


async def test_api_update_many(app: TickerQ, client: httpx.AsyncClient) -> None:
    waiting = await _waiting(app, 2)
    ended = await _ended(app)
    ids = [str(i) for i in (*waiting, ended)]
    r = await client.post(
        "/api/time-tickers/update",
        json={"ids": ids, "changes": {"description": "bulk", "retries": 4, "timeout": 7}},
    )
    assert r.status_code == 200, r.text
    assert [i["outcome"] for i in r.json()["items"]] == ["done", "done", "not_allowed"]
    for ticker_id in waiting:
        got = await app.time_tickers.get(ticker_id)
        assert (got.description, got.retries, got.timeout) == ("bulk", 4, 7)
    assert (await app.time_tickers.get(ended)).description == ""

    # a request that does not fit a function among them changes nothing
    email = (await app.time_tickers.add("send_email", request={"to": "a@x"})).id
    r = await client.post(
        "/api/time-tickers/update",
        json={"ids": [str(email), ids[0]], "changes": {"request": {"nope": 1}, "description": "z"}},
    )
    assert r.status_code == 422 and "send_email" in r.json()["error"]
    assert (await app.time_tickers.get(waiting[0])).description == "bulk"


async def test_api_bad_bodies_change_nothing(app: TickerQ, client: httpx.AsyncClient) -> None:
    (ticker,) = await _waiting(app)
    bodies: list[tuple[str, Any, str]] = [
        ("/api/time-tickers/cancel", {"ids": [str(ticker), "nope"]}, "nope"),
        ("/api/time-tickers/cancel", {"ids": []}, "at least 1"),
        ("/api/time-tickers/retry", {"ids": [str(uuid4()) for _ in range(1001)]}, "at most 1000"),
        ("/api/time-tickers/cancel", {"ids": [str(ticker)], "extra": 1}, "extra"),
        ("/api/time-tickers/update", {"ids": [str(ticker)]}, "changes"),
        (
            "/api/time-tickers/update",
            {"ids": [str(ticker)], "changes": {"retries": -1}},
            "retries",
        ),
        ("/api/occurrences/cancel", {"ids": "all"}, "ids"),
    ]
    for path, body, named in bodies:
        r = await client.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert named in r.text, (path, r.text)
    got = await app.time_tickers.get(ticker)
    assert got.status is Status.IDLE and got.retries == 0


async def test_api_occurrences(app: TickerQ, client: httpx.AsyncClient) -> None:
    (cron,) = await app.cron_tickers.query()
    occurrence = await app.cron_tickers.run_now(cron.id)
    (ticker,) = await _waiting(app)
    r = await client.post(
        "/api/occurrences/cancel", json={"ids": [str(occurrence.id), str(ticker)]}
    )
    assert r.status_code == 200, r.text
    assert [i["outcome"] for i in r.json()["items"]] == ["done", "not_found"]
    assert (await app.cron_tickers.get_occurrence(occurrence.id)).status is Status.CANCELLED
    assert (await app.time_tickers.get(ticker)).status is Status.IDLE
    r = await client.post("/api/occurrences/retry", json={"ids": [str(occurrence.id)]})
    assert r.json()["done"] == 1
    assert (await app.cron_tickers.get_occurrence(occurrence.id)).status is Status.IDLE


async def test_bulk_needs_the_permission_and_same_origin(
    memory_app: TickerQ, client_for: Any
) -> None:
    class User:
        def __init__(self, username: str) -> None:
            self.username = username

    async def auth(request: Any) -> User | None:
        name = request.headers.get("x-user")
        return User(name) if name else None

    roles = {
        "viewer": {Permission.VIEW},
        "operator": {"view", "operate"},
        "editor": {"view", "edit"},
    }
    dash = memory_app.dashboard(auth=auth, permissions=lambda u: roles.get(u.username, set()))
    (ticker,) = await _waiting(memory_app)
    ids = {"ids": [str(ticker)]}
    needs = {
        "operate": [
            ("/api/time-tickers/cancel", ids),
            ("/api/time-tickers/retry", ids),
            ("/api/occurrences/cancel", ids),
            ("/api/occurrences/retry", ids),
            ("/time-tickers/cancel", None),
            ("/time-tickers/retry", None),
            ("/occurrences/cancel", None),
        ],
        "edit": [("/api/time-tickers/update", {**ids, "changes": {"description": "x"}})],
    }
    async with client_for(dash, addr="10.9.9.9") as client:
        for who, granted in roles.items():
            for permission, calls in needs.items():
                if permission in granted:
                    continue
                for path, body in calls:
                    kwargs: dict[str, Any] = (
                        {"json": body}
                        if body
                        else {"data": {"ids": str(ticker), "cron": str(uuid4())}}
                    )
                    r = await client.post(path, headers={"x-user": who}, **kwargs)
                    assert r.status_code == 403, (who, path, r.text)
                    assert permission in r.text
        assert (await memory_app.time_tickers.get(ticker)).description == ""
        assert (await memory_app.time_tickers.get(ticker)).status is Status.IDLE
        html = (await client.get("/time-tickers", headers={"x-user": "viewer"})).text
        assert 'data-testid="bulk-cancel" data-confirm=' in html
        assert html.count('disabled title="needs the operate permission"') >= 2
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
            r = await client.post(
                "/api/time-tickers/cancel", json=ids, headers={"x-user": "operator", **headers}
            )
            assert r.status_code == 403 and "cross-site" in r.text
            r = await client.post(
                "/time-tickers/cancel", data=ids, headers={"x-user": "operator", **headers}
            )
            assert r.status_code == 403
        assert (await memory_app.time_tickers.get(ticker)).status is Status.IDLE
        r = await client.post("/api/time-tickers/cancel", json=ids, headers={"x-user": "operator"})
        assert r.status_code == 200 and r.json()["done"] == 1


# -- forms -----------------------------------------------------------------------------


async def test_form_bulk_cancel_goes_back_with_the_result(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    waiting = await _waiting(app, 2)
    ended = await _ended(app)
    back = "status=IDLE&function=charge&page=2&evil=<b>"
    r = await client.post(
        "/time-tickers/cancel",
        data={"ids": [str(i) for i in (*waiting, ended)], "back": back},
    )
    assert r.status_code == 303, r.text
    target = urlsplit(r.headers["location"])
    assert target.path == "/time-tickers"
    query = parse_qs(target.query)
    assert (
        query["status"] == ["IDLE"] and query["function"] == ["charge"] and query["page"] == ["2"]
    )
    assert "evil" not in query
    assert query["did"] == ["cancel"] and query["done"] == ["2"]
    assert query["skipped"] == ["CANCELLED.1"] and query["skipped_ids"] == [f"{ended}.CANCELLED"]
    for ticker_id in waiting:
        assert (await app.time_tickers.get(ticker_id)).status is Status.CANCELLED

    page = await client.get(r.headers["location"].replace("page=2", "page=1"))
    assert page.status_code == 200
    assert 'data-testid="bulk-notice"' in page.text
    assert "Cancelled 2 ticker(s). Skipped 1: 1 already ended (1 CANCELLED)." in page.text
    assert f'data-id="{ended}"' in page.text and "is CANCELLED; it has already ended" in page.text

    # htmx: 204 and the page to load next
    r = await client.post(
        "/time-tickers/retry", data={"ids": [str(ended)]}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 204 and "did=retry&done=1" in r.headers["hx-location"]
    assert (await app.time_tickers.get(ended)).status is Status.IDLE

    r = await client.post("/time-tickers/cancel", data={"back": back})
    assert r.status_code == 422 and "select at least one row" in r.text
    r = await client.post("/time-tickers/retry", data={"ids": ["x1"]})
    assert r.status_code == 422 and "&#39;x1&#39; is not a ticker id" in r.text


async def test_form_bulk_on_occurrences(app: TickerQ, client: httpx.AsyncClient) -> None:
    (cron,) = await app.cron_tickers.query()
    first = await app.cron_tickers.run_now(cron.id)
    page = await client.get(f"/cron-tickers/{cron.id}")
    assert f'name="ids" value="{first.id}"' in page.text and 'data-testid="bulk-retry"' in page.text
    r = await client.post(
        "/occurrences/cancel",
        data={"ids": [str(first.id), str(uuid4())], "cron": str(cron.id), "back": "page=1"},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(f"/cron-tickers/{cron.id}?page=1&did=cancel&done=1")
    assert (await app.cron_tickers.get_occurrence(first.id)).status is Status.CANCELLED
    page = await client.get(r.headers["location"])
    assert "Cancelled 1 occurrence(s). Skipped 1: 1 not found." in page.text
    r = await client.post("/occurrences/retry", data={"ids": [str(first.id)], "cron": "nope"})
    assert r.status_code == 422 and "&#39;nope&#39; is not a cron ticker id" in r.text
    assert (await app.cron_tickers.get_occurrence(first.id)).status is Status.CANCELLED


# -- the notice ------------------------------------------------------------------------


def test_notice_round_trip_and_bounds() -> None:
    running = [BulkItem(uuid4(), BulkOutcome.REQUESTED, Status.IN_PROGRESS, "f")]
    ended = [
        BulkItem(uuid4(), BulkOutcome.NOT_ALLOWED, Status.DONE, "f", "is DONE; ...")
        for _ in range(SHOWN_SKIPPED + 5)
    ]
    missing = [BulkItem(uuid4(), BulkOutcome.NOT_FOUND, reason="not found")]
    done = [BulkItem(uuid4(), BulkOutcome.DONE, Status.IDLE, "f")]
    result = BulkResult("cancel", TickerKind.TIME, tuple(done + running + missing + ended))
    notice = notice_of(QueryParams(result_query(result)))
    assert notice is not None and not notice.all_done
    assert notice.text == (
        "Cancelled 1 ticker(s); asked the node(s) running 1 to stop them. "
        f"Skipped {SHOWN_SKIPPED + 6}: {SHOWN_SKIPPED + 5} already ended "
        f"({SHOWN_SKIPPED + 5} DONE), 1 not found."
    )
    assert [s[0] for s in notice.skipped] == [missing[0].id] + [
        e.id for e in ended[: SHOWN_SKIPPED - 1]
    ]
    assert notice.skipped[0][2] == "not found" and notice.more == 6

    # anything but what result_query writes shows nothing
    for junk in (
        {"did": "explode", "done": "1"},
        {"did": "update", "done": "1"},
        {"did": "cancel", "done": "<script>"},
        {"did": "cancel", "done": "-1"},
        {"did": "cancel", "done": "1", "skipped": "HACKED.1"},
        {"did": "cancel", "done": "1", "skipped_ids": "not-a-uuid.DONE"},
        {"did": "cancel", "done": "1", "skipped": "DONE"},
    ):
        assert notice_of(QueryParams(junk)) is None, junk
    assert notice_of(QueryParams({})) is None

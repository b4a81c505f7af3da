"""The dashboard and its JSON API with unique keys: shown on the detail page and in
the list, set from the add and edit forms and the API, conflicts answered with a
message naming the holder (409 in the API, the form again with the message, the
error page for an action, the bulk notice)."""

from __future__ import annotations

import httpx
from starlette.datastructures import QueryParams

from tickerq import Status, TickerQ
from tickerq.dashboard.bulk import notice_of, result_query
from tickerq.stores.base import Outcome


async def _end(app: TickerQ, ticker_id: object, status: Status = Status.DONE) -> None:
    """Run a due ticker to its end through the store, as the engine would."""
    now = app.clock.now()
    jobs = await app.store.claim(
        now, node="n", lease_until=now, slots=10, capacity={}, functions=list(app.functions)
    )
    job = next(j for j in jobs if j.id == ticker_id)
    await app.store.complete(
        [Outcome(job=job, status=status, node="n", started_at=now, finished_at=now)]
    )


async def test_api_adds_with_a_key_and_answers_conflicts(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    body = {"function": "charge", "request": {"n": 1}, "unique_key": "inv-1"}
    r = await client.post("/api/time-tickers", json=body)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["unique_key"] == "inv-1" and first["enqueued"] == "ADDED"

    r = await client.post("/api/time-tickers", json={**body, "request": {"n": 2}})
    assert r.status_code == 201 and r.json()["enqueued"] == "KEPT"
    assert r.json()["id"] == first["id"] and r.json()["request"] == {"n": 1}

    r = await client.post(
        "/api/time-tickers", json={**body, "request": {"n": 3}, "on_conflict": "replace"}
    )
    assert r.json()["enqueued"] == "REPLACED" and r.json()["request"] == {"n": 3}

    r = await client.post("/api/time-tickers", json={**body, "on_conflict": "error"})
    assert r.status_code == 409
    assert first["id"] in r.json()["error"] and "'inv-1'" in r.json()["error"]

    r = await client.post("/api/time-tickers", json={**body, "on_conflict": "overwrite"})
    assert r.status_code == 422 and "on_conflict" in r.text
    r = await client.post("/api/time-tickers", json={**body, "unique_key": ""})
    assert r.status_code == 422 and "unique_key" in r.text

    got = (await client.get(f"/api/time-tickers/{first['id']}")).json()["ticker"]
    assert got["unique_key"] == "inv-1" and got["enqueued"] is None
    assert await app.time_tickers.count(function="charge") == 1


async def test_api_update_to_a_held_key_is_409(app: TickerQ, client: httpx.AsyncClient) -> None:
    holder = await app.time_tickers.add("charge", request={}, unique_key="k")
    other = await app.time_tickers.add("charge", request={})
    r = await client.put(f"/api/time-tickers/{other.id}", json={"unique_key": "k"})
    assert r.status_code == 409 and str(holder.id) in r.json()["error"]
    r = await client.put(f"/api/time-tickers/{other.id}", json={"unique_key": "j"})
    assert r.status_code == 200 and r.json()["unique_key"] == "j"
    r = await client.post(
        "/api/time-tickers/update", json={"ids": [str(holder.id)], "changes": {"unique_key": "j"}}
    )
    item = r.json()["items"][0]
    assert item["outcome"] == "not_allowed" and item["held_by"] == str(other.id)


async def test_forms_show_and_set_the_key_and_say_why_not(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    r = await client.get("/time-tickers/new")
    assert 'data-testid="form-unique-key"' in r.text and 'data-testid="form-on-conflict"' in r.text
    form = {"function": "charge", "request": "{}", "unique_key": "batch <7>"}
    r = await client.post("/time-tickers", data=form)
    assert r.status_code == 303, r.text
    tid = r.headers["location"].rsplit("/", 1)[1]
    assert (await app.time_tickers.get(tid)).unique_key == "batch <7>"

    page = await client.get(f"/time-tickers/{tid}")
    assert 'data-testid="unique-key"' in page.text and "batch &lt;7&gt;" in page.text
    listed = await client.get("/time-tickers")
    assert 'data-testid="row-unique-key"' in listed.text and "key batch &lt;7&gt;" in listed.text

    # the form refuses a second one by default, naming the holder, and keeps what was typed
    again = await client.post("/time-tickers", data={**form, "description": "second"})
    assert again.status_code == 409
    assert 'data-testid="form-error"' in again.text and tid in again.text
    assert 'value="second"' in again.text
    kept = await client.post("/time-tickers", data={**form, "on_conflict": "keep"})
    assert kept.status_code == 303 and kept.headers["location"].endswith(tid)

    # the edit form: another ticker cannot take the key
    other = await app.time_tickers.add("charge", request={})
    edit = await client.get(f"/time-tickers/{other.id}/edit")
    assert 'data-testid="form-unique-key"' in edit.text
    assert 'data-testid="form-on-conflict"' not in edit.text
    r = await client.post(f"/time-tickers/{other.id}", data={"unique_key": "batch <7>"})
    assert r.status_code == 409 and tid in r.text and 'data-testid="form-error"' in r.text
    assert (await app.time_tickers.get(other.id)).unique_key is None
    r = await client.post(f"/time-tickers/{tid}", data={"unique_key": ""})  # empty: none
    assert r.status_code == 303 and (await app.time_tickers.get(tid)).unique_key is None


async def test_duplicate_and_retry_refuse_a_held_key_with_a_message(
    app: TickerQ, client: httpx.AsyncClient
) -> None:
    first = await app.time_tickers.add("charge", request={}, unique_key="k")
    r = await client.post(f"/time-tickers/{first.id}/duplicate")
    assert r.status_code == 409 and str(first.id) in r.text and "key &#39;k&#39;" in r.text
    await _end(app, first.id)
    copy = await client.post(f"/time-tickers/{first.id}/duplicate")  # the key is free now
    assert copy.status_code == 303
    holder_id = copy.headers["location"].rsplit("/", 1)[1]
    assert (await app.time_tickers.get(holder_id)).unique_key == "k"

    r = await client.post(f"/time-tickers/{first.id}/retry")
    assert r.status_code == 409 and holder_id in r.text
    r = await client.post("/time-tickers/retry", data={"ids": [str(first.id)]})
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "1 whose unique key another ticker holds" in page.text
    assert "its unique key is held by another ticker" in page.text
    assert (await app.time_tickers.get(first.id)).status is Status.DONE


def test_notice_of_held_rows() -> None:
    from uuid import uuid4

    from tickerq.enums import TickerKind
    from tickerq.operations import BulkItem, BulkOutcome, BulkResult

    held = BulkItem(uuid4(), BulkOutcome.NOT_ALLOWED, Status.DONE, "f", "its key ...", uuid4())
    ended = BulkItem(uuid4(), BulkOutcome.NOT_ALLOWED, Status.IN_PROGRESS, "f", "running")
    result = BulkResult("retry", TickerKind.TIME, (held, ended))
    notice = notice_of(QueryParams(result_query(result)))
    assert notice is not None
    assert notice.text == (
        "Retried 0 ticker(s). Skipped 2: 1 still running (1 IN_PROGRESS), "
        "1 whose unique key another ticker holds."
    )
    assert notice.exists(held.id) and notice.exists(ended.id)

"""Typing sample: mypy --strict must accept this file (checked by `make typecheck`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tickerq import (
    BulkItem,
    BulkResult,
    CronTicker,
    DuplicateJobError,
    EnqueueOutcome,
    OnConflict,
    Pause,
    TickerContext,
    TickerFunction,
    TickerQ,
    TimeTicker,
)

app = TickerQ()


@dataclass
class Email:
    to: str


@app.function("send_email", retries=3, retry_intervals=[10, 60])
def send_email(ctx: TickerContext[Email]) -> None:
    print(ctx.request.to.upper())


@app.function(cron="*/5 * * * *")
async def cleanup() -> None:
    return None


@app.function
async def bare(ctx: TickerContext) -> None:
    print(ctx.request)


handle: TickerFunction[Email] = send_email
no_request: TickerFunction[None] = cleanup


async def use() -> TimeTicker:
    await cleanup.enqueue()
    await bare.enqueue({"anything": [1, 2]})
    # by handle (the request type checked) or by name (plain JSON, checked where it runs)
    await app.enqueue(send_email, Email(to="a@b.c"), retries=1)
    by_name: TimeTicker = await app.enqueue("send_email", {"to": "a@b.c"})
    await app.schedule("send_email", {"to": "a@b.c"}, after=30, unique_key=str(by_name.id))
    return await send_email.schedule(Email(to="a@b.c"), after=timedelta(seconds=5))


def use_blocking() -> TimeTicker:
    """The sync facade keeps the real types (no Any) from any thread."""
    ticker: TimeTicker = app.sync.time_tickers.add("send_email", request=Email(to="x"))
    again: TimeTicker = app.sync.time_tickers.get(ticker.id)
    done: int = app.sync.time_tickers.count(status="DONE")
    crons: list[CronTicker] = app.sync.cron_tickers.query(function="cleanup")
    print(again.status, done, len(crons))
    cancelled: BulkResult = app.sync.time_tickers.cancel_many([ticker.id])
    skipped: list[BulkItem] = app.sync.time_tickers.retry_many([ticker.id]).skipped
    moved: BulkResult = app.sync.time_tickers.update_many([ticker.id], description="x")
    runs: BulkResult = app.sync.cron_tickers.retry_occurrences([ticker.id])
    print(cancelled.summary(), len(skipped), moved.done, runs.ok)
    send_email.sync.enqueue(Email(to="a"), retries=2)
    cleanup.sync.schedule(after=timedelta(minutes=1))
    app.sync.enqueue(send_email, Email(to="b"), description="welcome")
    app.sync.enqueue("send_email", {"to": "b"})
    return app.sync.schedule(send_email, Email(to="c"), at=datetime.now(UTC))


async def use_pauses() -> list[Pause]:
    """Pauses stored for every node; the sync twins keep the types."""
    held: Pause = await app.pauses.pause("send_email", by="ops")
    was_paused: bool = await app.pauses.resume(held.function)
    cluster: Pause = await app.pauses.pause_cluster()
    print(was_paused, cluster.cluster, await app.pauses.get("send_email"))
    await app.pauses.resume_cluster()
    return await app.pauses.query()


async def use_unique_keys(policy: OnConflict) -> EnqueueOutcome | None:
    """Unique keys on every enqueue path; the outcome is typed."""
    ticker = await send_email.enqueue(Email(to="a"), unique_key="welcome-a")
    later = await send_email.schedule(
        Email(to="a"), after=30, unique_key="welcome-a", on_conflict="replace"
    )
    try:
        await app.time_tickers.add("send_email", unique_key="k", on_conflict="error")
    except DuplicateJobError as exc:
        print(exc.function, exc.unique_key, exc.holder_id)
    moved: BulkResult = await app.time_tickers.update_many([later.id], unique_key=None)
    print(moved.items[0].held_by, later.unique_key)
    blocking = send_email.sync.schedule(Email(to="b"), at=None, unique_key="b", on_conflict=policy)
    app.sync.enqueue(send_email, Email(to="c"), unique_key="c", on_conflict="keep")
    print(blocking.enqueued is EnqueueOutcome.KEPT)
    return ticker.enqueued


def use_pauses_blocking() -> list[Pause]:
    app.sync.pauses.pause("send_email")
    ended: bool = app.sync.pauses.resume("send_email")
    print(ended)
    return app.sync.pauses.query()


def use_django() -> TimeTicker:
    """``@job`` functions of the Django integration keep their request types."""
    from tickerq.contrib.django import enqueue_on_commit, job

    @job(retries=2)
    def notify(ctx: TickerContext[Email]) -> None:
        print(ctx.request.to)

    enqueue_on_commit(notify, Email(to="a@b.c"), after=60, using="default")
    enqueue_on_commit("notify", {"to": "a@b.c"}, robust=True)
    return notify.sync.enqueue(Email(to="a@b.c"))


def web_integrations() -> None:
    """The FastAPI/Starlette lifespan (alone, composed, assigned first) and the Flask extension."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from flask import Flask
    from starlette.applications import Starlette

    from tickerq.contrib.fastapi import TickerQDep, tickerq_lifespan
    from tickerq.contrib.flask import TickerQFlask

    @asynccontextmanager
    async def own(api: FastAPI) -> AsyncIterator[dict[str, int]]:
        yield {"answer": 42}

    lifespan = tickerq_lifespan(
        app, engine=True, dashboard="/jobs", dashboard_options={"title": "x"}
    )
    api = FastAPI(lifespan=lifespan)
    FastAPI(lifespan=tickerq_lifespan(app, own, grace=5))
    Starlette(lifespan=tickerq_lifespan(app))

    @api.get("/node")
    async def node(tq: TickerQDep) -> str:
        return tq.node_id

    ext = TickerQFlask(Flask(__name__), tickerq=app, engine=False)
    print(ext.sync.time_tickers.count(), ext.tickerq.node_id)

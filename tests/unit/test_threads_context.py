"""A sync job runs in a copy of its run's context (context variables), in a pool
thread or a thread of its own, as an async job does: what middleware sets around
the run (the current span, log fields) is seen by the job, and nothing a job sets
leaks into the next job the same thread runs."""

from __future__ import annotations

import contextvars
from typing import Any

from tickerq import Priority, TickerContext, TickerQ
from tickerq.testing import run_until_idle

TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="-")


class SetsTenant:
    async def on_execute(self, ctx: TickerContext[Any], call_next: Any) -> Any:
        token = TENANT.set(ctx.headers.get("tenant", "-"))
        try:
            return await call_next(ctx)
        finally:
            TENANT.reset(token)


async def test_sync_jobs_see_the_context_of_their_run(app: TickerQ) -> None:
    app.add_middleware(SetsTenant())
    seen: list[tuple[str, str]] = []

    @app.function()
    def pooled(ctx: TickerContext[str]) -> None:
        seen.append((ctx.request, TENANT.get()))
        TENANT.set("left behind")  # must not reach the next job on this thread

    @app.function(priority=Priority.LONG_RUNNING)
    def own_thread(ctx: TickerContext[str]) -> None:
        seen.append((ctx.request, TENANT.get()))

    async with app:
        for name in ("a", "b"):
            await pooled.enqueue(name, headers={"tenant": name})
            await run_until_idle(app)  # one after the other: the same pool thread
        await pooled.enqueue("none")
        await own_thread.enqueue("long", headers={"tenant": "c"})
        await run_until_idle(app)
    assert sorted(seen) == [("a", "a"), ("b", "b"), ("long", "c"), ("none", "-")]

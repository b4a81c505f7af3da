"""A small shop's background work, for the browser tests and the screenshots.

Imported as ``dashboard.browser.shop`` (``tests`` is on ``sys.path``).
:func:`seed_history` runs a day of past work on a :class:`ManualClock` (so the
charts have a history); :func:`seed_live` adds the tickers the tests look at
(done, failed, retrying, waiting, a chain) to an app whose engine runs.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from tickerq import Priority, RunCondition, TickerContext, TickerQ, TimeTickerSpec
from tickerq.engine import EngineOptions
from tickerq.errors import TickerStateError
from tickerq.testing import ManualClock, run_until_idle

XSS = (
    '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> '
    '"><svg onload="window.__xss=3">'
)
"""Markup that runs script if a page ever inserts it unescaped."""


@dataclass
class Email:
    """Request of send_email."""

    to: str
    subject: str


@dataclass
class Order:
    """Request of charge_card."""

    order_id: int
    amount: float


@dataclass
class Image:
    """Request of resize_image."""

    path: str
    width: int


def build_shop_app(
    store: str, *, node_id: str = "web-1", clock: ManualClock | None = None
) -> TickerQ:
    """The shop's app. With a ManualClock, jobs take fake time instead of real time."""
    options = (
        EngineOptions(heartbeat_interval=3600, lease=7200, poll_interval=3600, late_threshold=900)
        if clock
        else None
    )
    app = TickerQ(store, node_id=node_id, max_concurrency=4, clock=clock, options=options)
    app.on_exception(lambda ctx, error: None)  # failures are shown in the dashboard
    rng = random.Random(7)

    async def work(seconds: float) -> None:
        if clock is not None:
            clock.tick(seconds)  # a run that "took" this long, instantly
        else:
            await asyncio.sleep(min(seconds, 0.3))

    @app.function(retries=2, retry_intervals=[900, 3600])
    async def send_email(ctx: TickerContext[Email]) -> None:
        await work(rng.uniform(0.1, 0.9))
        if ctx.request.to.endswith("@bounce.example"):
            raise ConnectionError(f"SMTP 550: mailbox unavailable for {ctx.request.to}")

    @app.function(priority=Priority.HIGH)
    async def charge_card(ctx: TickerContext[Order]) -> None:
        await work(rng.uniform(0.2, 1.5))
        if ctx.request.amount > 900:
            raise ValueError(f"card declined for order {ctx.request.order_id}: limit exceeded")

    @app.function(priority=Priority.LOW, max_concurrency=2, timeout=30)
    async def resize_image(ctx: TickerContext[Image]) -> None:
        await work(rng.uniform(0.5, 4.0))

    @app.function()
    async def import_feed(ctx: TickerContext[dict[str, Any]]) -> None:
        raise RuntimeError(f"feed rejected: {ctx.request.get('note', '')}")

    @app.function(cron="0 3 * * *", cron_timezone="Europe/Berlin")
    async def nightly_report() -> None:
        await work(rng.uniform(20, 40))

    @app.function(cron="*/30 * * * *", retries=1, retry_intervals=[60])
    async def sync_inventory() -> None:
        await work(rng.uniform(1, 6))
        if rng.random() < 0.12:
            raise TimeoutError("supplier API did not answer in 5 s")

    return app


def _order_chain(order: int, amount: float, when: datetime | None) -> TimeTickerSpec:
    return TimeTickerSpec(
        function="charge_card",
        request=Order(order, amount),
        execution_time=when,
        description=f"order {order}",
        children=[
            TimeTickerSpec(
                function="send_email",
                request=Email(f"customer{order}@example.com", "Your receipt"),
                run_condition=RunCondition.ON_SUCCESS,
            ),
            TimeTickerSpec(
                function="send_email",
                request=Email("ops@example.com", f"Payment failed: order {order}"),
                run_condition=RunCondition.ON_FAILURE,
            ),
        ],
    )


async def seed_history(store: str, hours: float = 24, bursts: int = 16) -> None:
    """Run ``hours`` of past shop work against ``store`` on node ``worker-2``:
    ``bursts`` times a few orders (each a chain), thumbnails, and the crons."""
    end = datetime.now(UTC) - timedelta(minutes=5)
    start = end - timedelta(hours=hours)
    clock = ManualClock(start)
    app = build_shop_app(store, node_id="worker-2", clock=clock)
    rng = random.Random(42)
    await app.start()
    try:
        specs = []
        for burst in range(bursts):
            when = start + timedelta(hours=hours * (burst + rng.uniform(0.1, 0.9)) / bursts)
            for i in range(rng.randint(2, 5)):
                order = 900 + burst * 10 + i
                specs.append(_order_chain(order, round(rng.uniform(5, 960), 2), when))
                specs.append(
                    TimeTickerSpec(
                        function="resize_image",
                        request=Image(f"products/{order}.jpg", rng.choice([320, 640, 1280])),
                        execution_time=when + timedelta(seconds=30),
                    )
                )
        await app.time_tickers.add_many(specs)
        while True:
            await run_until_idle(app)
            nxt = clock.next_deadline()
            if nxt is None or nxt > end:
                break
            clock.set(max(nxt, clock.now()))
    finally:
        await app.stop()


@dataclass
class Seeded:
    """Ids of the live tickers the tests look at."""

    done: UUID
    failed: UUID
    retrying: UUID
    waiting: UUID
    chain_parent: UUID
    chain_children: list[UUID]
    cron_nightly: UUID
    cron_inventory: UUID


async def seed_live(app: TickerQ) -> Seeded:
    """Tickers in every state the pages show; returns once the due ones ran."""
    tt = app.time_tickers
    now = app.clock.now()
    done = await tt.add(
        "send_email",
        request=Email("ada@example.com", "Welcome to the shop"),
        description="welcome mail",
    )
    failed = await tt.add(
        "charge_card", request=Order(4711, 1299.0), description="order 4711 (big basket)"
    )
    retrying = await tt.add(
        "send_email",
        request=Email("grace@bounce.example", "Your order shipped"),
        description="shipping notice",
    )
    waiting = await tt.add(
        "resize_image",
        request=Image("products/banner.jpg", 1920),
        execution_time=now + timedelta(hours=2),
        description="homepage banner",
    )
    parent, *chain = await tt.add_many([_order_chain(5001, 42.5, None)])
    crons = {c.function: c for c in await app.cron_tickers.query()}
    for _ in range(20):  # the engine may be firing a missed run of it right now
        try:
            await app.cron_tickers.run_now(crons["sync_inventory"].id)
            break
        except TickerStateError:
            await asyncio.sleep(0.1)
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        states = [await tt.get(i) for i in (done.id, failed.id, retrying.id)]
        if all(s.status.is_final or s.retry_count for s in states):
            break
        await asyncio.sleep(0.1)
    return Seeded(
        done=done.id,
        failed=failed.id,
        retrying=retrying.id,
        waiting=waiting.id,
        chain_parent=parent.id,
        chain_children=[c.id for c in chain],
        cron_nightly=crons["nightly_report"].id,
        cron_inventory=crons["sync_inventory"].id,
    )

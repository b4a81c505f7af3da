"""``tickerq demo``: a small shop's background work, shown live in the terminal.

It keeps its data in ``tickerq-demo.db`` (SQLite) in the current folder: stop
it and start it again, and the history is still there and overdue work runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tickerq import (
    Priority,
    RunCondition,
    Status,
    TickerContext,
    TickerQ,
    TimeTicker,
    TimeTickerSpec,
)

__all__ = ["build_demo_app", "run_demo"]

STATUS_STYLE = {
    Status.IDLE: "white",
    Status.QUEUED: "cyan",
    Status.IN_PROGRESS: "bold yellow",
    Status.DONE: "green",
    Status.DUE_DONE: "dark_green",
    Status.FAILED: "bold red",
    Status.CANCELLED: "magenta",
    Status.SKIPPED: "bright_black",
}


@dataclass
class Email:
    """Request of send_email."""

    to: str
    subject: str


@dataclass
class Order:
    """Request of the order functions."""

    order_id: int
    amount: float


@dataclass
class Receipt:
    """What charge_card returns (kept as the ticker's result)."""

    order_id: int
    charged: float
    authorization: str


DEFAULT_STORE = "sqlite:///tickerq-demo.db"


def build_demo_app(store: str = DEFAULT_STORE) -> TickerQ:
    """The demo's app: five functions, two crons, retries, a chain and a rate limit."""
    app = TickerQ(store, max_concurrency=4, node_id="demo", limits={"smtp": "50/m"})
    app.on_exception(lambda ctx, error: None)  # failures show in the table, not the log

    @app.function(retries=2, retry_intervals=[1, 2], rate_limit="smtp")
    def send_email(ctx: TickerContext[Email]) -> None:
        time.sleep(random.uniform(0.2, 0.8))
        if random.random() < 0.25:
            raise ConnectionError(f"SMTP server refused mail to {ctx.request.to}")

    @app.function(priority=Priority.HIGH)
    async def charge_card(ctx: TickerContext[Order]) -> Receipt:
        await asyncio.sleep(random.uniform(0.1, 0.4))
        if ctx.request.amount > 900:
            raise ValueError(f"card declined for {ctx.request.amount:.2f}")
        code = f"{random.randrange(16**6):06X}"
        return Receipt(ctx.request.order_id, ctx.request.amount, code)

    @app.function(priority=Priority.LOW, max_concurrency=2, timeout=3)
    async def resize_images(ctx: TickerContext[Order]) -> None:
        await asyncio.sleep(random.uniform(0.5, 4.0))

    @app.function(cron="*/10 * * * * *")
    async def sync_inventory() -> None:
        await asyncio.sleep(0.3)

    @app.function(cron="0 3 * * *", cron_timezone="Europe/Berlin")
    async def nightly_report() -> None:
        await asyncio.sleep(1)

    return app


async def _feed(app: TickerQ) -> None:
    """Add work the way a busy web app would."""
    order = 1000 + await app.time_tickers.count(function="charge_card")
    while True:
        order += 1
        amount = round(random.uniform(5, 1000), 2)
        await app.time_tickers.add_many(
            [
                TimeTickerSpec(
                    function="charge_card",
                    request=Order(order, amount),
                    description=f"order {order}",
                    headers={"correlation-id": f"order-{order}", "channel": "web"},
                    children=[
                        TimeTickerSpec(
                            function="send_email",
                            request=Email(f"customer{order}@example.com", "Your receipt"),
                            run_condition=RunCondition.ON_SUCCESS,
                        ),
                        TimeTickerSpec(
                            function="send_email",
                            request=Email("ops@example.com", f"Payment failed: {order}"),
                            run_condition=RunCondition.ON_FAILURE,
                        ),
                        TimeTickerSpec(
                            function="resize_images",
                            request=Order(order, amount),
                            run_condition=RunCondition.IN_PROGRESS,
                        ),
                    ],
                )
            ]
        )
        await asyncio.sleep(random.uniform(0.8, 2.0))


def _add_row(table: Table, t: TimeTicker, indent: str) -> None:
    due = t.execution_time.astimezone().strftime("%H:%M:%S") if t.execution_time else "-"
    took = f"{t.elapsed_ms:.0f} ms" if t.elapsed_ms is not None else ""
    if t.skipped_reason:
        note = f"condition {t.run_condition.name if t.run_condition else ''} not met"
    else:
        note = t.error_message or t.description
    table.add_row(
        indent + t.function,
        Text(t.status.name, style=STATUS_STYLE[t.status]),
        f"{t.retry_count}/{t.retries}",
        due,
        took,
        Text(note or "", overflow="ellipsis", no_wrap=True),
    )


async def _render(app: TickerQ, started: float, dashboard_url: str | None = None) -> Group:
    counts = Table.grid(padding=(0, 2))
    row = []
    for status in Status:
        n = await app.time_tickers.count(status=status)
        row.append(Text(f"{status.name} {n}", style=STATUS_STYLE[status]))
    counts.add_row(*row)

    recent = Table(expand=True, header_style="bold")
    for column in ("function", "status", "try", "due", "took"):
        recent.add_column(column, no_wrap=True)
    recent.add_column("note", ratio=1)
    # The latest orders by when they were placed (a retry's later due time would
    # otherwise put old orders first).
    roots: list[TimeTicker] = await app.time_tickers.query(
        function="charge_card", roots_only=True, limit=50
    )
    roots = sorted(roots, key=lambda t: t.created_at, reverse=True)[:5]
    for root in roots:
        _add_row(recent, root, "")
        for child in await app.time_tickers.query(parent_id=root.id):
            _add_row(recent, child, "└ ")

    crons = Table(expand=True, header_style="bold")
    for column in ("cron", "function", "runs", "next fire"):
        crons.add_column(column)
    for c in await app.cron_tickers.query():
        runs = len(await app.cron_tickers.occurrences(c.id, limit=10_000))
        nxt = c.next_fire_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if c.next_fire_at else "-"
        crons.add_row(c.expression, c.function, str(runs), nxt)

    uptime = time.monotonic() - started
    title = (
        f"tickerq demo - {app.store_url} - {app.engine.active} running "
        f"of {app.max_concurrency} slots - up {uptime:.0f} s - Ctrl+C to stop"
    )
    if dashboard_url:
        title += f" - dashboard {dashboard_url}"
    return Group(
        Panel(counts, title=title),
        Panel(recent, title="latest orders: charge_card, then its chain"),
        Panel(crons, title="cron tickers"),
    )


async def run_demo(
    duration: float | None = None,
    store: str | TickerQ = DEFAULT_STORE,
    *,
    dashboard: bool = True,
    host: str = "127.0.0.1",
    port: int = 8787,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the demo app (``store`` is its URL, or an app from :func:`build_demo_app`);
    show it live until ``stop`` is set or ``duration`` seconds have passed.

    With ``dashboard`` the web dashboard is served on ``host:port`` meanwhile.
    On stop the dashboard server is shut down, then the engine, whose running
    jobs get its grace period.
    """
    app = build_demo_app(store) if isinstance(store, str) else store
    stop = stop or asyncio.Event()
    started = time.monotonic()
    async with app:
        server = None
        if dashboard:
            from tickerq.dashboard.server import start_server

            try:
                server = await start_server(app.dashboard(title="tickerq demo"), host, port)
                print(f"tickerq demo: dashboard on {server.url}")
            except OSError as exc:
                print(f"tickerq demo: no dashboard ({host}:{port}: {exc})")
        url = server.url if server else None
        feeder = asyncio.create_task(_feed(app))
        try:
            with Live(await _render(app, started, url), refresh_per_second=4) as live:
                while not stop.is_set():
                    left = None if duration is None else duration - (time.monotonic() - started)
                    if left is not None and left <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5 if left is None else min(0.5, left))
                    live.update(await _render(app, started, url))
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
                live.update(await _render(app, started, url))  # the last orders too
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            if server is not None:
                await server.stop()
    done = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
    print(f"tickerq demo stopped at {done}")

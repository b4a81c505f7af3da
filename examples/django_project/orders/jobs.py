"""The jobs of the orders app, found by tickerq's Django app when Django starts.

Module-level model imports are fine: jobs modules are imported once the app
registry is ready, in the web processes and in the worker alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from orders.models import Order
from tickerq import TickerContext
from tickerq.contrib.django import job


@dataclass
class OrderRef:
    order_id: int


def confirm(order_id: int) -> None:
    """Mark an order confirmed (plain code: tested without a worker)."""
    Order.objects.filter(pk=order_id, status="new").update(
        status="confirmed", confirmed_at=timezone.now()
    )


@job(retries=2, retry_intervals=[1])
def confirm_order(ctx: TickerContext[OrderRef]) -> None:
    """A sync job: it runs in a worker thread and uses the ORM as a view does."""
    if not Order.objects.filter(pk=ctx.request.order_id).exists():
        raise LookupError(f"no order {ctx.request.order_id}")
    confirm(ctx.request.order_id)


@job
async def audit_order(ctx: TickerContext[OrderRef]) -> int:
    """An async job: it uses the async ORM (each run gets its own ORM thread)."""
    return await Order.objects.filter(pk=ctx.request.order_id).aupdate(audited=True)


@job(cron="0 3 * * *")  # seeded by the worker: daily at 03:00 in TIME_ZONE
def purge_abandoned_orders() -> int:
    """A cron job: orders left unconfirmed for 30 days go."""
    cutoff = timezone.now() - timedelta(days=30)
    deleted, _ = Order.objects.filter(status="new", created_at__lt=cutoff).delete()
    return deleted

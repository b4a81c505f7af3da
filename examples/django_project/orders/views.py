"""Placing an order enqueues its jobs when the transaction commits, not before."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from orders.jobs import OrderRef, confirm_order
from orders.models import Order
from tickerq.contrib.django import enqueue_on_commit


class PaymentDeclined(Exception):
    pass


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Create an order and enqueue its jobs on commit; ``decline=1`` rolls it back."""
    try:
        with transaction.atomic():
            order = Order.objects.create(email=request.POST.get("email", ""))
            enqueue_on_commit(
                confirm_order, OrderRef(order.pk), unique_key=f"confirm-order-{order.pk}"
            )
            enqueue_on_commit("audit_order", {"order_id": order.pk})  # by name works too
            if request.POST.get("decline") == "1":
                raise PaymentDeclined(order.pk)
    except PaymentDeclined:  # the order is rolled back, and so are its jobs
        return JsonResponse({"error": "payment declined", "order": order.pk}, status=402)
    return JsonResponse({"order": order.pk}, status=201)


@require_GET
def order_detail(request: HttpRequest, pk: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    return JsonResponse({"order": order.pk, "status": order.status, "audited": order.audited})

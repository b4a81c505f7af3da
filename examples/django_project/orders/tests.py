"""Tests of the orders app, as a project would write them (``manage.py test``).

Django's test database on SQLite is in memory, so tickerq's store is too
(memory://, derived from it): jobs are enqueued but no worker runs them. Django's
TestCase runs each test in a transaction that never commits, so on-commit work
is run by ``captureOnCommitCallbacks(execute=True)``; the jobs' own logic is
plain code, tested directly. To run the jobs themselves, start the engine in a
TransactionTestCase: its rows are committed, so the engine's threads see them.
"""

from __future__ import annotations

from typing import Any

from django.test import TestCase, TransactionTestCase

from orders.jobs import OrderRef, audit_order, confirm, confirm_order
from orders.models import Order
from tickerq import InvalidRequestError, Status
from tickerq.contrib.django import enqueue_on_commit, get_sync_app, reset_app


def tickers_of(order_id: int) -> list[Any]:
    tickers = get_sync_app().time_tickers.query(limit=1000)
    return [t for t in tickers if t.request == {"order_id": order_id}]


class PlaceOrderTests(TestCase):
    def test_a_placed_order_enqueues_its_jobs_when_it_commits(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/orders/", {"email": "a@example.com"})
            order_id = response.json()["order"]
            self.assertEqual(tickers_of(order_id), [])  # not before the commit
        self.assertEqual(response.status_code, 201)
        functions = sorted(t.function for t in tickers_of(order_id))
        self.assertEqual(functions, ["audit_order", "confirm_order"])

    def test_a_declined_order_enqueues_nothing(self) -> None:
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            response = self.client.post("/orders/", {"email": "b@example.com", "decline": "1"})
        self.assertEqual(response.status_code, 402)
        self.assertEqual(callbacks, [])
        self.assertEqual(tickers_of(response.json()["order"]), [])
        self.assertFalse(Order.objects.filter(email="b@example.com").exists())

    def test_a_bad_request_raises_at_the_call_not_at_the_commit(self) -> None:
        with self.assertRaises(InvalidRequestError):
            enqueue_on_commit(confirm_order, {"order_id": "seven"})

    def test_confirm_marks_the_order_confirmed(self) -> None:
        order = Order.objects.create(email="c@example.com")
        confirm(order.pk)
        order.refresh_from_db()
        self.assertEqual(order.status, "confirmed")
        self.assertIsNotNone(order.confirmed_at)

    def test_the_health_view_answers_ready(self) -> None:
        response = self.client.get("/tickerq/health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "ready")


class RunningJobsTests(TransactionTestCase):
    def setUp(self) -> None:
        reset_app()  # a new app, on an empty memory store: no tickers of other tests
        self.addCleanup(reset_app)

    def test_the_engine_runs_the_jobs_with_the_orm(self) -> None:
        app = get_sync_app()
        app.start()
        try:
            order = Order.objects.create(email="d@example.com")
            # One job at a time: Django's SQLite test database is a shared-cache
            # memory database, where two writers fail at once ("table is locked")
            # instead of waiting (a file or PostgreSQL has no such limit).
            confirming = confirm_order.sync.enqueue(OrderRef(order.pk))
            self.assertEqual(app.time_tickers.wait(confirming.id, timeout=10).status, Status.DONE)
            auditing = audit_order.sync.enqueue(OrderRef(order.pk))
            audited = app.time_tickers.wait(auditing.id, timeout=10)
            self.assertEqual((audited.status, audited.result), (Status.DONE, 1))
        finally:
            app.stop()
        order.refresh_from_db()
        self.assertEqual((order.status, order.audited), ("confirmed", True))

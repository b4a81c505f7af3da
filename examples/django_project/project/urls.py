"""URLs of the example project."""

from django.urls import path
from orders import views

from tickerq.contrib.django.views import health

urlpatterns = [
    path("orders/", views.place_order, name="place-order"),
    path("orders/<int:pk>", views.order_detail, name="order-detail"),
    path("tickerq/health", health, name="tickerq-health"),
]

"""An order, confirmed by a sync job and audited by an async one."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    email = models.EmailField()
    status = models.CharField(max_length=20, default="new")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    audited = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"

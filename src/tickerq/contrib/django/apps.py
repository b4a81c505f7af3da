"""The Django app: ``INSTALLED_APPS = [..., "tickerq.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["TickerQConfig"]


class TickerQConfig(AppConfig):
    """Finds every installed app's jobs module when Django starts, and adds the
    tickerq system checks."""

    name = "tickerq.contrib.django"
    label = "tickerq"
    verbose_name = "tickerq"

    def ready(self) -> None:
        """Import each installed app's jobs module (``TICKERQ["JOBS_MODULE"]``); its
        problems are reported by the system checks and ``manage.py tickerq check``."""
        from django.conf import settings
        from django.core import checks as django_checks

        from tickerq.contrib.django.checks import check_setup
        from tickerq.contrib.django.conf import jobs_module
        from tickerq.contrib.django.project import autodiscover

        django_checks.register(check_setup, "tickerq")
        autodiscover(jobs_module(getattr(settings, "TICKERQ", None)))

"""The project's app as a ``tickerq`` command target: ``manage.py tickerq run`` runs
``tickerq run tickerq.contrib.django.worker:app``, and so can you, with
``DJANGO_SETTINGS_MODULE`` set.

Importing it sets Django up (``django.setup()``) when nothing has, so the jobs
modules are imported with the app registry ready.
"""

from __future__ import annotations

import django
from django.apps import apps

from tickerq.contrib.django.project import get_app

__all__ = ["app"]

if not apps.ready:
    django.setup()

app = get_app()
"""The project's app (see :func:`tickerq.contrib.django.get_app`)."""

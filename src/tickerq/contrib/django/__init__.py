"""tickerq for Django projects (``pip install 'tickerq[django]'``).

Add ``"tickerq.contrib.django"`` to ``INSTALLED_APPS``, register job functions
in a ``jobs.py`` module of any installed app with :func:`job`, and run the
worker with ``manage.py tickerq run``::

    # myapp/jobs.py
    from tickerq import TickerContext
    from tickerq.contrib.django import job

    @job(retries=3)
    def send_welcome(ctx: TickerContext[int]) -> None:
        user = User.objects.get(pk=ctx.request)
        ...

    # myapp/views.py
    with transaction.atomic():
        user = User.objects.create(...)
        enqueue_on_commit(send_welcome, user.pk)

Settings (``TICKERQ``), the management command, connections, the health view
and deployment are described in docs/django.md. Install with
``pip install 'tickerq[django,postgres]'`` (or ``[django,sqlite]``).
"""

from __future__ import annotations

from tickerq._extras import need

need("django", "tickerq.contrib.django")

from tickerq.contrib.django.commit import enqueue_on_commit  # noqa: E402
from tickerq.contrib.django.connections import CloseConnections  # noqa: E402
from tickerq.contrib.django.project import (  # noqa: E402
    DjangoJob,
    autodiscover,
    get_app,
    get_sync_app,
    job,
    registry,
    reset_app,
)

__all__ = [
    "CloseConnections",
    "DjangoJob",
    "autodiscover",
    "enqueue_on_commit",
    "get_app",
    "get_sync_app",
    "job",
    "registry",
    "reset_app",
]

"""A health view for load balancers and probes.

In ``urls.py``::

    from tickerq.contrib.django.views import health

    urlpatterns = [..., path("tickerq/health", health)]

``GET`` answers ``200 {"status": "ready", "checks": {...}}`` when the store
answers a small read within 2 seconds (and, in a process that runs the engine,
the engine runs with a fresh heartbeat), else ``503 {"status": "not ready",
"reason": ...}``: the readiness check of :mod:`tickerq.health`, which shows
states and ages only, never hosts or job data. The store is opened on the
first request, within the same time limit.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from tickerq.health import HealthChecks

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["health"]

_lock = threading.Lock()
_checks: dict[int, HealthChecks] = {}
"""One readiness check per app (so concurrent requests share one store read)."""


def _checks_of(app: TickerQ) -> HealthChecks:
    from tickerq.contrib.django.project import close_at_exit

    with _lock:
        checks = _checks.get(id(app))
        if checks is None or checks.app is not app:

            async def open_store() -> None:
                if app.loop is None:
                    await app.open()  # on the facade's loop, where this runs
                    close_at_exit(app)

            checks = _checks[id(app)] = HealthChecks(app, engine=None, open_store=open_store)
        return checks


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Readiness of tickerq in this process as JSON: 200 when ready, 503 when not."""
    from tickerq.contrib.django.project import get_app

    app = get_app()
    readiness = app.sync.call(_checks_of(app).ready())
    return JsonResponse(readiness.body(), status=readiness.status_code)

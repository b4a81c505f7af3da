"""The tickerq web dashboard: ``app.dashboard(...)`` returns an ASGI app to mount.

Server-rendered pages (Jinja2, autoescaped) with htmx, live updates over
Server-Sent Events, charts with uPlot and Tailwind CSS built at development
time; every asset is vendored. A JSON API lives under ``<path>/api`` with its
OpenAPI document at ``<path>/api/openapi.json``.

Without ``auth`` only loopback clients get in::

    from fastapi import FastAPI
    api = FastAPI()
    api.mount("/jobs", app.dashboard(auth=BasicAuth("admin", "s3cret")))
"""

from __future__ import annotations

from tickerq._extras import need

need("dashboard", "the dashboard")

from tickerq.dashboard.app import CSP, create_dashboard  # noqa: E402
from tickerq.dashboard.auth import (  # noqa: E402
    ALL_PERMISSIONS,
    BasicAuth,
    BearerAuth,
    DashboardUser,
    Permission,
)
from tickerq.dashboard.context import Dashboard, DashboardError  # noqa: E402
from tickerq.dashboard.service import Redactor  # noqa: E402

__all__ = [
    "ALL_PERMISSIONS",
    "CSP",
    "BasicAuth",
    "BearerAuth",
    "Dashboard",
    "DashboardError",
    "DashboardUser",
    "Permission",
    "Redactor",
    "create_dashboard",
]

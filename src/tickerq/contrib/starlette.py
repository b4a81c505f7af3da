"""Starlette and FastAPI: open the tickerq app with the web app.

``pip install 'tickerq[starlette]'`` (or ``'tickerq[fastapi]'``).

A web process usually only enqueues and reads tickers, while a separate worker
(``tickerq run jobs:tq``) runs them. Give the app's lifespan to the framework::

    from fastapi import FastAPI
    from tickerq.contrib.starlette import tickerq_lifespan

    from myproject.jobs import tq

    api = FastAPI(lifespan=tickerq_lifespan(tq))               # enqueue and read only
    api = FastAPI(lifespan=tickerq_lifespan(tq, engine=True))  # and run the jobs here

On startup the store is opened (with ``engine=True`` the engine starts too, and
the crons declared by decorators are seeded); on shutdown running jobs get the
grace period and the store is closed. Your own lifespan goes inside
(``tickerq_lifespan(tq, my_lifespan)``): tickerq is open while it starts and
stops, and the state it yields is kept. ``dashboard="/jobs"`` mounts
``tq.dashboard(**dashboard_options)`` there.

Routes reach the app through the lifespan state: :func:`get_tickerq` (in FastAPI,
``Depends(get_tickerq)`` or :data:`tickerq.contrib.fastapi.TickerQDep`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, overload

try:
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection
    from starlette.routing import Mount
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"tickerq.contrib.starlette needs Starlette ({exc}): pip install 'tickerq[starlette]'"
    ) from exc

from tickerq.errors import InvalidArgumentError, TickerQError

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.dashboard.auth import AuthCallable, PermissionsSpec

__all__ = ["STATE_KEY", "DashboardOptions", "get_tickerq", "tickerq_lifespan"]

AppT = TypeVar("AppT")

STATE_KEY = "tickerq"
"""The key of the tickerq app in the lifespan state (``request.state.tickerq``)."""

UserLifespan = Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any] | None]]
"""A Starlette lifespan: ``lifespan(app)`` gives an async context manager that
may yield a state mapping."""


class DashboardOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`tickerq.TickerQ.dashboard`, for ``dashboard_options``."""

    auth: AuthCallable | None
    permissions: PermissionsSpec
    base_path: str
    redact: Callable[[str, Any], Any] | None
    title: str
    allowed_origins: Sequence[str]
    metrics: bool
    stream_max_age: float


@overload
def tickerq_lifespan(
    tickerq: TickerQ,
    lifespan: None = None,
    *,
    engine: bool = False,
    grace: float | None = None,
    dashboard: str | None = None,
    dashboard_options: DashboardOptions | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]: ...
@overload
def tickerq_lifespan(
    tickerq: TickerQ,
    lifespan: UserLifespan[AppT],
    *,
    engine: bool = False,
    grace: float | None = None,
    dashboard: str | None = None,
    dashboard_options: DashboardOptions | None = None,
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]: ...
def tickerq_lifespan(
    tickerq: TickerQ,
    lifespan: UserLifespan[AppT] | None = None,
    *,
    engine: bool = False,
    grace: float | None = None,
    dashboard: str | None = None,
    dashboard_options: DashboardOptions | None = None,
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)`` that opens
    ``tickerq`` on startup and closes it on shutdown.

    ``engine``: False (the default) opens the store only: this process enqueues,
    schedules and reads, and runs no job (a worker does: ``tickerq run``). True
    also runs the engine here, as one more node. ``grace``: seconds running jobs
    get to finish on shutdown (default: the app's grace period). ``lifespan``: your
    own, run inside, with tickerq open; its state is merged into the one yielded
    here (``{"tickerq": tickerq}``). ``dashboard``: a path (``"/jobs"``) to mount
    the dashboard at, built with ``dashboard_options``; it is added after your
    routes, so a catch-all route of yours would hide it.
    """
    from tickerq.app import TickerQ

    if not isinstance(tickerq, TickerQ):
        raise InvalidArgumentError(
            f"tickerq_lifespan() needs a TickerQ app, got {type(tickerq).__name__}"
        )
    if dashboard is not None and (
        not isinstance(dashboard, str) or not dashboard.startswith("/") or dashboard == "/"
    ):
        raise InvalidArgumentError(
            f"dashboard must be a path below the root like '/jobs', got {dashboard!r}"
        )
    if dashboard_options is not None and dashboard is None:
        raise InvalidArgumentError("dashboard_options needs dashboard='/path' to mount it at")
    mounted: list[Any] = []  # the dashboard app, built on the first startup

    @asynccontextmanager
    async def tickerq_lifespan_context(app: AppT) -> AsyncIterator[dict[str, Any]]:
        if dashboard is not None:
            _mount_dashboard(app, dashboard, tickerq, dashboard_options or {}, mounted)
        try:
            await (tickerq.start() if engine else tickerq.open())
            state: dict[str, Any] = {STATE_KEY: tickerq}
            if lifespan is None:
                yield state
            else:
                async with lifespan(app) as own_state:
                    state.update(own_state or {})
                    yield state
        finally:
            await tickerq.stop(grace)

    return tickerq_lifespan_context


def _mount_dashboard(
    app: object,
    path: str,
    tickerq: TickerQ,
    options: DashboardOptions,
    mounted: list[Any],
) -> None:
    """Mount the dashboard at ``path`` once (a lifespan may run again, e.g. in tests)."""
    if not isinstance(app, Starlette):
        raise TickerQError(
            f"tickerq_lifespan(dashboard={path!r}) mounts into a Starlette or FastAPI "
            f"app, not a {type(app).__name__}; mount tq.dashboard() yourself"
        )
    if not mounted:
        mounted.append(tickerq.dashboard(**options))
    dash = mounted[0]
    wanted = path.rstrip("/")
    for route in app.router.routes:
        if isinstance(route, Mount) and route.path == wanted:
            if route.app is dash:
                return
            raise TickerQError(
                f"tickerq_lifespan(dashboard={path!r}): something else is mounted at {wanted!r}"
            )
    app.mount(wanted, dash, name="tickerq-dashboard")


def get_tickerq(conn: HTTPConnection) -> TickerQ:
    """The tickerq app that :func:`tickerq_lifespan` opened, for a request or websocket.

    In FastAPI: ``tq: TickerQ = Depends(get_tickerq)`` (or ``TickerQDep`` from
    :mod:`tickerq.contrib.fastapi`); in Starlette: ``get_tickerq(request)``.
    Raises :class:`TickerQError` when the app has no tickerq lifespan.
    """
    tickerq = conn.scope.get("state", {}).get(STATE_KEY)
    if tickerq is None:
        raise TickerQError(
            "no tickerq app in this request's lifespan state: create the web app with "
            "lifespan=tickerq_lifespan(tq) (tickerq.contrib.starlette)"
        )
    return tickerq  # type: ignore[no-any-return]

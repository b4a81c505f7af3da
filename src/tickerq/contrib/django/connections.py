"""Django database connections around each job run by the worker.

Django keeps a connection per thread and relies on something to close it (the
request signals call ``close_old_connections()``); a worker has no requests, so
without this a job would find the connection its thread left behind, dead
after a database restart or held past ``CONN_MAX_AGE``.

- **Sync jobs** run in the engine's threads: ``close_old_connections()`` runs in
  the job's own thread before and after the job (a connection can only be
  closed in the thread that opened it), so ``CONN_MAX_AGE`` applies as it does to
  requests. The ``@job`` decorator wraps sync functions for this; the wrapper does
  it only in a run of the worker (:class:`CloseConnections` marks one), so calling
  the function directly, in a test say, leaves the connection alone.
- **Async jobs** use the ORM through ``sync_to_async`` (``await Model.objects.aget()``).
  Like a request of Django's ASGI handler, each run gets its own thread for
  that (``asgiref.sync.ThreadSensitiveContext``), and every connection of that
  thread is closed when the run ends, as the thread ends with it.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.db import close_old_connections, connections

from tickerq.middleware import ExecuteNext, Middleware

if TYPE_CHECKING:
    from tickerq.context import TickerContext

__all__ = ["CloseConnections", "closing_connections"]

F = TypeVar("F", bound=Callable[..., Any])

_WORKER_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tickerq_django_worker_run", default=False
)
"""True in a run of the worker (the engine copies it into a sync job's thread)."""


def closing_connections(func: F) -> F:
    """``func`` (a sync job) calling ``close_old_connections()`` in its thread before
    and after each run of the worker; a direct call is just ``func``."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not _WORKER_RUN.get():
            return func(*args, **kwargs)
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run  # type: ignore[return-value]


def _close_all() -> None:
    connections.close_all()


def _used_a_thread(context: ThreadSensitiveContext) -> bool:
    """Whether the run made a thread-sensitive call (an ORM call) in ``context``: only
    then has its thread a connection to close."""
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    return executors is None or context in executors


class CloseConnections(Middleware):
    """Middleware: Django's connections are closed after each job (see the module's notes).

    The Django app puts it outermost, so the middleware of ``TICKERQ["MIDDLEWARE"]``
    runs inside it and may use the ORM too.
    """

    async def on_execute(self, ctx: TickerContext[Any], call_next: ExecuteNext) -> Any:
        """Around one attempt: a thread of its own for an async job's ORM calls,
        closed connections for a sync one."""
        if ctx.app.get_function(ctx.function).is_async:
            async with ThreadSensitiveContext() as context:
                try:
                    return await call_next(ctx)
                finally:
                    if _used_a_thread(context):
                        await sync_to_async(_close_all)()
        token = _WORKER_RUN.set(True)
        try:
            return await call_next(ctx)
        finally:
            _WORKER_RUN.reset(token)

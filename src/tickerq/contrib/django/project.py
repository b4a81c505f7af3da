"""``@job`` functions, the discovery of each app's jobs module, and the one app per process.

``@job(...)`` registers a function in a project-wide router at import time,
without the app; :func:`get_app` builds the app from the settings when it is
first needed, and includes every function registered by then (or later).
Building it late means the store follows ``DATABASES`` as it is then: in
Django's test runner, the test database.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import selectors
import threading
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from tickerq.context import Req
from tickerq.errors import RegistrationError, TickerQError
from tickerq.functions import (
    FunctionOptions,
    JobCallable,
    TickerFunction,
    TickerRouter,
    collect_registration_errors,
)

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.sync import SyncFunction, SyncTickerQ

__all__ = [
    "DjangoJob",
    "JobRegistry",
    "autodiscover",
    "close_at_exit",
    "get_app",
    "get_sync_app",
    "job",
    "registration_problems",
    "registry",
    "reset_app",
]

logger = logging.getLogger(__name__)


class DjangoJob(TickerFunction[Req]):
    """What ``@job`` returns: a :class:`~tickerq.TickerFunction` of the project's app.

    Its app is built on first use (:func:`get_app`); ``fn.sync.enqueue(...)`` opens
    the store first when nothing has (a web process). A sync function is wrapped to
    close Django's connections in its thread around each run of the worker (see
    :mod:`tickerq.contrib.django.connections`); ``fn(...)`` still calls it plainly.
    """

    __slots__ = ()

    def __init__(self, name: str, func: JobCallable, options: FunctionOptions) -> None:
        super().__init__(name, func, options)
        if not self.is_async:
            from tickerq.contrib.django.connections import closing_connections

            self.func = closing_connections(func)

    @property
    def app(self) -> TickerQ:
        """The project's app (built from the settings on first use)."""
        if self._app is None:
            get_app()
        return super().app

    @property
    def sync(self) -> SyncFunction[Req]:
        """Blocking ``enqueue`` and ``schedule`` (the store opened on first use)."""
        _open(self.app)
        return super().sync


class JobRegistry(TickerRouter):
    """The project's functions: every ``@job`` registers here. Functions registered
    after the app was built join it at once."""

    _handle_type = DjangoJob

    def _register(self, handle: TickerFunction[Any]) -> None:
        super()._register(handle)
        app = _state.app
        if app is not None and self._functions.get(handle.name) is handle:
            app._register(handle)


registry = JobRegistry()
"""Every function registered with :func:`job`."""

job = registry.function
"""Register a job function of the project: ``@job``, ``@job()`` or ``@job("name",
cron=..., retries=..., ...)``, with the options of ``@app.function(...)``."""


class _State:
    """The process's app and what autodiscovery found, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.app: TickerQ | None = None
        self.pid = 0
        self.problems: list[RegistrationError] = []
        self.close_registered = False
        self.orphans: list[TickerQ] = []
        """Apps of a parent process (see :func:`_after_fork_in_child`), never used here."""


_state = _State()


def _after_fork_in_child() -> None:
    """A forked child (a pre-forking server's worker) builds its own app on first use.

    The parent's app, if it was opened, is on an event loop whose thread the child
    does not have, with the parent's connections, and that loop's epoll instance is
    shared with the parent: the child must not touch any of it. The app is kept
    (so nothing finalizes its connections now) and its loop gets a selector of the
    child's own, so whatever the child's garbage collection does to those
    connections never unregisters them from the parent's epoll.
    """
    _state.lock = threading.RLock()  # another thread may have held it at the fork
    app = _forget()
    if app is None:
        return
    _state.orphans.append(app)
    loop = app.loop
    selector = getattr(loop, "_selector", None)
    if loop is not None and isinstance(selector, selectors.BaseSelector):
        loop._selector = selectors.DefaultSelector()  # type: ignore[attr-defined]
        selector.close()  # the child's copy of the epoll descriptor only


os.register_at_fork(after_in_child=_after_fork_in_child)


def autodiscover(module_name: str = "jobs") -> list[RegistrationError]:
    """Import ``<app>.<module_name>`` of every installed app that has one (the Django
    app's ``ready()`` does this); registration problems are collected, all of them,
    and returned (:func:`get_app` then refuses to build the app)."""
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    with collect_registration_errors() as problems:
        for config in apps.get_app_configs():
            if not module_has_submodule(config.module, module_name):
                continue
            try:
                import_module(f"{config.name}.{module_name}")
            except RegistrationError as exc:  # raised outside a decorator
                problems.append(exc)
    with _state.lock:
        _state.problems.extend(problems)
    return list(problems)


def registration_problems() -> list[RegistrationError]:
    """The problems autodiscovery found in the jobs modules."""
    with _state.lock:
        return list(_state.problems)


def get_app() -> TickerQ:
    """The project's app, built from the ``TICKERQ`` setting on first use (one per process).

    Raises ImproperlyConfigured when Django is not set up, the settings are wrong, or
    a jobs module has registration problems (all of them listed).
    """
    app = _state.app
    if app is not None and _state.pid == os.getpid():
        return app
    with _state.lock:
        if _state.app is None or _state.pid != os.getpid():
            # A forked child (a pre-forking server) cannot use its parent's event
            # loop thread or connections: it builds its own app.
            _state.app = _build()
            _state.pid = os.getpid()
            _state.close_registered = False
        return _state.app


def get_sync_app() -> SyncTickerQ:
    """``get_app().sync``, with the store opened on first use: blocking calls for views,
    management commands and shells (not for async code, which awaits the app's
    methods)."""
    app = get_app()
    _open(app)
    return app.sync


def reset_app() -> None:
    """Stop and forget the process's app, so the next :func:`get_app` builds a new one
    from the settings (in tests: a fresh ``memory://`` store, or settings changed
    with ``override_settings``). Not while a worker runs it."""
    with _state.lock:
        app = _forget()
    if app is not None and app.loop is not None:
        app.sync.stop()


def _forget() -> TickerQ | None:
    """Drop the process's app (returned), and its functions' link to it: the next
    :func:`get_app` builds another, which the functions then belong to."""
    app, _state.app = _state.app, None
    _state.close_registered = False
    for handle in registry.functions.values():
        handle._app = None
    return app


def _build() -> TickerQ:
    from django.apps import apps

    from tickerq.app import TickerQ
    from tickerq.contrib.django.conf import load_config
    from tickerq.contrib.django.connections import CloseConnections

    if not apps.ready:
        raise ImproperlyConfigured(
            "tickerq's Django app is used before Django is set up: call django.setup() "
            "first (manage.py and the WSGI/ASGI handlers do)"
        )
    if not apps.is_installed("tickerq.contrib.django"):
        raise ImproperlyConfigured(
            "add 'tickerq.contrib.django' to INSTALLED_APPS (it finds the jobs modules)"
        )
    problems = registration_problems()
    if problems:
        listed = "; ".join(str(p) for p in problems)
        raise ImproperlyConfigured(f"{len(problems)} problem(s) in the jobs modules: {listed}")
    config = load_config()
    try:
        app = TickerQ(
            config.store,
            middleware=[CloseConnections(), *config.middleware],
            options=config.engine_options,
            **config.options,
        )
    except TickerQError as exc:
        raise ImproperlyConfigured(f"TICKERQ: {exc}") from None
    except TypeError as exc:  # a value of the wrong kind in OPTIONS
        raise ImproperlyConfigured(f"TICKERQ['OPTIONS']: {exc}") from None
    try:
        app.include_router(registry)
    except RegistrationError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    return app


def _open(app: TickerQ) -> None:
    """Open the store on the sync facade's loop unless the app is open already (the
    worker opens it on its own loop); close it when the process exits."""
    if app.loop is not None:
        return
    with _state.lock:
        if app.loop is not None:
            return
        app.sync.open()
    close_at_exit(app)


def close_at_exit(app: TickerQ) -> None:
    """Have the app stopped (its store closed) when the process exits, once; for an
    app opened on the sync facade's loop."""
    with _state.lock:
        if not _state.close_registered:
            _state.close_registered = True
            atexit.register(_close_at_exit, app, os.getpid())


def _close_at_exit(app: TickerQ, pid: int) -> None:
    # A forked child inherits the handler, not the thread whose loop the app is on.
    if os.getpid() != pid or app.engine.running:
        return
    with contextlib.suppress(TickerQError, RuntimeError, asyncio.TimeoutError):
        app.sync.stop()

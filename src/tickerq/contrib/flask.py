"""Flask: open the tickerq app for the views (``pip install 'tickerq[flask]'``).

Flask views are sync, so they use the blocking facade (:mod:`tickerq.sync`),
which drives the async app on an event loop in a background thread::

    from flask import Flask
    from tickerq.contrib.flask import TickerQFlask

    from myproject.jobs import send_email, tq

    tickerq = TickerQFlask(tickerq=tq)        # engine=True also runs the jobs here

    def create_app() -> Flask:
        app = Flask(__name__)
        tickerq.init_app(app)
        return app

    @bp.post("/signup")
    def signup():
        ticker = send_email.sync.enqueue(Email(to=request.form["email"]))
        return {"job": str(ticker.id)}, 202

The app is opened on the first request of the process (or by :meth:`TickerQFlask.open`),
never at import: a server that forks workers after importing the app
(gunicorn ``--preload``) gives each worker its own connections and loop. It is
closed when the process exits (``atexit``; or call :meth:`TickerQFlask.close`).

By default this process only enqueues and reads (producer only) and a worker
runs the jobs: ``tickerq run myproject.jobs:tq``. ``engine=True`` (or the config
key ``TICKERQ_ENGINE``) runs the engine in the background thread too, as one
more node: fine for a small deployment, but each web worker process then runs
jobs, and a server that kills its workers without ``sys.exit`` (a plain SIGTERM
to ``flask run``) gives running jobs no grace period (their runs are taken over
once their lease runs out).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

try:
    from flask import Flask, current_app
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"tickerq.contrib.flask needs Flask ({exc}): pip install 'tickerq[flask]'"
    ) from exc

from tickerq.errors import InvalidArgumentError, TickerQError

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.sync import SyncTickerQ

__all__ = ["CONFIG_ENGINE", "EXTENSION_KEY", "TickerQFlask", "get_tickerq"]

EXTENSION_KEY = "tickerq"
"""The extension's key in ``app.extensions``."""

CONFIG_ENGINE = "TICKERQ_ENGINE"
"""Config key: True runs the engine in the web process (when ``engine`` is not given)."""


class TickerQFlask:
    """A Flask extension that opens a :class:`~tickerq.TickerQ` for the views.

    ``TickerQFlask(app, tickerq=tq)``, or ``TickerQFlask(tickerq=tq)`` then
    :meth:`init_app` (application factories; several Flask apps may share it).
    ``engine``: run the jobs in this process too (default: the Flask config's
    ``TICKERQ_ENGINE``, else False: producer only). ``grace``: seconds running
    jobs get to finish when the process exits (default: the app's grace period).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        tickerq: TickerQ,
        engine: bool | None = None,
        grace: float | None = None,
    ) -> None:
        from tickerq.app import TickerQ

        if not isinstance(tickerq, TickerQ):
            raise InvalidArgumentError(
                f"TickerQFlask(tickerq=...) needs a TickerQ app, got {type(tickerq).__name__}"
            )
        if engine is not None and not isinstance(engine, bool):
            raise InvalidArgumentError(f"engine must be True or False, got {engine!r}")
        self.tickerq = tickerq
        """The tickerq app the views use."""
        self.runs_engine = engine
        """Whether the web process runs the engine too (None until :meth:`init_app`
        reads the config: then False unless ``TICKERQ_ENGINE`` is True)."""
        self.grace = grace
        self._lock = threading.Lock()
        self._opened_in: int | None = None
        """The process that opened the app (None: not opened by this extension)."""
        self._borrowed = False
        """The app was open already: used as it is, not closed here."""
        self._atexit = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: it opens tickerq before the first request."""
        if self.runs_engine is None:
            wanted = app.config.get(CONFIG_ENGINE, False)
            if not isinstance(wanted, bool):
                raise InvalidArgumentError(
                    f"app.config[{CONFIG_ENGINE!r}] must be True or False, got {wanted!r}"
                )
            self.runs_engine = wanted
        app.extensions[EXTENSION_KEY] = self
        app.before_request(self._before_request)

    def _before_request(self) -> None:
        if self._opened_in != os.getpid():
            self.open()

    @property
    def opened(self) -> bool:
        """True while this process has the app open through the extension."""
        return self._opened_in == os.getpid()

    def open(self) -> None:
        """Open the app in this process (and start its engine if ``engine``); idempotent.

        Raises :class:`TickerQError` in a process forked after the app was opened
        (its connections and event loop belong to the parent).
        """
        with self._lock:
            pid = os.getpid()
            if self._opened_in == pid:
                return
            if self._opened_in is not None:
                raise TickerQError(
                    f"tickerq was opened in process {self._opened_in} before this process "
                    f"({pid}) was forked from it; open it in each worker process, not at "
                    "import (e.g. with gunicorn --preload, do not call TickerQFlask.open() "
                    "before the fork: the first request opens it)"
                )
            tq = self.tickerq
            self._borrowed = tq.loop is not None
            if not self._borrowed:
                try:
                    if self.runs_engine:
                        tq.sync.start()
                    else:
                        tq.sync.call(tq.open())
                except BaseException:
                    # e.g. the database is down: leave nothing half open, so the
                    # next request tries again from the start
                    with contextlib.suppress(Exception):
                        tq.sync.stop()
                    raise
            self._opened_in = pid
            if not self._atexit:
                _at_exit(self.close)
                self._atexit = True

    def close(self) -> None:
        """Stop the engine (running jobs get ``grace`` seconds) and close the app.

        Does nothing in a process that did not open it, and leaves an app that was
        open before :meth:`open` to whoever opened it.
        """
        with self._lock:
            if self._opened_in != os.getpid():
                return
            self._opened_in = None
            borrowed, self._borrowed = self._borrowed, False
        if not borrowed:
            self.tickerq.sync.stop(self.grace)

    @property
    def sync(self) -> SyncTickerQ:
        """The app's blocking facade, opened first: ``tickerq.sync.enqueue(fn, request)``."""
        self.open()
        return self.tickerq.sync


def _at_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` when the interpreter exits, while thread pools still take work.

    A plain ``atexit`` handler runs after concurrent.futures has shut its pools
    for new work (the SQLite store writes through one): stopping the app there
    could not write its last results. ``threading._register_atexit`` (what
    concurrent.futures itself uses) runs before that, in reverse order of
    registration; plain ``atexit`` is the fallback where it is missing.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(callback)
        except RuntimeError:  # the interpreter is shutting down already
            return
        return
    atexit.register(callback)


def get_tickerq() -> TickerQ:
    """The tickerq app of the current Flask app's extension, opened.

    For blueprints that do not import the app: ``get_tickerq().sync.time_tickers.get(id)``.
    Raises :class:`TickerQError` outside an app context or when the app has no
    :class:`TickerQFlask`.
    """
    try:
        extension = current_app.extensions.get(EXTENSION_KEY)
    except RuntimeError as exc:  # working outside of application context
        raise TickerQError(
            "get_tickerq() needs a Flask application context (call it in a view, "
            "or inside `with app.app_context():`)"
        ) from exc
    if not isinstance(extension, TickerQFlask):
        raise TickerQError(
            f"the Flask app {current_app.name!r} has no tickerq extension: "
            "call TickerQFlask(tickerq=tq).init_app(app)"
        )
    extension.open()
    return extension.tickerq

"""``manage.py tickerq run|check|db``: the worker, a check of the set-up, the schema.

- ``run [OPTIONS]``: the worker, after Django's system checks: ``tickerq run`` with
  the project's app, taking the same options (``manage.py tickerq run --help``).
- ``check``: the settings, the jobs modules, and the store: reachable and with the
  schema this tickerq needs; exit status 1 with every problem listed otherwise.
- ``db [upgrade|current]``: ``tickerq db upgrade`` (the default) or ``tickerq db
  current`` on the project's store.

Django's own options (``--settings``, ``-v``, ``--traceback``) go before the action:
``manage.py tickerq --settings=proj.prod run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

WORKER = "tickerq.contrib.django.worker:app"
"""The ``tickerq run`` target of the project's app."""

_DJANGO_OPTIONS = ("--settings", "--pythonpath")
"""Django reads these anywhere on the command line; the tickerq command must not see them."""


class Command(BaseCommand):
    """The ``tickerq`` management command."""

    help = (
        "tickerq for this project: `run` the worker (the options of `tickerq run`), "
        "`check` the settings, jobs and store, `db [upgrade|current]` the schema."
    )
    requires_system_checks: ClassVar[list[str]] = []  # `run` runs them; `check` reports its own

    def add_arguments(self, parser: CommandParser) -> None:
        """The action, then what it takes."""
        parser.add_argument("action", choices=("run", "check", "db"), help="What to do.")
        parser.add_argument(
            "rest",
            nargs=argparse.REMAINDER,
            metavar="...",
            help="run: the options of `tickerq run` (see `manage.py tickerq run --help`); "
            "db: upgrade (default) or current.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the action."""
        rest = _without_django_options(list(options["rest"]))
        verbose = ["-v"] if options["verbosity"] >= 2 else []
        action = options["action"]
        if action == "run":
            self._run(verbose, rest)
        elif action == "check":
            if rest:
                raise CommandError(f"check takes no arguments, got {' '.join(rest)!r}")
            self._check()
        else:
            self._db(verbose, rest)

    def _run(self, verbose: list[str], rest: list[str]) -> None:
        from tickerq.contrib.django.conf import load_config

        if {"-h", "--help"} & set(rest):
            self.stdout.write(
                "manage.py tickerq run [OPTIONS]: `tickerq run` with this project's app "
                f"({WORKER}) as MODULE:APP, and these options:\n"
            )
        else:
            self.check()  # Django's system checks, tickerq's among them
            config = load_config()
            if config.store.startswith("memory:"):
                self.stderr.write(
                    "warning: the store is memory://: only jobs enqueued in this process "
                    "run here (set TICKERQ['STORE'] or use an SQLite file or PostgreSQL)"
                )
            rest = self._settings_store_wins(config.store, rest)
        _exit_with(_tickerq([*verbose, "run", WORKER, *rest]))

    def _settings_store_wins(self, store: str, rest: list[str]) -> list[str]:
        """``rest``, with ``--store`` set to the settings' store when $TICKERQ_STORE would
        otherwise give the worker another store than the web processes use."""
        from tickerq.urls import mask_url

        given = os.environ.get("TICKERQ_STORE")
        if not given or any(a == "--store" or a.startswith("--store=") for a in rest):
            return rest
        if given != store:
            self.stderr.write(
                f"warning: TICKERQ_STORE ({mask_url(given)}) is ignored: the settings give "
                f"the store ({mask_url(store)}) of every process of the project; "
                "pass --store to run this worker on another"
            )
        return [*rest, "--store", store]

    def _check(self) -> None:
        from tickerq.contrib.django.checks import store_state
        from tickerq.contrib.django.conf import load_config
        from tickerq.contrib.django.project import get_app, registration_problems

        errors = [f"function {p.function!r}: {p.problem}" for p in registration_problems()]
        try:
            config = load_config()
        except ImproperlyConfigured as exc:
            errors.append(f"settings: {exc}")
            config = None
        if config is not None and not errors:
            try:
                app = get_app()
            except ImproperlyConfigured as exc:
                errors.append(f"settings: {exc}")
            else:
                names = ", ".join(sorted(app.functions)) or "(none)"
                self.stdout.write(f"ok: {len(app.functions)} function(s): {names}")
        if config is not None:
            state = store_state(config.store)
            if state.ok:
                self.stdout.write(f"ok: {state.message} (from {config.store_source})")
            else:
                errors.append(state.message)
        for error in errors:
            self.stderr.write(f"error: {error}")
        if errors:
            raise CommandError(f"{len(errors)} problem(s) found", returncode=1)

    def _db(self, verbose: list[str], rest: list[str]) -> None:
        from tickerq.contrib.django.conf import load_config

        if len(rest) > 1 or (rest and rest[0] not in ("upgrade", "current")):
            raise CommandError(f"db takes upgrade or current, got {' '.join(rest)!r}")
        action = rest[0] if rest else "upgrade"
        try:
            store = load_config().store
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if store.startswith("memory:"):
            self.stdout.write("the store is memory://: it keeps no schema, nothing to do")
            return
        _exit_with(_tickerq([*verbose, "db", action, "--store", store]))


def _tickerq(args: list[str]) -> int:
    """Run the ``tickerq`` command with ``args`` in this process; its exit status."""
    from tickerq._cli_support import run_command
    from tickerq.cli import cli

    return run_command(cli, args)


def _exit_with(status: int) -> None:
    """End with ``status`` unless it is 0 (the command reported the error itself)."""
    if status:
        sys.stdout.flush()
        sys.exit(status)


def _without_django_options(args: list[str]) -> list[str]:
    """``args`` less ``--settings X`` and ``--pythonpath X`` (Django has used them)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept

"""The ``tickerq`` command line."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from tickerq.errors import RegistrationError

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["main"]


def load_app(target: str) -> TickerQ:
    """Import ``module:attribute`` (``module`` alone looks for ``app``) and return the app."""
    from tickerq.app import TickerQ

    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import module {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if app is None:
        raise click.BadParameter(f"module {module_name!r} has no attribute {attribute!r}")
    if not isinstance(app, TickerQ):
        raise click.BadParameter(f"{target} is a {type(app).__name__}, not a TickerQ app")
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tickerq")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """tickerq: background jobs, scheduled jobs and cron jobs for Python.

    \b
    Examples:
      tickerq demo                    run a small demo app and watch it work
      tickerq run myproject.jobs:app  run the engine of your app
      tickerq check myproject.jobs    check every registered function
      tickerq cron next "0 9 * * mon-fri" --tz Europe/Berlin -n 5
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("target", metavar="MODULE[:APP]")
def run(target: str) -> None:
    """Run the engine of the app at MODULE:APP until Ctrl+C (SIGINT) or SIGTERM.

    On stop, running jobs get the app's grace period to finish; work that has
    not started stays waiting for the next start.
    """
    app = load_app(target)
    click.echo(f"tickerq: running {target} as node {app.node_id} (Ctrl+C to stop)")
    app.run()


@main.command()
@click.argument("target", metavar="MODULE[:APP]")
def check(target: str) -> None:
    """Check every function registered in MODULE:APP; exit 1 on any problem.

    Reports all problems at once (duplicate names, bad signatures, invalid
    cron expressions, negative limits, request types that are not JSON), each
    with its function's name. Meant for CI.
    """
    from tickerq.functions import collect_registration_errors

    with collect_registration_errors() as problems:
        try:
            app = load_app(target)
        except RegistrationError as exc:  # raised outside a decorator
            problems.append(exc)
            app = None
    for problem in problems:
        click.secho(f"error: function {problem.function!r}: {problem.problem}", fg="red", err=True)
    if problems:
        click.secho(f"{len(problems)} problem(s) found", fg="red", bold=True, err=True)
        sys.exit(1)
    assert app is not None
    names = ", ".join(sorted(app.functions)) or "(none)"
    click.secho(f"ok: {len(app.functions)} function(s): {names}", fg="green")


@main.group()
def cron() -> None:
    """Work with cron expressions."""


@cron.command("next")
@click.argument("expression")
@click.option("--tz", "timezone", default="UTC", show_default=True, help="IANA timezone.")
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--after", help="Start from this ISO time (default: now).")
def cron_next(expression: str, timezone: str, count: int, after: str | None) -> None:
    """Print the next fire times of EXPRESSION (5 fields, or 6 with seconds first)."""
    from tickerq.cron import CronExpression, parse_timezone

    try:
        expr = CronExpression.parse(expression, timezone)
        zone = parse_timezone(timezone)
        start = _parse_after(after, zone)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{expr.expression}  ({expr.describe()}, {zone.key})")
    fire = start
    for _ in range(count):
        fire = expr.next_after(fire)
        local = fire.astimezone(zone)
        click.echo(f"  {local.isoformat()}  {local.strftime('%a')}  = {fire.isoformat()}")


def _parse_after(after: str | None, zone: object) -> datetime:
    if after is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(after)
    except ValueError:
        raise ValueError(f"--after {after!r} is not an ISO date-time") from None
    if parsed.tzinfo is None:
        from datetime import tzinfo

        assert isinstance(zone, tzinfo)
        parsed = parsed.replace(tzinfo=zone)
    return parsed


@main.command()
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: Ctrl+C)."
)
@click.option(
    "--store",
    default="sqlite:///tickerq-demo.db",
    show_default=True,
    help="Where the demo keeps its tickers (memory:// keeps nothing).",
)
def demo(duration: float | None, store: str) -> None:
    """Run a small demo app and show its jobs live in the terminal.

    Its data stays in the store: stop it and start it again, and the history
    is still there and work that fell due meanwhile runs.
    """
    from tickerq.demo import run_demo

    asyncio.run(run_demo(duration, store))


if __name__ == "__main__":
    main()

"""The ``tickerq`` command line.

Errors are one line, ``Error: <what>`` on stderr, with exit status 2 for usage
and bad input and 1 for runtime failures (see :mod:`tickerq._cli_support`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from tickerq._cli_support import (
    EXIT_FAILURE,
    configure_logging,
    database_errors,
    run_command,
    say,
    set_verbose,
    stop_signals,
)
from tickerq.errors import RegistrationError, TickerQError
from tickerq.logs import LOG_FORMATS, LOG_LEVELS
from tickerq.urls import mask_secrets

if TYPE_CHECKING:
    from click.decorators import FC

    from tickerq.app import TickerQ
    from tickerq.monitor import MonitorServer
    from tickerq.stores.sql.dialects import Dialect

__all__ = ["cli", "load_app", "main"]

_T = TypeVar("_T")


def load_app(target: str) -> TickerQ:
    """Import ``module:attribute`` (``module`` alone looks for ``app``) and return the app.

    A module that cannot be imported (missing, syntax error, error while
    importing) or an attribute that is not a TickerQ app raises click.UsageError
    naming it; a RegistrationError raised while importing is passed on.
    """
    from tickerq.app import TickerQ

    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if not module_name or not attribute.isidentifier():
        raise click.UsageError(f"{target!r} is not MODULE or MODULE:ATTRIBUTE (e.g. jobs:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except RegistrationError:
        raise
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else f"line {exc.lineno}"
        raise click.UsageError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc.msg} ({where})"
        ) from exc
    except Exception as exc:
        raise click.UsageError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    app = getattr(module, attribute, None)
    if app is None:
        raise click.UsageError(f"module {module_name!r} has no attribute {attribute!r}")
    if not isinstance(app, TickerQ):
        raise click.UsageError(
            f"{module_name}:{attribute} is not a TickerQ app (it is of type {type(app).__name__})"
        )
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tickerq")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level; errors with traceback.")
def cli(verbose: bool) -> None:
    """tickerq: background jobs, scheduled jobs and cron jobs for Python.

    \b
    Examples:
      tickerq demo                    run a small demo app and watch it work
      tickerq run myproject.jobs:app  run the engine of your app
      tickerq check myproject.jobs    check every registered function
      tickerq cron next "0 9 * * mon-fri" --tz Europe/Berlin -n 5

    \b
    Exit status:
      0  success; also a graceful stop on Ctrl+C (SIGINT) or SIGTERM
         (a second signal stops at once, with 128 + the signal number)
      1  runtime failure: database unreachable or unreadable, port taken,
         problems found by check or db current
      2  usage or bad input: unknown command or option, bad value, bad cron
         expression, module that cannot be imported
    Errors are one line on stderr, "Error: ..."; -v adds the traceback.
    """
    set_verbose(verbose)
    configure_logging(logging.DEBUG if verbose else logging.INFO)


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Run the ``tickerq`` command (``args`` default to sys.argv) and exit with its status."""
    sys.exit(run_command(cli, args))


_STORE_OPTION_EARLY = click.option(
    "--store",
    "store_url",
    envvar="TICKERQ_STORE",
    metavar="URL",
    help="sqlite:///path or postgresql://user@host/db (default: $TICKERQ_STORE).",
)


_HOST_OPTION = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address the dashboard listens on."
)
_PORT_OPTION = click.option(
    "--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Its port."
)
_LOG_FORMAT_OPTION = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    envvar="TICKERQ_LOG_FORMAT",
    help="text: a line per record with its fields; json: one JSON object per line, "
    "the command's own messages too ($TICKERQ_LOG_FORMAT).",
)


def _log_level_option(default: str) -> Callable[[FC], FC]:
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=None,
        envvar="TICKERQ_LOG_LEVEL",
        help=f"Drop records below this level [default: {default}; DEBUG with -v] "
        "($TICKERQ_LOG_LEVEL).",
    )


def _set_up_logs(log_format: str, log_level: str | None, default: str) -> None:
    """Configure logging as ``--log-format`` and ``--log-level`` ask (or ``-v``)."""
    verbose = click.get_current_context().find_root().params.get("verbose", False)
    name = (log_level or ("DEBUG" if verbose else default)).upper()
    configure_logging(logging.getLevelNamesMapping()[name], log_format.lower())


@cli.command()
@click.argument("target", metavar="MODULE[:APP]", envvar="TICKERQ_APP")
@click.option(
    "--store",
    "store_url",
    envvar="TICKERQ_STORE",
    metavar="URL",
    help="Use this store instead of the app's own: sqlite:///path or "
    "postgresql://user@host/db ($TICKERQ_STORE).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    envvar="TICKERQ_CONCURRENCY",
    help="Jobs run at once on this node, instead of the app's max_concurrency "
    "($TICKERQ_CONCURRENCY).",
)
@click.option(
    "--node-id",
    envvar="TICKERQ_NODE_ID",
    help="This node's name, instead of the app's (default: host-pid) ($TICKERQ_NODE_ID).",
)
@click.option("--dashboard", "with_dashboard", is_flag=True, help="Serve the web dashboard too.")
@_HOST_OPTION
@_PORT_OPTION
@_LOG_FORMAT_OPTION
@_log_level_option("INFO")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address that port listens on."
)
def run(
    *,
    target: str,
    store_url: str | None,
    concurrency: int | None,
    node_id: str | None,
    with_dashboard: bool,
    host: str,
    port: int,
    log_format: str,
    log_level: str | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the engine of the app at MODULE:APP ($TICKERQ_APP) until Ctrl+C
    (SIGINT) or SIGTERM.

    --store, --concurrency and --node-id (or their TICKERQ_* variables) replace
    what the app's code sets, so one module runs anywhere: e.g. TICKERQ_STORE
    set by the deployment, --concurrency per machine.

    On stop, running jobs get the app's grace period to finish; work that has
    not started stays waiting for the next start; exit status 0. With
    --dashboard the web dashboard is served alongside (loopback only unless
    the app configures auth). With --metrics-port, Prometheus metrics and the
    health probes (/healthz, /readyz) are served on that port (needs
    tickerq[prometheus]).

    Logs go to stderr: at INFO a record when each job starts and ends, a
    WARNING for each retry and an ERROR with the traceback when a job fails
    for good (see docs/observability.md).
    """
    _set_up_logs(log_format, log_level, "INFO")
    if with_dashboard:
        from tickerq._extras import need

        need("dashboard", "tickerq run --dashboard")
    app = load_app(target)
    _configure(app, store_url=store_url, concurrency=concurrency, node_id=node_id)
    say(
        f"running {target} as node {app.node_id} (Ctrl+C to stop)",
        action="cli_run",
        target=target,
        node=app.node_id,
    )
    metrics = None if metrics_port is None else (metrics_host, metrics_port)
    asyncio.run(
        _serve(
            app, engine=True, dashboard=(host, port) if with_dashboard else None, metrics=metrics
        )
    )


def _configure(
    app: TickerQ, *, store_url: str | None, concurrency: int | None, node_id: str | None
) -> None:
    """Apply --store, --concurrency and --node-id to the loaded app; a bad value is
    a usage error naming its option."""
    for option, change in (
        ("--store", {"store": store_url}),
        ("--concurrency", {"max_concurrency": concurrency}),
        ("--node-id", {"node_id": node_id}),
    ):
        if next(iter(change.values())) is None:
            continue
        try:
            app.configure(**change)
        except TickerQError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None


@cli.command("dashboard")
@_STORE_OPTION_EARLY
@_HOST_OPTION
@_PORT_OPTION
@click.option("--title", default="tickerq", show_default=True, help="Shown in the page header.")
def dashboard_command(store_url: str | None, host: str, port: int, title: str) -> None:
    """Serve the web dashboard of a store, without running an engine.

    It reads the database, so it shows every node's work. With no auth
    configured it answers loopback clients only; to put it on a network,
    mount app.dashboard(auth=...) in your own ASGI app instead.
    """
    from tickerq.app import TickerQ

    if not store_url:
        raise click.UsageError("which store? give --store URL or set TICKERQ_STORE")
    from tickerq._extras import need, need_for_store

    need("dashboard", "tickerq dashboard")
    need_for_store(store_url)
    _require_sqlite_file(store_url)
    try:
        app = TickerQ(store_url, seed_crons=False)
    except TickerQError as exc:
        raise click.UsageError(str(exc)) from None
    asyncio.run(_serve(app, engine=False, dashboard=(host, port), title=title))


def _require_sqlite_file(store_url: str) -> None:
    """A dashboard of a SQLite file that does not exist would create it: refuse instead."""
    if not store_url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        path = make_url(store_url).database
    except ArgumentError:
        return  # TickerQ(...) names the bad URL
    if path and path != ":memory:" and not os.path.exists(path):
        raise click.ClickException(
            f"no SQLite database at {path!r}: the file does not exist "
            "(check the path; `tickerq db upgrade --store URL` creates one)"
        )


async def _serve(
    app: TickerQ,
    *,
    engine: bool,
    dashboard: tuple[str, int] | None,
    title: str = "tickerq",
    metrics: tuple[str, int] | None = None,
) -> None:
    """Run the engine and/or serve the dashboard until SIGINT or SIGTERM, then stop
    gracefully: the dashboard server first, then the engine (running jobs get
    the app's grace period), then the metrics port (it answers from before the
    engine starts to after it stopped)."""
    with stop_signals() as stop, database_errors(app.store_url):
        monitor = None if metrics is None else await _start_monitor(app, *metrics)
        try:
            await (app.start() if engine else app.open())
            if dashboard is None:
                await stop.wait()
                return
            from tickerq.dashboard.server import start_server  # a worker alone never loads it

            host, port = dashboard
            try:
                server = await start_server(app.dashboard(title=title), host, port)
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve the dashboard on {host}:{port}: {exc}"
                ) from None
            say(f"dashboard on {server.url} (Ctrl+C to stop)", action="dashboard", url=server.url)
            try:
                await stop.wait()
            finally:
                await server.stop()
        finally:
            try:
                await app.stop()
            finally:
                if monitor is not None:
                    await monitor.stop()


async def _start_monitor(app: TickerQ, host: str, port: int) -> MonitorServer:
    """Serve /metrics, /healthz and /readyz for ``tickerq run --metrics-port``."""
    from tickerq.monitor import start_monitor

    try:
        monitor = await start_monitor(app, host, port)
    except ImportError as exc:
        raise click.UsageError(
            f"--metrics-port needs prometheus_client ({exc}): pip install 'tickerq[prometheus]'"
        ) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    say(
        f"metrics and probes on {monitor.url}/metrics, /healthz, /readyz",
        action="metrics",
        url=monitor.url,
    )
    return monitor


@cli.command()
@click.argument("target", metavar="MODULE[:APP]")
def check(target: str) -> None:
    """Check every function registered in MODULE:APP; exit 1 on any problem.

    Reports all problems at once (duplicate names, bad signatures, invalid
    cron expressions, negative limits, request types that are not JSON), each
    with its function's name. Meant for CI. A module that cannot be imported
    exits 2.
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
        sys.exit(EXIT_FAILURE)
    assert app is not None
    names = ", ".join(sorted(app.functions)) or "(none)"
    click.secho(f"ok: {len(app.functions)} function(s): {names}", fg="green")


@cli.group()
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
        try:
            following = expr.next_after(fire)
            local = following.astimezone(zone)
        except (ValueError, OverflowError):  # dates end with year 9999
            raise click.UsageError(
                f"cron expression {expr.expression!r} has no fire time after "
                f"{fire.astimezone(UTC).isoformat()} within year 9999 ({zone.key})"
            ) from None
        fire = following
        click.echo(f"  {local.isoformat()}  {local.strftime('%a')}  = {fire.isoformat()}")


def _parse_after(after: str | None, zone: tzinfo) -> datetime:
    """``--after`` as an aware UTC time (naive times are in ``zone``); ValueError if bad."""
    if after is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(after)
    except ValueError:
        raise ValueError(f"--after {after!r} is not an ISO date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"--after {after!r} is outside the years 1 to 9999 in UTC") from None


@cli.command()
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: Ctrl+C)."
)
@click.option(
    "--store",
    default="sqlite:///tickerq-demo.db",
    show_default=True,
    help="Where the demo keeps its tickers (memory:// keeps nothing).",
)
@click.option("--no-dashboard", is_flag=True, help="Do not serve the web dashboard.")
@_HOST_OPTION
@_PORT_OPTION
@_LOG_FORMAT_OPTION
@_log_level_option("WARNING")
def demo(
    *,
    duration: float | None,
    store: str,
    no_dashboard: bool,
    host: str,
    port: int,
    log_format: str,
    log_level: str | None,
) -> None:
    """Run a small demo app and show its jobs live in the terminal.

    Its data stays in the store: stop it and start it again, and the history
    is still there and work that fell due meanwhile runs. The web dashboard
    is served on http://127.0.0.1:8787/ meanwhile. Ctrl+C (SIGINT) or SIGTERM
    stops it gracefully (dashboard, then engine; exit status 0). Logs go to
    stderr, from WARNING on by default: the table shows the jobs.
    """
    from tickerq._extras import need

    need("demo", "tickerq demo")
    from tickerq.demo import build_demo_app, run_demo
    from tickerq.stores import mask_password

    _set_up_logs(log_format, log_level, "WARNING")
    app = build_demo_app(store)

    async def main() -> None:
        with stop_signals() as stop, database_errors(mask_password(store)):
            await run_demo(
                duration, app, dashboard=not no_dashboard, host=host, port=port, stop=stop
            )

    asyncio.run(main())


# -- database schema -----------------------------------------------------------------

_STORE_OPTION = click.option(
    "--store",
    "store_url",
    envvar="TICKERQ_STORE",
    metavar="URL",
    help="sqlite:///path or postgresql://user@host/db (default: $TICKERQ_STORE).",
)


@cli.group()
@click.pass_context
def db(ctx: click.Context) -> None:
    """Inspect and upgrade the schema of a SQL store.

    \b
    Examples:
      tickerq db current --store postgresql://app@db.internal/app
      TICKERQ_STORE=sqlite:///jobs.db tickerq db upgrade
    """
    verbose = ctx.parent is not None and ctx.parent.params.get("verbose", False)
    if not verbose:  # Alembic explains its setup at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)


@db.command("upgrade")
@_STORE_OPTION
def db_upgrade(store_url: str | None) -> None:
    """Upgrade the schema at the store URL to what this tickerq needs.

    Creates the tables in an empty database. Safe to run from several hosts at
    once: one upgrades, the others find it done.
    """
    from tickerq.stores.sql import migrate

    dialect = _sql_dialect(store_url)

    async def work() -> tuple[str | None, str]:
        engine = dialect.create_engine(1)
        try:
            return await migrate.upgrade_from_to(engine, url=dialect.safe_url)
        finally:
            await engine.dispose()

    before, after = _run_db(dialect.safe_url, work)
    if before == after:
        click.echo(f"{dialect.safe_url}: already at {after} (up to date)")
    else:
        click.echo(f"{dialect.safe_url}: upgraded {before or 'none'} -> {after}")


@db.command("current")
@_STORE_OPTION
def db_current(store_url: str | None) -> None:
    """Print the schema revision of the store; exit 1 unless up to date."""
    from tickerq.stores.sql import migrate

    dialect = _sql_dialect(store_url)
    path = dialect.file
    if path is not None and not os.path.exists(path):
        click.echo(f"{dialect.safe_url}: none (the file does not exist)")
        sys.exit(1)

    async def work() -> migrate.SchemaStatus:
        engine = dialect.create_engine(1)
        try:
            return await migrate.status(engine)
        finally:
            await engine.dispose()

    state = _run_db(dialect.safe_url, work)
    revision = state.revision or "none"
    notes = {
        "current": "up to date",
        "fresh": (
            f"no tickerq tables; this tickerq needs {state.head}: "
            "`tickerq db upgrade` or opening the store creates them"
        ),
        "behind": f"behind: this tickerq needs {state.head}; run `tickerq db upgrade`",
        "unversioned": (
            f"tables from before versioned migrations, equal to {state.effective_revision}; "
            f"{'up to date' if state.up_to_date else f'this tickerq needs {state.head}'}; "
            "`tickerq db upgrade` or opening the store records the revision"
        ),
        "unknown": f"unknown to this tickerq, which needs {state.head}; upgrade tickerq",
    }
    click.echo(f"{dialect.safe_url}: {revision} ({notes[state.state]})")
    if not state.up_to_date:
        sys.exit(1)


def _sql_dialect(url: str | None) -> Dialect:
    from tickerq._extras import need_for_store
    from tickerq.errors import InvalidArgumentError

    if not url:
        raise click.UsageError("which database? give --store URL or set TICKERQ_STORE")
    if url.split("://", 1)[0] == "memory":
        raise click.UsageError("memory:// keeps no schema; give a sqlite:// or postgresql:// URL")
    need_for_store(url)
    from tickerq.stores.sql.dialects import for_url

    try:
        return for_url(url)
    except InvalidArgumentError as exc:
        raise click.UsageError(mask_secrets(str(exc), url)) from None


def _run_db(safe_url: str, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from tickerq.errors import TickerQError

    try:
        return asyncio.run(work())
    except TickerQError as exc:
        raise click.ClickException(str(exc)) from None
    except DBAPIError as exc:
        raise click.ClickException(f"cannot use {safe_url}: {exc.orig}") from None
    except (SQLAlchemyError, OSError) as exc:
        raise click.ClickException(f"cannot use {safe_url}: {type(exc).__name__}: {exc}") from None


if __name__ == "__main__":
    main()

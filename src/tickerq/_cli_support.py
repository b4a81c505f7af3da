"""How the ``tickerq`` command fails, stops and logs: one-line errors, exit statuses,
signals, log set-up.

Every error ends as one line ``Error: <what>`` on stderr (the traceback too
with ``-v``) and an exit status: 2 for usage and bad input, 1 for runtime
failures. SIGINT and SIGTERM both stop a running command gracefully; a second
one stops it at once. With ``--log-format json`` what the command says (and a
runtime error) is a JSON log record too, so every line it writes is JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence

import click

from tickerq.errors import (
    CronError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    RegistrationError,
    TickerQError,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "configure_logging",
    "database_errors",
    "run_command",
    "say",
    "set_verbose",
    "stop_signals",
]

EXIT_OK = 0
"""Success, or a graceful stop on SIGINT/SIGTERM."""
EXIT_FAILURE = 1
"""A runtime failure: database unreachable or unreadable, port taken, problems found."""
EXIT_USAGE = 2
"""Usage or bad input: unknown option, bad cron expression, module that cannot be imported."""

_BAD_INPUT = (
    CronError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    RegistrationError,
)
"""tickerq errors that mean the user's input is wrong (exit 2); the others exit 1."""

_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""click >= 8.2 raises it for a group called without a command."""

_verbose = False
_json_logs = False
"""The command logs JSON: what it says goes out as log records."""

logger = logging.getLogger("tickerq.cli")


def set_verbose(verbose: bool) -> None:
    """With ``verbose``, errors are reported with their traceback."""
    global _verbose  # noqa: PLW0603  # one process, one command line
    _verbose = verbose


def configure_logging(level: int, fmt: str = "text") -> None:
    """Log records at ``level`` and above to stderr in ``fmt`` (text or json); Alembic
    explains its set-up at INFO: that only at DEBUG."""
    from tickerq.logs import configure

    global _json_logs  # noqa: PLW0603  # one process, one command line
    configure(level, fmt)
    _json_logs = fmt == "json"
    alembic = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    logging.getLogger("alembic").setLevel(alembic)


def say(message: str, *, err: bool = False, level: int = logging.INFO, **fields: object) -> None:
    """Tell the user ``message``: a line ``tickerq: <message>`` (on stderr with ``err``),
    or, with JSON logs, a record on the ``tickerq.cli`` logger with ``fields``."""
    if _json_logs:
        logger.log(level, message, extra=fields)
    else:
        click.echo(f"tickerq: {message}", err=err)


def run_command(command: click.Command, args: Sequence[str] | None = None) -> int:
    """Run ``command`` and return its exit status; an error is reported as one line."""
    try:
        result = command.main(args=args, prog_name="tickerq", standalone_mode=False)
    except SystemExit as exc:  # sys.exit() in a command: its status stands
        code = exc.code
        return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_FAILURE
    except _NO_ARGS_IS_HELP as exc:  # `tickerq` alone: the help
        assert isinstance(exc, click.UsageError)
        exc.show()
        return EXIT_USAGE
    except click.UsageError as exc:
        return _report(exc, exc.format_message(), EXIT_USAGE)
    except click.ClickException as exc:
        return _report(exc, exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt) as exc:
        return _report(exc, "interrupted", 128 + signal.SIGINT)
    except TickerQError as exc:
        return _report(exc, str(exc), EXIT_USAGE if isinstance(exc, _BAD_INPUT) else EXIT_FAILURE)
    except BrokenPipeError:  # `tickerq cron next ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_FAILURE
    except Exception as exc:
        hint = "" if _verbose else " (run with -v for the traceback)"
        return _report(exc, f"{type(exc).__name__}: {exc}{hint}", EXIT_FAILURE)
    return result if isinstance(result, int) else EXIT_OK


def _report(exc: BaseException, message: str, status: int) -> int:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = "; ".join(lines) or type(exc).__name__
    text = text.removeprefix("Error: ")
    if _json_logs:  # one JSON line whatever the level: the reason the command ends
        from tickerq.logs import JsonFormatter

        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            0,
            text,
            (),
            (type(exc), exc, exc.__traceback__) if _verbose else None,
            extra={"action": "exit", "exit_status": status},
        )
        click.echo(JsonFormatter().format(record), err=True)
        return status
    if _verbose:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"Error: {text}", err=True)
    return status


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set on the first SIGINT or SIGTERM (a graceful stop); a second one
    ends the process at once with status 128 + the signal number.

    Must be entered on the running event loop's thread.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            say(
                f"{sig.name} again, stopping at once",
                err=True,
                level=logging.WARNING,
                action="stop_now",
                signal=sig.name,
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + sig)
        say(
            f"{sig.name} received, stopping gracefully ({sig.name} again: at once)",
            err=True,
            action="stop_requested",
            signal=sig.name,
        )
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def database_errors(where: str) -> Iterator[None]:
    """Turn a database driver's error into a one-line failure naming ``where``.

    ``where`` is the store's URL without its password.
    """
    try:
        yield
    except Exception as exc:
        detail = _database_detail(exc)
        if detail is None:
            raise
        raise click.ClickException(f"cannot use the store {where}: {detail}") from exc


def _database_detail(exc: BaseException) -> str | None:
    """What a database error says, or None if ``exc`` is not one."""
    driver_error = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    error = driver_error if isinstance(driver_error, BaseException) else exc
    package = type(error).__module__.split(".", 1)[0]
    if package not in ("sqlalchemy", "sqlite3", "_sqlite3", "asyncpg"):
        return None
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

"""Every error tickerq raises, under one root: :class:`TickerQError`.

Each error carries the offending value in its message, and derives from the
stdlib base a caller would expect (``LookupError`` for unknown names and ids,
``ValueError`` for bad input), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tickerq.enums import Status

__all__ = [
    "CronError",
    "DuplicateJobError",
    "DuplicateTickerError",
    "FunctionNotFoundError",
    "InvalidArgumentError",
    "InvalidRequestError",
    "MissingDependencyError",
    "NotRunningError",
    "RegistrationError",
    "StoreConnectionError",
    "TerminateExecution",
    "TickerNotFoundError",
    "TickerQError",
    "TickerStateError",
]


class TickerQError(Exception):
    """Root of every error raised by tickerq."""


class RegistrationError(TickerQError, ValueError):
    """A function cannot be registered: duplicate name, bad signature, bad option.

    ``function`` names the function, ``problem`` says what is wrong with it.
    """

    def __init__(self, function: str, problem: str) -> None:
        super().__init__(f"function {function!r}: {problem}")
        self.function = function
        self.problem = problem


class CronError(TickerQError, ValueError):
    """A cron expression or timezone is invalid; the message names the field."""

    def __init__(self, expression: str, problem: str, field: str | None = None) -> None:
        if field == "timezone":
            message = f"invalid timezone {expression!r}: {problem}"
        else:
            where = f" in the {field} field" if field else ""
            message = f"invalid cron expression {expression!r}{where}: {problem}"
        super().__init__(message)
        self.expression = expression
        self.field = field
        self.problem = problem


class FunctionNotFoundError(TickerQError, LookupError):
    """No function is registered under this name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f" (registered: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"no ticker function named {name!r}{hint}")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class TickerNotFoundError(TickerQError, LookupError):
    """No ticker exists with this id."""

    def __init__(self, kind: str, ticker_id: object) -> None:
        super().__init__(f"no {kind} with id {ticker_id!s}")
        self.kind = kind
        self.ticker_id = ticker_id

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidRequestError(TickerQError, ValueError):
    """A request payload failed validation or is not JSON-serializable.

    ``stored`` is True when a stored request failed when its job was about to run
    (one enqueued by name from a process without the function's code, as plain
    JSON): it never will, so the ticker fails without retries."""

    def __init__(self, function: str, problem: str, *, stored: bool = False) -> None:
        super().__init__(f"invalid request for function {function!r}: {problem}")
        self.function = function
        self.problem = problem
        self.stored = stored


class InvalidResultError(TickerQError, TypeError):
    """A job returned a value that cannot be stored as its result (not JSON, not of
    its return type, nested too deep, over the size limit): the attempt fails."""

    def __init__(self, function: str, problem: str) -> None:
        super().__init__(f"function {function!r} returned {problem}")
        self.function = function
        self.problem = problem


class InvalidArgumentError(TickerQError, ValueError):
    """An argument is invalid (naive datetime, negative retries, ...); names the value."""


class DuplicateTickerError(TickerQError, ValueError):
    """A ticker with this id is already stored; nothing of the batch was stored."""

    def __init__(self, kind: str, ticker_id: object) -> None:
        super().__init__(f"a {kind} with id {ticker_id!s} already exists")
        self.kind = kind
        self.ticker_id = ticker_id

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateJobError(TickerQError, ValueError):
    """A job of this function with this unique key already waits or runs (enqueued with
    ``on_conflict="error"``, or a retry or update would make a second one); nothing
    was stored or changed.

    ``function`` and ``unique_key`` name the key, ``holder_id`` the time ticker that
    holds it.
    """

    def __init__(self, function: str, unique_key: str, holder_id: object) -> None:
        super().__init__(
            f"a job of function {function!r} with unique key {unique_key!r} already waits "
            f"or runs: time ticker {holder_id!s}"
        )
        self.function = function
        self.unique_key = unique_key
        self.holder_id = holder_id

    def __str__(self) -> str:
        return str(self.args[0])


class StoreConnectionError(TickerQError, ConnectionError):
    """The store's database cannot be reached; names the host and port, never the password."""


class TickerStateError(TickerQError, ValueError):
    """The operation is not allowed in the ticker's current state."""


class NotRunningError(TickerQError, RuntimeError):
    """The app's engine is not running (e.g. the sync facade was not started)."""


class TerminateExecution(TickerQError):
    """Raise inside a job to end the run with a chosen status and reason.

    ``raise TerminateExecution(Status.SKIPPED, "nothing to do")`` ends the run
    as SKIPPED with no retry; a FAILED status also skips remaining retries.
    """

    def __init__(self, status: Status, reason: str = "") -> None:
        if not status.is_final:
            raise InvalidArgumentError(
                f"TerminateExecution needs a final status (DONE, FAILED, CANCELLED, SKIPPED...), "
                f"got {status.name}"
            )
        super().__init__(f"execution terminated with status {status.name}: {reason}")
        self.status = status
        self.reason = reason


class MissingDependencyError(TickerQError, ImportError):
    """An optional part of tickerq is used without the extra that installs what it
    needs; the message names the ``pip install`` to run."""

    def __init__(self, feature: str, extra: str, missing: list[str]) -> None:
        super().__init__(
            f"{feature} needs {', '.join(missing)}, which this environment lacks: "
            f"pip install 'tickerq[{extra}]'"
        )
        self.feature = feature
        self.extra = extra
        self.missing = missing

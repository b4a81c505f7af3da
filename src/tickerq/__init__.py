"""tickerq: background jobs for Python.

Fire-and-forget jobs, jobs at a time (time tickers) and cron jobs (cron
tickers), with retries, history, several nodes sharing one database, and a
live dashboard. See https://pypi.org/project/tickerq/ and the README.
"""

from __future__ import annotations

from tickerq.app import TickerQ
from tickerq.clock import Clock, SystemClock
from tickerq.context import TickerContext
from tickerq.engine import EngineOptions
from tickerq.enums import EnqueueOutcome, MisfirePolicy, Priority, RunCondition, Status, TickerKind
from tickerq.errors import (
    CronError,
    DuplicateJobError,
    DuplicateTickerError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    InvalidResultError,
    MissingDependencyError,
    RegistrationError,
    TerminateExecution,
    TickerNotFoundError,
    TickerQError,
    TickerStateError,
)
from tickerq.functions import FunctionOptions, TickerFunction, TickerRouter
from tickerq.hooks import Cancellation, Failure
from tickerq.limits import RateLimit
from tickerq.managers import TimeTickerSpec
from tickerq.middleware import Middleware
from tickerq.models import Attempt, CronOccurrence, CronTicker, Node, Pause, TimeTicker
from tickerq.operations import BulkItem, BulkOutcome, BulkResult
from tickerq.retry import RetryPolicy
from tickerq.unique import OnConflict

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "BulkItem",
    "BulkOutcome",
    "BulkResult",
    "Cancellation",
    "Clock",
    "CronError",
    "CronOccurrence",
    "CronTicker",
    "DuplicateJobError",
    "DuplicateTickerError",
    "EngineOptions",
    "EnqueueOutcome",
    "Failure",
    "FunctionNotFoundError",
    "FunctionOptions",
    "InvalidArgumentError",
    "InvalidRequestError",
    "InvalidResultError",
    "Middleware",
    "MisfirePolicy",
    "MissingDependencyError",
    "Node",
    "OnConflict",
    "Pause",
    "Priority",
    "RateLimit",
    "RegistrationError",
    "RetryPolicy",
    "RunCondition",
    "Status",
    "SystemClock",
    "TerminateExecution",
    "TickerContext",
    "TickerFunction",
    "TickerKind",
    "TickerNotFoundError",
    "TickerQ",
    "TickerQError",
    "TickerRouter",
    "TickerStateError",
    "TimeTicker",
    "TimeTickerSpec",
    "__version__",
]

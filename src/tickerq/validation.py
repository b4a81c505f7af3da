"""Checks of user input shared by the decorators and the managers.

Each raises :class:`InvalidArgumentError` with the offending value in the message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from tickerq.errors import InvalidArgumentError

__all__ = [
    "check_count",
    "check_enum",
    "check_retries",
    "check_time",
    "check_timeout",
    "json_copy",
]

E = TypeVar("E", bound=Enum)


def check_time(value: datetime | None, what: str) -> datetime | None:
    """Reject naive datetimes: a time without a timezone is ambiguous."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"{what} {value.isoformat()} has no timezone; pass an aware datetime "
            "such as datetime.now(UTC) or datetime(..., tzinfo=ZoneInfo('Europe/Berlin'))"
        )
    return value


def check_count(value: Any, what: str) -> int:
    """An integer >= 0 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def check_retries(retries: Any, intervals: Sequence[float] | None) -> tuple[float, ...] | None:
    """Validate retry options; return the intervals as a tuple."""
    check_count(retries, "retries")
    if intervals is None:
        return None
    if isinstance(intervals, str | bytes) or not isinstance(intervals, Sequence):
        raise InvalidArgumentError(f"retry_intervals must be a list of seconds, got {intervals!r}")
    out = []
    for interval in intervals:
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not (interval >= 0 and math.isfinite(interval))
        ):
            raise InvalidArgumentError(
                "retry_intervals: each retry interval must be a number of seconds >= 0, "
                f"got {interval!r}"
            )
        out.append(float(interval))
    return tuple(out)


def check_timeout(timeout: Any) -> float | None:
    """A positive, finite number of seconds, or None."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (timeout > 0 and math.isfinite(timeout))
    ):
        raise InvalidArgumentError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def check_enum(cls: type[E], value: Any, what: str) -> E:
    """``cls(value)`` (names accepted too), or an error listing the allowed values."""
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls.__members__[value.upper()]
        allowed = ", ".join(cls.__members__)
        raise InvalidArgumentError(f"unknown {what} {value!r}; expected one of {allowed}") from None


def json_copy(value: Any) -> Any:
    """The JSON form of ``value`` (tuples become lists, keys strings), not aliased."""
    return json.loads(json.dumps(value, allow_nan=False))

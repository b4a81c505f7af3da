"""The bounds on user input, written once: the managers, the function handles,
``@app.function(...)`` and the test clock all check through here.

Every check raises a :class:`~tickerq.errors.TickerQError` subclass whose
message names the offending value, before anything is stored, so a value is
either refused the same way on every store or stored and read back exactly.

The bounds, and why:

* times (execution times, cron fires, the test clock) lie within
  :data:`MIN_TIME` .. :data:`MAX_TIME` (1970 to 9000, UTC) and are converted to
  UTC on the way in: a year-1 or year-9999 time overflows when shown in another
  timezone or moved by a retry, and PostgreSQL's ``-infinity`` breaks claims;
* delays (retry intervals, timeouts, the backoff policy) are finite numbers of
  seconds up to :data:`MAX_DELAY` (a year), so ``now + delay`` never overflows;
* retries are integers (not bools) up to :data:`MAX_RETRIES`;
* texts are ``str`` without NUL characters or lone surrogates (PostgreSQL
  cannot store them); names and cron expressions fit their columns
  (:data:`MAX_NAME_LENGTH`, :data:`MAX_CRON_LENGTH`, :data:`MAX_TIMEZONE_LENGTH`);
* request payloads are JSON nested at most :data:`MAX_PAYLOAD_DEPTH` levels
  (deeper payloads cannot be served back by the dashboard's API), with the same
  text rules for every string and key. Their size is limited by
  ``TickerQ(max_payload_bytes=...)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from typing import Any, TypeVar

from tickerq.errors import CronError, InvalidArgumentError, InvalidRequestError

__all__ = [
    "MAX_CRON_LENGTH",
    "MAX_DELAY",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_DEPTH",
    "MAX_RETRIES",
    "MAX_TIME",
    "MAX_TIMEZONE_LENGTH",
    "MIN_TIME",
    "check_after",
    "check_bool",
    "check_count",
    "check_cron_text",
    "check_enum",
    "check_name",
    "check_payload",
    "check_payload_size",
    "check_retries",
    "check_text",
    "check_time",
    "check_timeout",
    "check_timezone",
    "json_copy",
    "short_repr",
    "to_utc",
]

E = TypeVar("E", bound=Enum)

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest time tickerq accepts (execution times, cron fires, the test clock)."""
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
"""The latest time tickerq accepts: far enough from year 9999 that a time plus a
delay, or shown in any timezone, stays a valid datetime."""
MAX_DELAY = 366 * 24 * 3600.0
"""The longest retry interval, timeout or backoff, in seconds (a year)."""
MAX_RETRIES = 10_000
"""The most retries a ticker or function may have (and retry intervals it may list)."""
MAX_PAYLOAD_DEPTH = 64
"""How deeply a request payload may nest lists and objects."""
MAX_NAME_LENGTH = 200
"""The longest function name (the width of the name columns)."""
MAX_CRON_LENGTH = 200
"""The longest cron expression (after collapsing whitespace)."""
MAX_TIMEZONE_LENGTH = 64
"""The longest timezone name."""
MAX_DESCRIPTION_LENGTH = 10_000
"""The longest description of a ticker, in characters."""
MAX_CONCURRENCY = 1_000_000
"""The largest per-function ``max_concurrency``."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (never fails)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- times -------------------------------------------------------------------------------


def to_utc(value: datetime, what: str) -> datetime:
    """An aware datetime as a plain ``datetime`` in UTC, within MIN_TIME..MAX_TIME.

    Naive datetimes are refused: a time without a timezone is ambiguous.
    """
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, got {short_repr(value)}")
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a broken tzinfo
        raise InvalidArgumentError(
            f"{what} {short_repr(value)} has an unusable timezone: {exc}"
        ) from None
    if offset is None:
        raise InvalidArgumentError(
            f"{what} {value.isoformat()} has no timezone; pass an aware datetime "
            "such as datetime.now(UTC) or datetime(..., tzinfo=ZoneInfo('Europe/Berlin'))"
        )
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_TIME <= utc <= MAX_TIME:
        raise InvalidArgumentError(
            f"{what} {value.isoformat()} is out of range: times must lie between "
            f"{MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}"
        )
    if type(utc) is not datetime:  # a subclass (pandas, pendulum...): store the plain value
        utc = datetime(
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
        )
    return utc


def check_time(value: datetime | None, what: str) -> datetime | None:
    """None, or ``value`` in UTC (see :func:`to_utc`)."""
    return None if value is None else to_utc(value, what)


def check_after(after: timedelta | float, now: datetime) -> datetime:
    """The time ``after`` (a timedelta or seconds) from ``now``, within the time range."""
    if isinstance(after, timedelta):
        seconds = after.total_seconds()
    elif isinstance(after, int | float) and not isinstance(after, bool):
        seconds = after
    else:
        raise InvalidArgumentError(f"after must be a timedelta or seconds, got {short_repr(after)}")
    try:
        # Outside the span of the time range the sum cannot be in range.
        if not abs(seconds) <= (MAX_TIME - MIN_TIME).total_seconds():
            raise OverflowError
        when = now + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise InvalidArgumentError(
            f"after {short_repr(after)} is out of range: times must lie between "
            f"{MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}"
        ) from None
    return to_utc(when, f"after {short_repr(after)}: the time")


# -- numbers and flags -------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_count(value: Any, what: str, maximum: int | None = None) -> int:
    """An integer >= 0 (bools are refused), at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{what} must be an integer >= 0, got {short_repr(value)}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{what} must be at most {maximum}, got {short_repr(value)}")
    return int(value)


def _seconds(value: Any, what: str, *, zero: bool) -> float:
    """A finite number of seconds in [0 or >0, MAX_DELAY] as a float."""
    low = ">= 0" if zero else "> 0"
    if _is_number(value):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if (number >= 0 if zero else number > 0) and number <= MAX_DELAY:
            return number
    raise InvalidArgumentError(
        f"{what} must be a number of seconds {low} and at most {MAX_DELAY:,.0f} (a year), "
        f"got {short_repr(value)}"
    )


def check_retries(retries: Any, intervals: Sequence[float] | None) -> tuple[float, ...] | None:
    """Validate retry options; return the intervals as a tuple of seconds."""
    check_count(retries, "retries", MAX_RETRIES)
    if intervals is None:
        return None
    if isinstance(intervals, str | bytes) or not isinstance(intervals, Sequence):
        raise InvalidArgumentError(
            f"retry_intervals must be a list of seconds, got {short_repr(intervals)}"
        )
    if len(intervals) > MAX_RETRIES:
        raise InvalidArgumentError(
            f"retry_intervals lists {len(intervals)} intervals; at most {MAX_RETRIES} are allowed"
        )
    return tuple(_seconds(i, "retry_intervals: each retry interval", zero=True) for i in intervals)


MAX_CRON_LEAD = 3600.0
"""The most seconds ahead of their fire that cron occurrences may be made."""


def check_cron_lead(value: Any) -> float:
    """A number of seconds in [0, MAX_CRON_LEAD] (``EngineOptions.cron_lead``)."""
    if _is_number(value) and 0 <= float(value) <= MAX_CRON_LEAD:
        return float(value)
    raise InvalidArgumentError(
        f"cron_lead must be a number of seconds >= 0 and at most {MAX_CRON_LEAD:,.0f}, "
        f"got {short_repr(value)}"
    )


def check_timeout(timeout: Any) -> float | None:
    """None, or a number of seconds > 0 and at most MAX_DELAY."""
    if timeout is None:
        return None
    return _seconds(timeout, "timeout", zero=False)


def check_bool(value: Any, what: str) -> bool:
    """A real bool (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, got {short_repr(value)}")
    return value


def check_enum(cls: type[E], value: Any, what: str) -> E:
    """``cls(value)`` (names accepted too), or an error listing the allowed values.

    Only members, their values (str or int, not bool or float) and names pass.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return cls(value)
        except ValueError:
            if isinstance(value, str) and value.upper() in cls.__members__:
                return cls.__members__[value.upper()]
    allowed = ", ".join(cls.__members__)
    raise InvalidArgumentError(
        f"unknown {what} {short_repr(value)}; expected one of {allowed}"
    ) from None


# -- texts -------------------------------------------------------------------------------


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\x00)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


def check_text(value: Any, what: str, *, max_length: int | None = None) -> str:
    """A ``str`` that every store can hold (no NUL, valid Unicode), not over ``max_length``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, got {short_repr(value)}")
    problem = _text_problem(value)
    if problem is not None:
        raise InvalidArgumentError(f"{what} {short_repr(value)} {problem}")
    if max_length is not None and len(value) > max_length:
        raise InvalidArgumentError(
            f"{what} {short_repr(value)} is {len(value)} characters long; "
            f"at most {max_length} are allowed"
        )
    return str(value)


def check_name(name: Any, what: str = "function name") -> str:
    """A function name: a non-empty storable string of at most MAX_NAME_LENGTH characters."""
    text = check_text(name, what, max_length=MAX_NAME_LENGTH)
    if not text.strip():
        raise InvalidArgumentError(f"{what} cannot be empty, got {text!r}")
    return text


def check_cron_text(expression: Any) -> str:
    """A cron expression's text with whitespace collapsed (its fields are checked by
    :mod:`tickerq.cron`); raises CronError."""
    if not isinstance(expression, str):
        raise CronError(short_repr(expression), "a cron expression must be a string")
    problem = _text_problem(expression)
    text = " ".join(expression.split())
    if problem is None and not text:
        problem = "it is empty"
    if problem is None and len(text) > MAX_CRON_LENGTH:
        problem = f"{len(text)} characters long; at most {MAX_CRON_LENGTH} are allowed"
    if problem is not None:
        raise CronError(_cut(expression), problem)
    return text


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_timezone(value: Any) -> str | tzinfo:
    """A timezone name (checked as text; resolved by the cron module) or a tzinfo."""
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise CronError(short_repr(value), "a timezone must be an IANA name", "timezone")
    problem = _text_problem(value)
    if problem is None and len(value) > MAX_TIMEZONE_LENGTH:
        problem = f"longer than {MAX_TIMEZONE_LENGTH} characters"
    if problem is not None:
        raise CronError(_cut(value), problem, "timezone")
    return value


# -- payloads ----------------------------------------------------------------------------


def json_copy(value: Any) -> Any:
    """The JSON form of ``value`` (tuples become lists, keys strings), not aliased.

    Raises ValueError for values JSON cannot hold (NaN, cycles, nesting so deep
    that encoding it would exhaust the stack) and TypeError for other types.
    """
    _check_depth(value)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except RecursionError:  # pragma: no cover - _check_depth stops it first
        raise ValueError(f"nested more than {MAX_PAYLOAD_DEPTH} levels deep") from None


_MAX_CONTAINERS = 1_000_000


def _check_depth(value: Any) -> None:
    """ValueError when lists, tuples and dicts nest more than MAX_PAYLOAD_DEPTH levels."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= MAX_PAYLOAD_DEPTH:
            raise ValueError(f"nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        seen += 1
        if seen > _MAX_CONTAINERS:  # shared lists: json.dumps would expand them all
            raise ValueError(f"holds more than {_MAX_CONTAINERS:,} lists and objects")
        stack.extend((child, depth + 1) for child in children)


def check_payload(payload: Any, function: str) -> Any:
    """``payload`` (the JSON form of a request) if every store can hold and return it.

    Refused with InvalidRequestError naming where the problem is: nesting deeper
    than MAX_PAYLOAD_DEPTH, a string or key with a NUL character or a lone
    surrogate, a float that is not finite.
    """
    if payload is None or isinstance(payload, bool | int):
        return payload
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _text_problem(item) is not None:
                break
        elif isinstance(item, float):
            if not math.isfinite(item):
                break
        elif isinstance(item, dict):
            if depth >= MAX_PAYLOAD_DEPTH:
                break
            for key, child in item.items():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_PAYLOAD_DEPTH:
                break
            stack.extend((child, depth + 1) for child in item)
    else:
        return payload
    where, problem = _payload_problem(payload)
    raise InvalidRequestError(function, f"{where} {problem}")


def check_payload_size(payload: Any, function: str, limit: int) -> None:
    """Refuse ``payload`` with InvalidRequestError when its compact JSON is over
    ``limit`` bytes (``TickerQ(max_payload_bytes=...)``; 0: no limit)."""
    if payload is None or not limit:
        return
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > limit:
        raise InvalidRequestError(
            function,
            f"the request is {size:,} bytes as JSON, over the limit of "
            f"{limit:,} (TickerQ(max_payload_bytes=...))",
        )


def _payload_problem(payload: Any) -> tuple[str, str]:
    """(path, problem) of the first part of ``payload`` that check_payload refuses."""
    stack: list[tuple[Any, str, int]] = [(payload, "request", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem is not None:
                return path, f"{short_repr(item)} {problem}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, f"is {item!r}, not a JSON number"
        elif isinstance(item, dict | list):
            if depth >= MAX_PAYLOAD_DEPTH:
                return path[:120], f"is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in reversed(list(pairs)):
                if isinstance(key, str):
                    problem = _text_problem(key)
                    if problem is not None:
                        return path, f"has a key {short_repr(key)} that {problem}"
                stack.append((child, f"{path}[{short_repr(key, 40)}]", depth + 1))
    return "request", "cannot be stored"  # pragma: no cover - check_payload found a problem


MAX_HEADERS = 64
"""The most headers a ticker may carry."""
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 8192


def check_headers(headers: Any) -> dict[str, str]:
    """A ticker's headers as a plain dict of text to text, or InvalidArgumentError
    naming the bad entry: at most MAX_HEADERS, names of 1 to MAX_HEADER_NAME
    characters, values up to MAX_HEADER_VALUE, no NUL or lone surrogate."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(
            f"headers must be a mapping of text to text, got {short_repr(headers)}"
        )
    if len(headers) > MAX_HEADERS:
        raise InvalidArgumentError(
            f"headers: {len(headers)} entries; at most {MAX_HEADERS} are allowed"
        )
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_HEADER_NAME:
            raise InvalidArgumentError(
                f"headers: a name must be text of 1 to {MAX_HEADER_NAME} characters, "
                f"got {short_repr(name)}"
            )
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            raise InvalidArgumentError(
                f"headers[{name!r}] must be text of at most {MAX_HEADER_VALUE} characters, "
                f"got {short_repr(value)}"
            )
        for text in (name, value):
            problem = _text_problem(text)
            if problem is not None:
                raise InvalidArgumentError(f"headers[{name!r}]: {problem}")
        out[name] = value
    return out


def check_wait_timeout(timeout: Any) -> float:
    """Seconds to wait (``wait(timeout=...)``): a number >= 0 and at most MAX_DELAY."""
    return _seconds(timeout, "timeout", zero=True)

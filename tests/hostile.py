"""Hostile values for property tests of the public API (issue 8, item 9).

Strategies that mix ordinary values with the ones stores and dates choke on
(deep nesting, NUL characters, lone surrogates, years 1 and 9999 in far zones,
NaN, infinities, bools for numbers, big ints, wrong types), and the checks the
tests share: exact JSON equality, and whether an error message names a value.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerq import MisfirePolicy, Priority, TickerQ, TickerQError
from tickerq.models import CronTicker, TimeTicker

EXAMPLES = int(os.environ.get("TICKERQ_HOSTILE_EXAMPLES", "60"))
RANDOM = os.environ.get("TICKERQ_HOSTILE_RANDOM") == "1"
"""Set to 1 for fresh random examples instead of the fixed, reproducible ones."""

ZONES = [
    UTC,
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Pacific/Kiritimati"),
    ZoneInfo("Pacific/Niue"),
    ZoneInfo("Australia/Lord_Howe"),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-12)),
]

# -- strategies -------------------------------------------------------------------------
# Each field is drawn from ordinary values or hostile ones, so that some calls
# succeed (and are checked for an exact round trip) and some fail.

plain_text = st.text(st.characters(codec="utf-8"), max_size=8)
hostile_text = st.builds(
    lambda a, bad, b: a + bad + b,
    plain_text,
    st.sampled_from(["\x00", "\ud800", "\udfff", "\x00\x00", "\u2028", "\\"]),
    plain_text,
)
texts = st.one_of(plain_text, hostile_text)
big_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**400, -(10**400)]),
)
bad_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    bad_floats,
    st.just(-0.0),
    texts,
)


def _nest(depth: int) -> Any:
    value: Any = "core"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


payloads = st.one_of(
    st.recursive(
        json_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.integers(60, 70).map(_nest),  # around the depth limit (64)
    st.just(_nest(200)),  # deeper ones are in test_input_bounds (hypothesis cannot print them)
    st.sampled_from([{1, 2}, object(), (1, [2])]),
)
zones = st.sampled_from(ZONES)
datetimes = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=zones),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=zones),
    st.datetimes(datetime(1969, 12, 31), datetime(1970, 1, 2), timezones=zones),
    st.datetimes(datetime(8999, 12, 31), datetime(9000, 1, 2), timezones=zones),
    st.sampled_from(
        [
            datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # in the DST gap
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        ]
    ),
    st.datetimes(max_value=datetime(2100, 1, 1)),  # naive
    st.sampled_from(["2030-01-01", 1_900_000_000, None]),
)
bad_numbers = st.one_of(
    bad_floats,
    big_ints,
    st.booleans(),
    st.integers(-10, -1),
    st.floats(-10, -1e-9),
    st.floats(3.1e7, 3.3e7),  # around a year
    st.sampled_from(["5", [1], None]),
)
seconds = st.one_of(st.integers(0, 100_000), st.floats(0, 1e5))
delays = st.one_of(
    st.floats(-1e6, 1e6),
    st.timedeltas(timedelta(days=-3000), timedelta(days=3000)),
    bad_numbers,
    st.sampled_from([1e12, -1e12, timedelta.max, timedelta.min]),
)
intervals = st.one_of(
    st.none(),
    st.lists(seconds, max_size=3),
    st.lists(st.one_of(seconds, bad_numbers), min_size=1, max_size=3),
    st.sampled_from(["10", 10]),
)
retries = st.one_of(st.integers(0, 20), st.integers(9_990, 10_010), bad_numbers)
timeouts = st.one_of(st.none(), st.floats(1e-6, 1e5), st.integers(1, 31_622_400), bad_numbers)
descriptions = st.one_of(
    texts, st.text(max_size=30), st.sampled_from([None, 5, ["x"], b"x", "d" * 10_001])
)


@st.composite
def _mixed(
    draw: st.DrawFn,
    valid: dict[str, st.SearchStrategy[Any]],
    hostile: dict[str, st.SearchStrategy[Any]],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Some fields with ordinary values, then up to two of them hostile."""
    out = {
        name: draw(strategy)
        for name, strategy in valid.items()
        if name in required or draw(st.booleans())
    }
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        out[name] = draw(hostile[name])
    return out


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), plain_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(plain_text, inner, max_size=3)
    ),
    max_leaves=8,
)
time_ticker_kwargs = _mixed(
    valid={
        "request": json_values,
        "execution_time": st.datetimes(
            datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=zones, allow_imaginary=False
        ),
        "description": st.text(max_size=20),
        "retries": st.integers(0, 10),
        "retry_intervals": st.one_of(st.none(), st.lists(seconds, max_size=3)),
        "timeout": st.one_of(st.none(), st.floats(1e-3, 1e5)),
    },
    hostile={
        "request": payloads,
        "execution_time": datetimes,
        "after": delays,
        "description": descriptions,
        "retries": retries,
        "retry_intervals": intervals,
        "timeout": timeouts,
    },
)
cron_kwargs = _mixed(
    valid={
        "expression": st.sampled_from(
            ["* * * * *", "0 9 * * MON-FRI", "*/5 * * * * *", "@daily", " 0  0 1 * * "]
        ),
        "timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
        "request": json_values,
        "retries": st.integers(0, 10),
        "retry_intervals": st.one_of(st.none(), st.lists(seconds, max_size=3)),
        "description": st.text(max_size=20),
        "enabled": st.booleans(),
        "misfire": st.sampled_from(MisfirePolicy),
    },
    hostile={
        "expression": st.one_of(
            st.sampled_from(["0 0 * * *\x00", "0 0 * * " + ",".join(["1"] * 120), "", 5]),
            texts,
            st.builds(lambda a, b: f"0 {a} * * {b}", plain_text, plain_text),
        ),
        "timezone": st.one_of(
            st.sampled_from(["Mars/Base", "E" * 100, "", None]), texts, zones, st.integers()
        ),
        "request": payloads,
        "retries": retries,
        "retry_intervals": intervals,
        "description": descriptions,
        "enabled": st.sampled_from([0, 1, "yes", None]),
        "misfire": st.sampled_from(["skip", "RUN_ALL", "x", 1, True, None]),
    },
    required=("expression",),
)
function_options = _mixed(
    valid={
        "priority": st.sampled_from(["HIGH", "low", 2, Priority.NORMAL]),
        "max_concurrency": st.integers(0, 50),
        "retries": st.integers(0, 10),
        "retry_intervals": st.one_of(st.none(), st.lists(seconds, max_size=3)),
        "timeout": st.one_of(st.none(), st.floats(1e-3, 1e5)),
        "cron": st.sampled_from(["* * * * *", "0 9 * * MON-FRI", "@hourly"]),
        "cron_timezone": st.sampled_from(["Europe/Berlin", "UTC"]),
    },
    hostile={
        "priority": st.sampled_from([True, False, 2.0, 7, "URGENT", None, "high\x00"]),
        "max_concurrency": st.one_of(bad_numbers, st.integers(999_990, 1_000_010)),
        "retries": retries,
        "retry_intervals": intervals,
        "timeout": timeouts,
        "cron": st.one_of(
            texts, st.sampled_from(["* * * * *\x00", "0 0 * * " + ",".join(["1"] * 120), 5])
        ),
        "cron_timezone": st.one_of(texts, st.sampled_from(["Mars/Base", "E" * 70, 3])),
    },
)
function_names = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30),
    texts,
    st.integers(190, 210).map(lambda n: "f" * n),
)


# -- checks -----------------------------------------------------------------------------


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (1 is not 1.0 is not True; -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def as_json(value: Any) -> Any:
    """What a JSON round trip makes of a payload (tuples to lists); None if not JSON."""
    import json

    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return None


def mentions(message: str, value: Any) -> bool:
    """Whether an error message names ``value`` (its repr, or a recognizable part)."""
    if isinstance(value, datetime):
        return value.isoformat() in message
    if isinstance(value, timedelta):
        return repr(value)[:40] in message or str(value.total_seconds())[:10] in message
    if isinstance(value, str):
        # The text itself, or its repr (which escapes NUL and surrogates), maybe cut.
        collapsed = " ".join(value.split())  # cron expressions are named so
        forms = {value, repr(value), repr(value)[1:-1], collapsed, repr(collapsed)[1:-1]}
        return any(form[:30] in message for form in forms if form)
    if isinstance(value, list | tuple | dict):
        return any(mentions(message, v) for v in _parts(value))
    text = repr(value)
    return text[:30] in message or str(value)[:30] in message


def _parts(value: Any) -> list[Any]:
    out = [value] if not isinstance(value, list | tuple | dict) else []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict):
            out.append(key)
        if isinstance(item, list | tuple | dict):
            out.extend(_parts(item))
        else:
            out.append(item)
    return out


def named(error: TickerQError, kwargs: dict[str, Any], function: str) -> bool:
    """The error names one of the values given (a request error: the function too)."""
    message = str(error)
    if f"request for function {function!r}" in message:
        return True
    if any(name in message for name in kwargs) and any(
        mentions(message, v) for v in kwargs.values()
    ):
        return True
    return any(mentions(message, v) for v in kwargs.values())


async def snapshot(app: TickerQ) -> tuple[list[TimeTicker], list[CronTicker]]:
    """Everything stored, to compare before and after a refused call."""
    return await app.time_tickers.query(limit=10_000), await app.cron_tickers.query()


def utc_of(value: datetime) -> datetime:
    return value.astimezone(UTC)


def run_examples(
    test: Callable[..., Coroutine[Any, Any, None]],
    strategy: Any,
    store_kind: str,
) -> Awaitable[None]:
    """Run ``test(example)`` for each generated example on the current event loop,
    with hypothesis driving from a worker thread."""
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def drive(example: Any) -> None:
        asyncio.run_coroutine_threadsafe(test(example), loop).result(timeout=20)

    return asyncio.to_thread(drive)

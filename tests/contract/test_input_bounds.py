"""Bounds on input (issue 8, item 9), the same on every store.

Each hostile value below was stored (or crashed with a non-tickerq error, or
broke a later read or claim) on at least one store. Now every one is refused at
the API with a TickerQError that names it, and nothing is stored; values at the
bounds are stored and read back exactly. The property test next door
(``test_hostile_input.py``) throws generated values at the same API.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tickerq import (
    CronError,
    DuplicateTickerError,
    InvalidArgumentError,
    InvalidRequestError,
    TickerQ,
    TickerQError,
    TimeTickerSpec,
)
from tickerq.validation import (
    MAX_CRON_LENGTH,
    MAX_DELAY,
    MAX_PAYLOAD_DEPTH,
    MAX_RETRIES,
    MAX_TIME,
    MIN_TIME,
)

KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14 today
PLUS_14 = timezone(timedelta(hours=14))
MINUS_11 = timezone(timedelta(hours=-11))


def nested(depth: int) -> Any:
    """A payload of ``depth`` lists around a 1."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def stored_state(app: TickerQ) -> tuple[int, int]:
    """How many time tickers and cron tickers the store holds."""
    return await app.time_tickers.count(), len(await app.cron_tickers.query())


Call = Callable[[TickerQ], Awaitable[object]]

REFUSED: dict[str, tuple[Call, type[TickerQError], str]] = {
    # payloads
    "nested 65 deep": (
        lambda app: app.time_tickers.add("alpha", request=nested(MAX_PAYLOAD_DEPTH + 1)),
        InvalidRequestError,
        "nested more than 64 levels",
    ),
    "nested 400 deep in a dict": (
        lambda app: app.time_tickers.add("alpha", request={"a": nested(400)}),
        InvalidRequestError,
        "nested more than 64 levels",
    ),
    "nested 100,000 deep": (
        lambda app: app.time_tickers.add("alpha", request=nested(100_000)),
        InvalidRequestError,
        "nested more than 64 levels",
    ),
    "NUL in a payload string": (
        lambda app: app.time_tickers.add("alpha", request={"to": "a\x00b"}),
        InvalidRequestError,
        r"request['to'] 'a\x00b' contains a NUL",
    ),
    "NUL in a payload key": (
        lambda app: app.time_tickers.add("alpha", request=[{"k\x00": 1}]),
        InvalidRequestError,
        r"key 'k\x00'",
    ),
    "lone surrogate in a payload": (
        lambda app: app.time_tickers.add("alpha", request=["\ud800"]),
        InvalidRequestError,
        r"'\ud800' contains a lone surrogate",
    ),
    "NUL in a cron request": (
        lambda app: app.cron_tickers.add("alpha", "* * * * *", request="\x00"),
        InvalidRequestError,
        r"'\x00'",
    ),
    # times
    "year 1": (
        lambda app: app.time_tickers.add("alpha", execution_time=datetime(1, 1, 1, tzinfo=UTC)),
        InvalidArgumentError,
        "0001-01-01T00:00:00+00:00 is out of range",
    ),
    "year 1 east of UTC": (
        lambda app: app.time_tickers.add(
            "alpha", execution_time=datetime(1, 1, 1, 5, tzinfo=PLUS_14)
        ),
        InvalidArgumentError,
        "0001-01-01T05:00:00+14:00",
    ),
    "year 9999 west of UTC": (
        lambda app: app.time_tickers.add(
            "alpha", execution_time=datetime(9999, 12, 31, 23, tzinfo=MINUS_11)
        ),
        InvalidArgumentError,
        "9999-12-31T23:00:00-11:00",
    ),
    "just before 1970": (
        lambda app: app.time_tickers.add(
            "alpha", execution_time=MIN_TIME - timedelta(microseconds=1)
        ),
        InvalidArgumentError,
        "1969-12-31T23:59:59.999999+00:00",
    ),
    "just after 9000": (
        lambda app: app.time_tickers.add("alpha", execution_time=MAX_TIME + timedelta(seconds=1)),
        InvalidArgumentError,
        "9000-01-01T00:00:01+00:00",
    ),
    "after a trillion seconds": (
        lambda app: app.time_tickers.add("alpha", after=1e12),
        InvalidArgumentError,
        "after 1000000000000.0",
    ),
    "after 1e20 seconds": (
        lambda app: app.time_tickers.add("alpha", after=1e20),
        InvalidArgumentError,
        "after 1e+20",
    ),
    "after a huge int": (
        lambda app: app.time_tickers.add("alpha", after=10**400),
        InvalidArgumentError,
        "after 1000000000",
    ),
    "after True": (
        lambda app: app.time_tickers.add("alpha", after=True),
        InvalidArgumentError,
        "got True",
    ),
    "update to year 9999": (
        lambda app: _update(app, execution_time=datetime(9999, 1, 1, tzinfo=UTC)),
        InvalidArgumentError,
        "9999-01-01T00:00:00+00:00",
    ),
    # retries, intervals, timeouts
    "retries 10**30": (
        lambda app: app.time_tickers.add("alpha", retries=10**30),
        InvalidArgumentError,
        "retries must be at most 10000, got 1000000000000000000000000000000",
    ),
    "retries over the maximum": (
        lambda app: app.cron_tickers.add("alpha", "* * * * *", retries=MAX_RETRIES + 1),
        InvalidArgumentError,
        "got 10001",
    ),
    "retries True": (
        lambda app: app.time_tickers.add("alpha", retries=True),
        InvalidArgumentError,
        "retries must be an integer >= 0, got True",
    ),
    "retries 2.0": (
        lambda app: _update(app, retries=2.0),
        InvalidArgumentError,
        "got 2.0",
    ),
    "a retry interval of 1e300": (
        lambda app: app.time_tickers.add("alpha", retries=1, retry_intervals=[1e300]),
        InvalidArgumentError,
        "got 1e+300",
    ),
    "a retry interval over a year": (
        lambda app: app.cron_tickers.add(
            "alpha", "* * * * *", retries=1, retry_intervals=[1, MAX_DELAY + 1]
        ),
        InvalidArgumentError,
        "got 31622401.0",
    ),
    "a retry interval of 10**400": (
        lambda app: app.time_tickers.add("alpha", retries=1, retry_intervals=[10**400]),
        InvalidArgumentError,
        "got 1000000000",
    ),
    "a retry interval of True": (
        lambda app: _update(app, retries=1, retry_intervals=[True]),
        InvalidArgumentError,
        "got True",
    ),
    "too many retry intervals": (
        lambda app: app.time_tickers.add("alpha", retry_intervals=[1.0] * (MAX_RETRIES + 1)),
        InvalidArgumentError,
        "lists 10001 intervals",
    ),
    "timeout 10**400": (
        lambda app: app.time_tickers.add("alpha", timeout=10**400),
        InvalidArgumentError,
        "timeout must be a number of seconds > 0 and at most 31,622,400 (a year), got 1000",
    ),
    "timeout NaN": (
        lambda app: _update(app, timeout=float("nan")),
        InvalidArgumentError,
        "got nan",
    ),
    # types and texts
    "description 5": (
        lambda app: app.time_tickers.add("alpha", description=5),  # type: ignore[arg-type]
        InvalidArgumentError,
        "description must be a string, got 5",
    ),
    "description None": (
        lambda app: _update(app, description=None),  # type: ignore[arg-type]
        InvalidArgumentError,
        "description must be a string, got None",
    ),
    "description with NUL": (
        lambda app: app.time_tickers.add("alpha", description="a\x00"),
        InvalidArgumentError,
        r"description 'a\x00' contains a NUL",
    ),
    "cron description of a list": (
        lambda app: app.cron_tickers.add(
            "alpha",
            "* * * * *",
            description=["x"],  # type: ignore[arg-type]
        ),
        InvalidArgumentError,
        "description must be a string, got ['x']",
    ),
    "enabled 'no'": (
        lambda app: app.cron_tickers.add(
            "alpha",
            "* * * * *",
            enabled="no",  # type: ignore[arg-type]
        ),
        InvalidArgumentError,
        "enabled must be True or False, got 'no'",
    ),
    "enabled 1": (
        lambda app: app.cron_tickers.add("alpha", "* * * * *", enabled=1),  # type: ignore[arg-type]
        InvalidArgumentError,
        "got 1",
    ),
    "cron expression over 200 characters": (
        lambda app: app.cron_tickers.add("alpha", "0 0 * * " + ",".join(["1"] * 100)),
        CronError,
        f"at most {MAX_CRON_LENGTH} are allowed",
    ),
    "cron expression with NUL": (
        lambda app: app.cron_tickers.add("alpha", "0 0 * * *\x00"),
        CronError,
        r"0 0 * * *\x00",
    ),
    "cron expression not a string": (
        lambda app: app.cron_tickers.add("alpha", 5),  # type: ignore[arg-type]
        CronError,
        "invalid cron expression '5'",
    ),
    "timezone with NUL": (
        lambda app: app.cron_tickers.add("alpha", "* * * * *", timezone="UTC\x00"),
        CronError,
        r"UTC\x00",
    ),
    "timezone not a string": (
        lambda app: app.cron_tickers.add("alpha", "* * * * *", timezone=3),  # type: ignore[arg-type]
        CronError,
        "invalid timezone '3'",
    ),
    "function name not a string": (
        lambda app: app.time_tickers.add(["alpha"]),  # type: ignore[arg-type]
        InvalidArgumentError,
        "a function name must be a string, got ['alpha']",
    ),
    "parent id not a uuid": (
        lambda app: app.time_tickers.add("alpha", parent_id="nope"),  # type: ignore[arg-type]
        InvalidArgumentError,
        "'nope'",
    ),
    "add_many of a non-spec": (
        lambda app: app.time_tickers.add_many(
            [TimeTickerSpec(function="alpha"), "beta"]  # type: ignore[list-item]
        ),
        InvalidArgumentError,
        "got 'beta'",
    ),
}


async def _update(app: TickerQ, **changes: Any) -> object:
    """Update the one waiting ticker that the test added first."""
    (ticker,) = await app.time_tickers.query()
    return await app.time_tickers.update(ticker.id, **changes)


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
async def test_refused_naming_the_value_and_nothing_stored(app: TickerQ, case: str) -> None:
    call, error, fragment = REFUSED[case]
    existing = await app.time_tickers.add(
        "alpha", request={"n": 1}, execution_time=datetime(2030, 1, 1, tzinfo=UTC)
    )
    before = await stored_state(app)
    with pytest.raises(error) as excinfo:
        await call(app)
    assert fragment in str(excinfo.value)
    assert await stored_state(app) == before
    assert await app.time_tickers.get(existing.id) == existing


async def test_values_at_the_bounds_round_trip(app: TickerQ) -> None:
    payload = {"deep": nested(MAX_PAYLOAD_DEPTH - 1), "big": 2**70, "text": "é\u2028\U0001f600"}
    first = await app.time_tickers.add(
        "alpha",
        request=payload,
        execution_time=MIN_TIME,
        retries=MAX_RETRIES,
        retry_intervals=[0, MAX_DELAY],
        timeout=MAX_DELAY,
        description="d" * 10_000,
    )
    last = await app.time_tickers.add(
        "alpha", execution_time=MAX_TIME.astimezone(KIRITIMATI), timeout=1e-6
    )
    for ticker in (first, last):
        assert await app.time_tickers.get(ticker.id) == ticker
    got = await app.time_tickers.get(first.id)
    assert got.request == payload
    assert got.execution_time == MIN_TIME
    assert got.retry_intervals == (0.0, MAX_DELAY)
    got = await app.time_tickers.get(last.id)
    assert got.execution_time == MAX_TIME
    assert got.execution_time is not None and got.execution_time.tzinfo is UTC
    cron = await app.cron_tickers.add(
        "alpha", "0 0 * * " + ",".join(["1"] * 94), timezone=timezone(timedelta(hours=2))
    )
    assert cron.timezone == "Etc/GMT-2"
    assert await app.cron_tickers.get(cron.id) == cron


async def test_duplicate_ids_are_refused_by_every_store(app: TickerQ) -> None:
    # Regression: the memory store overwrote a row with a reused id, and the SQL
    # stores raised SQLAlchemy's IntegrityError, not a tickerq error.
    store = app.store
    ticker = await app.time_tickers.add("alpha", request=1)
    fresh = dataclasses.replace(ticker, id=uuid.uuid4(), request=2)
    again = dataclasses.replace(ticker, request=3)
    with pytest.raises(DuplicateTickerError) as excinfo:
        await store.add_time_tickers([fresh, again])
    assert str(ticker.id) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    twin = dataclasses.replace(ticker, id=uuid.uuid4())
    with pytest.raises(DuplicateTickerError, match=str(twin.id)):
        await store.add_time_tickers([twin, twin])
    assert [t.id for t in await app.time_tickers.query()] == [ticker.id]
    assert await app.time_tickers.get(ticker.id) == ticker

    cron = await app.cron_tickers.add("alpha", "* * * * *")
    with pytest.raises(DuplicateTickerError, match=str(cron.id)):
        await store.add_cron_ticker(cron.evolve(expression="0 0 * * *"))
    assert await app.cron_tickers.query() == [cron]

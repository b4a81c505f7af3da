"""Bad input to the managers: a clear error naming the value, and nothing stored."""

import asyncio
import dataclasses
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tickerq import (
    CronError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    MisfirePolicy,
    Priority,
    RegistrationError,
    RetryPolicy,
    Status,
    TickerContext,
    TickerFunction,
    TickerNotFoundError,
    TickerQ,
    TickerQError,
    TickerRouter,
    TickerStateError,
    TimeTickerSpec,
)

LATER = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@dataclasses.dataclass
class Email:
    to: str
    cc: int = 0


@dataclasses.dataclass
class Jobs:
    app: TickerQ
    email: TickerFunction[Email]
    plain: TickerFunction[Any]
    ran: list[Any]


@pytest.fixture
async def jobs() -> Jobs:
    app = TickerQ()
    ran: list[Any] = []

    @app.function
    def email(ctx: TickerContext[Email]) -> None:
        ran.append(ctx.request)

    @app.function
    async def plain(ctx: TickerContext) -> None:
        ran.append(ctx.request)

    await app.open()
    return Jobs(app, email, plain, ran)


async def assert_nothing_stored(app: TickerQ) -> None:
    assert await app.time_tickers.count() == 0
    assert await app.time_tickers.query() == []
    assert await app.cron_tickers.query() == []


# -- unknown function -------------------------------------------------------------------


async def test_unknown_function(jobs: Jobs) -> None:
    app = jobs.app
    with pytest.raises(FunctionNotFoundError) as excinfo:
        await app.time_tickers.add("no_such_job", request={"x": 1})
    error = excinfo.value
    assert isinstance(error, LookupError)
    assert isinstance(error, TickerQError)
    assert "'no_such_job'" in str(error)
    assert error.name == "no_such_job"
    # the message lists what is registered, to spot a typo
    assert "email" in str(error)
    assert "plain" in str(error)

    with pytest.raises(FunctionNotFoundError, match="no_such_job"):
        await app.cron_tickers.add("no_such_job", "0 0 * * *")
    with pytest.raises(FunctionNotFoundError, match="no_such_job"):
        app.get_function("no_such_job")
    await assert_nothing_stored(app)


# -- requests ---------------------------------------------------------------------------


async def test_request_failing_validation_names_field(jobs: Jobs) -> None:
    with pytest.raises(InvalidRequestError) as excinfo:
        await jobs.email.enqueue({"to": "a@b.c", "cc": "many"})  # type: ignore[arg-type]
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert error.function == "email"
    message = str(error)
    assert "'email'" in message
    assert "cc" in message
    assert "'many'" in message

    with pytest.raises(InvalidRequestError) as excinfo:
        await jobs.app.time_tickers.add("email", request={"cc": 1})
    assert "to" in str(excinfo.value)
    assert "Field required" in str(excinfo.value)
    await assert_nothing_stored(jobs.app)


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        ({1, 2}, "{1, 2}"),
        (object(), "object object"),
        (float("nan"), "nan"),
        ({"nested": [float("inf")]}, "inf"),
        ({"when": dt.date(2030, 1, 1)}, "datetime.date(2030, 1, 1)"),
    ],
    ids=["set", "object", "nan", "nested-inf", "date"],
)
async def test_payload_not_json_for_plain_function(jobs: Jobs, payload: Any, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as excinfo:
        await jobs.plain.enqueue(payload)
    message = str(excinfo.value)
    assert "'plain'" in message
    assert "not JSON" in message
    assert shown in message
    await assert_nothing_stored(jobs.app)


async def test_bad_request_in_cron_add_stores_nothing(jobs: Jobs) -> None:
    with pytest.raises(InvalidRequestError, match="cc"):
        await jobs.app.cron_tickers.add("email", "0 0 * * *", request={"to": "x", "cc": "y"})
    with pytest.raises(InvalidRequestError, match="not JSON"):
        await jobs.app.cron_tickers.add("plain", "0 0 * * *", request={1, 2})
    await assert_nothing_stored(jobs.app)


# Plain-JSON payloads: what is stored must be what a durable store gives back
# (json round trip), and must not change when the caller mutates its object.
# Regression: the caller's object used to be stored unchanged, so the memory
# store aliased it and kept tuples and non-string keys.


async def test_plain_payload_is_not_aliased(jobs: Jobs) -> None:
    # Mutating the dict after enqueue must not change the queued ticker's request.
    payload: dict[str, Any] = {"items": [1]}
    ticker = await jobs.plain.enqueue(payload)
    payload["items"].append(2)
    payload["extra"] = True
    stored = await jobs.app.time_tickers.get(ticker.id)
    assert stored.request == {"items": [1]}


@pytest.mark.parametrize(
    "payload",
    [(1, 2), {1: "a"}, {"k": (True, None)}],
    ids=["tuple", "int-key", "nested-tuple"],
)
async def test_plain_payload_is_stored_as_json(jobs: Jobs, payload: Any) -> None:
    # Stored as given ((1, 2), {1: 'a'}), a SQL store would give back
    # [1, 2] / {'1': 'a'}: the memory store must behave the same.
    ticker = await jobs.plain.enqueue(payload)
    stored = await jobs.app.time_tickers.get(ticker.id)
    assert stored.request == json.loads(json.dumps(payload))


# -- times ------------------------------------------------------------------------------


async def test_naive_datetime_rejected(jobs: Jobs) -> None:
    naive = dt.datetime(2030, 6, 1, 12, 30)
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.schedule(1, at=naive)
    assert isinstance(excinfo.value, ValueError)
    assert naive.isoformat() in str(excinfo.value)
    assert "timezone" in str(excinfo.value)

    with pytest.raises(InvalidArgumentError, match=naive.isoformat()):
        await jobs.app.time_tickers.add("plain", execution_time=naive)
    with pytest.raises(InvalidArgumentError, match=naive.isoformat()):
        await jobs.app.time_tickers.add_many(
            [TimeTickerSpec(function="plain", execution_time=naive)]
        )
    await assert_nothing_stored(jobs.app)


async def test_at_that_is_not_a_datetime_rejected(jobs: Jobs) -> None:
    with pytest.raises(InvalidArgumentError, match="2030-01-01"):
        await jobs.plain.schedule(1, at="2030-01-01")  # type: ignore[arg-type]
    await assert_nothing_stored(jobs.app)


async def test_at_and_after_together_rejected(jobs: Jobs) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.schedule(1, at=LATER, after=dt.timedelta(minutes=5))
    assert "after" in str(excinfo.value)
    assert "at" in str(excinfo.value)
    with pytest.raises(InvalidArgumentError):
        await jobs.app.time_tickers.add("plain", execution_time=LATER, after=5)
    await assert_nothing_stored(jobs.app)


@pytest.mark.parametrize("after", [float("nan"), float("inf"), "5"], ids=["nan", "inf", "str"])
async def test_bad_after_rejected(jobs: Jobs, after: Any) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.schedule(1, after=after)
    assert repr(after) in str(excinfo.value)
    await assert_nothing_stored(jobs.app)


# -- retries and timeouts ---------------------------------------------------------------


@pytest.mark.parametrize("retries", [-1, True, 1.5], ids=["negative", "bool", "float"])
async def test_bad_retries_rejected(jobs: Jobs, retries: Any) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.enqueue(1, retries=retries)
    assert "retries" in str(excinfo.value)
    assert repr(retries) in str(excinfo.value)
    with pytest.raises(InvalidArgumentError, match="retries"):
        await jobs.app.cron_tickers.add("plain", "0 0 * * *", retries=retries)
    await assert_nothing_stored(jobs.app)


@pytest.mark.parametrize(
    "interval",
    [-1, -0.5, float("nan"), float("inf"), "10"],
    ids=["-1", "-0.5", "nan", "inf", "str"],
)
async def test_bad_retry_interval_rejected(jobs: Jobs, interval: Any) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.enqueue(1, retries=2, retry_intervals=[5, interval])
    assert "retry interval" in str(excinfo.value)
    assert repr(interval) in str(excinfo.value)
    with pytest.raises(InvalidArgumentError, match="retry interval"):
        await jobs.app.cron_tickers.add("plain", "0 0 * * *", retries=2, retry_intervals=[interval])
    await assert_nothing_stored(jobs.app)


@pytest.mark.parametrize(
    "timeout", [0, -1, float("nan"), float("inf"), "30"], ids=["0", "-1", "nan", "inf", "str"]
)
async def test_bad_timeout_rejected(jobs: Jobs, timeout: Any) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.plain.enqueue(1, timeout=timeout)
    assert "timeout" in str(excinfo.value)
    assert repr(timeout) in str(excinfo.value)
    await assert_nothing_stored(jobs.app)


async def test_add_many_is_all_or_nothing(jobs: Jobs) -> None:
    specs = [
        TimeTickerSpec(function="plain", request=1),
        TimeTickerSpec(
            function="plain",
            request=2,
            children=[TimeTickerSpec(function="email", request={"to": 5})],
        ),
    ]
    with pytest.raises(InvalidRequestError, match="'email'"):
        await jobs.app.time_tickers.add_many(specs)
    with pytest.raises(InvalidArgumentError, match="-3"):
        await jobs.app.time_tickers.add_many(
            [TimeTickerSpec(function="plain"), TimeTickerSpec(function="plain", retries=-3)]
        )
    await assert_nothing_stored(jobs.app)


# -- cron tickers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * *", "minute"),
        ("0 25 * * *", "hour"),
        ("0 0 0 * *", "day-of-month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * MOO", "day-of-week"),
        ("99 0 0 * * *", "second"),
    ],
)
async def test_invalid_cron_in_add_names_field(jobs: Jobs, expression: str, field: str) -> None:
    with pytest.raises(CronError) as excinfo:
        await jobs.app.cron_tickers.add("plain", expression)
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert f"{field} field" in str(error)
    assert expression in str(error)
    await assert_nothing_stored(jobs.app)


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * * *", "@sometimes"])
async def test_cron_of_wrong_shape_rejected(jobs: Jobs, expression: str) -> None:
    with pytest.raises(CronError) as excinfo:
        await jobs.app.cron_tickers.add("plain", expression)
    assert repr(expression) in str(excinfo.value)
    await assert_nothing_stored(jobs.app)


async def test_unknown_timezone_rejected(jobs: Jobs) -> None:
    with pytest.raises(CronError) as excinfo:
        await jobs.app.cron_tickers.add("plain", "0 9 * * *", timezone="Mars/Olympus_Mons")
    assert isinstance(excinfo.value, ValueError)
    assert "unknown timezone 'Mars/Olympus_Mons'" in str(excinfo.value)
    await assert_nothing_stored(jobs.app)

    with pytest.raises(CronError, match="Mars/Olympus_Mons"):
        TickerQ(timezone="Mars/Olympus_Mons")


async def test_unknown_timezone_message_does_not_call_it_a_cron_expression(jobs: Jobs) -> None:
    # Regression: the message used to read "invalid cron expression
    # 'Mars/Olympus_Mons' in the timezone field: unknown timezone
    # 'Mars/Olympus_Mons'", even for TickerQ(timezone=...), where no cron is involved.
    with pytest.raises(CronError) as excinfo:
        await jobs.app.cron_tickers.add("plain", "0 9 * * *", timezone="Mars/Olympus_Mons")
    assert "cron expression 'Mars/Olympus_Mons'" not in str(excinfo.value)
    with pytest.raises(CronError) as excinfo:
        TickerQ(timezone="Mars/Olympus_Mons")
    assert "cron expression 'Mars/Olympus_Mons'" not in str(excinfo.value)


async def test_unknown_misfire_policy_rejected(jobs: Jobs) -> None:
    # Regression: this used to raise a bare ValueError ("'sometimes' is not a
    # valid MisfirePolicy"), outside the TickerQError hierarchy.
    with pytest.raises(TickerQError, match="sometimes"):
        await jobs.app.cron_tickers.add(
            "plain",
            "0 0 * * *",
            misfire="sometimes",  # type: ignore[arg-type]
        )
    await assert_nothing_stored(jobs.app)


async def test_bad_cron_update_changes_nothing(jobs: Jobs) -> None:
    cron = await jobs.app.cron_tickers.add("plain", "0 0 * * *", misfire=MisfirePolicy.SKIP)
    with pytest.raises(CronError, match="hour"):
        await jobs.app.cron_tickers.update(cron.id, expression="0 24 * * *")
    with pytest.raises(CronError, match="Nowhere/Land"):
        await jobs.app.cron_tickers.update(cron.id, timezone="Nowhere/Land")
    with pytest.raises(InvalidArgumentError, match="-1"):
        await jobs.app.cron_tickers.update(cron.id, retries=-1)
    with pytest.raises(InvalidRequestError):
        await jobs.app.cron_tickers.update(cron.id, request={1})
    assert await jobs.app.cron_tickers.get(cron.id) == cron


# -- unknown ids ------------------------------------------------------------------------


async def test_unknown_time_ticker_id(jobs: Jobs) -> None:
    manager = jobs.app.time_tickers
    missing = uuid.uuid4()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: manager.get(missing),
        "cancel": lambda: manager.cancel(missing),
        "update": lambda: manager.update(missing, description="x"),
        "delete": lambda: manager.delete(missing),
        "retry": lambda: manager.retry(missing),
        "attempts": lambda: manager.attempts(missing),
        "get(str)": lambda: manager.get(str(missing)),  # type: ignore[arg-type]
    }
    for label, call in calls.items():
        with pytest.raises(TickerNotFoundError) as excinfo:
            await call()
        assert isinstance(excinfo.value, LookupError), label
        assert str(missing) in str(excinfo.value), label
        assert "time ticker" in str(excinfo.value), label
    await assert_nothing_stored(jobs.app)


async def test_unknown_cron_ticker_id(jobs: Jobs) -> None:
    manager = jobs.app.cron_tickers
    missing = uuid.uuid4()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: manager.get(missing),
        "update": lambda: manager.update(missing, description="x"),
        "delete": lambda: manager.delete(missing),
        "enable": lambda: manager.enable(missing),
        "disable": lambda: manager.disable(missing),
        "run_now": lambda: manager.run_now(missing),
        "occurrences": lambda: manager.occurrences(missing),
        "get_occurrence": lambda: manager.get_occurrence(missing),
        "cancel_occurrence": lambda: manager.cancel_occurrence(missing),
    }
    for label, call in calls.items():
        with pytest.raises(TickerNotFoundError) as excinfo:
            await call()
        assert str(missing) in str(excinfo.value), label
    await assert_nothing_stored(jobs.app)


async def test_time_ticker_id_is_not_a_cron_id(jobs: Jobs) -> None:
    ticker = await jobs.plain.enqueue(1)
    with pytest.raises(TickerNotFoundError, match=str(ticker.id)):
        await jobs.app.cron_tickers.get(ticker.id)
    with pytest.raises(TickerNotFoundError, match=str(ticker.id)):
        await jobs.app.cron_tickers.get_occurrence(ticker.id)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", 12345])
async def test_non_uuid_id(jobs: Jobs, bad_id: Any) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: jobs.app.time_tickers.get(bad_id),
        lambda: jobs.app.time_tickers.cancel(bad_id),
        lambda: jobs.app.time_tickers.update(bad_id, description="x"),
        lambda: jobs.app.time_tickers.delete(bad_id),
        lambda: jobs.app.time_tickers.retry(bad_id),
        lambda: jobs.app.cron_tickers.get(bad_id),
        lambda: jobs.app.cron_tickers.delete(bad_id),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as excinfo:
            await call()
        assert repr(bad_id) in str(excinfo.value)


# -- queries ----------------------------------------------------------------------------


async def test_unknown_status_in_query(jobs: Jobs) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        await jobs.app.time_tickers.query(status="finished")
    message = str(excinfo.value)
    assert "'finished'" in message
    assert "DONE" in message  # lists the valid ones
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        await jobs.app.time_tickers.query(status=[Status.DONE, "nope"])
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        await jobs.app.time_tickers.count(status="nope")
    # case does not matter for valid names
    assert await jobs.app.time_tickers.query(status="done") == []


async def test_negative_limit_or_offset(jobs: Jobs) -> None:
    with pytest.raises(InvalidArgumentError, match="-1"):
        await jobs.app.time_tickers.query(limit=-1)
    with pytest.raises(InvalidArgumentError, match="-2"):
        await jobs.app.time_tickers.query(offset=-2)


# -- updates of existing tickers ----------------------------------------------------------


async def test_bad_update_changes_nothing(jobs: Jobs) -> None:
    ticker = await jobs.email.schedule(Email(to="a"), at=LATER)
    manager = jobs.app.time_tickers
    naive = LATER.replace(tzinfo=None)
    with pytest.raises(InvalidArgumentError, match=naive.isoformat()):
        await manager.update(ticker.id, execution_time=naive)
    with pytest.raises(InvalidRequestError, match="to"):
        await manager.update(ticker.id, request={"cc": 1})
    with pytest.raises(InvalidArgumentError, match="-1"):
        await manager.update(ticker.id, retries=-1)
    with pytest.raises(InvalidArgumentError, match="-7"):
        await manager.update(ticker.id, retries=1, retry_intervals=[-7])
    with pytest.raises(InvalidArgumentError, match="timeout"):
        await manager.update(ticker.id, timeout=0)
    assert await manager.get(ticker.id) == ticker


async def test_update_execution_time_none_keeps_ticker_runnable(jobs: Jobs) -> None:
    # Regression: update(execution_time=None) on a root ticker used to store
    # execution_time=None, so the ticker never ran (IDLE forever). It must be
    # rejected or mean "now", as it does in add().
    ticker = await jobs.plain.schedule(1, at=LATER)
    try:
        updated = await jobs.app.time_tickers.update(
            ticker.id,
            execution_time=None,  # type: ignore[arg-type]
        )
    except InvalidArgumentError:
        assert await jobs.app.time_tickers.get(ticker.id) == ticker
    else:
        assert updated.execution_time is not None


# -- scheduling before the engine runs --------------------------------------------------


async def test_schedule_needs_an_open_app_and_runs_once_started() -> None:
    app = TickerQ()
    ran: list[Any] = []

    @app.function
    async def job(ctx: TickerContext) -> None:
        ran.append(ctx.request)

    # not opened: refused, saying how to open it, and nothing is stored
    for attempt in (job.enqueue({"n": 0}), app.time_tickers.count()):
        with pytest.raises(TickerStateError, match=r"async with app.*app\.sync\.start\(\)"):
            await attempt
    # opened without the engine: scheduling is allowed; the job runs once started
    await app.open()
    assert await app.time_tickers.count() == 0
    ticker = await job.enqueue({"n": 1})
    assert not app.engine.running
    stored = await app.time_tickers.get(ticker.id)
    assert stored.status is Status.IDLE
    assert stored.request == {"n": 1}
    assert ran == []

    await app.start()
    try:
        await asyncio.wait_for(app.engine.wait_idle(), timeout=10)
        done = await app.time_tickers.get(ticker.id)
        assert done.status is Status.DONE
        assert ran == [{"n": 1}]
    finally:
        await app.stop()


async def test_payload_over_the_size_limit_is_refused() -> None:
    app = TickerQ(max_payload_bytes=100)

    @app.function()
    async def big(ctx: TickerContext) -> None:
        pass

    await app.open()
    await big.enqueue({"text": "x" * 50})  # under the limit
    with pytest.raises(InvalidRequestError, match=r"over the limit of 100"):
        await big.enqueue({"text": "x" * 200})
    assert await app.time_tickers.count() == 1


# -- bounds on input (issue 8, item 9) ----------------------------------------------------
# Values that used to be stored, or to fail later with a non-tickerq error (or not at
# all, leaving a row stuck), are refused when given, naming the value. The same
# bounds on every store are in tests/contract/test_input_bounds.py and, generated,
# tests/contract/test_hostile_input.py.


async def _job(ctx: TickerContext) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ({"priority": True}, "unknown priority True"),
        ({"priority": 2.0}, "unknown priority 2.0"),
        ({"retries": 10**30}, "retries must be at most 10000, got 10000000000"),
        ({"retries": True}, "retries must be an integer >= 0, got True"),
        ({"max_concurrency": 10**9}, "max_concurrency must be at most 1000000"),
        ({"retry_intervals": [1e300]}, "got 1e+300"),
        ({"retry_intervals": [10**400]}, "got 10000000000"),
        ({"timeout": 10**400}, "timeout must be a number of seconds > 0"),
        ({"timeout": 400 * 24 * 3600}, "got 34560000"),
        ({"cron": "* * * * *\x00"}, r"'* * * * *\x00'"),
        ({"cron": "0 0 * * " + ",".join(["1"] * 100)}, "at most 200 are allowed"),
        ({"cron": 5}, "invalid cron expression '5'"),
        ({"cron": "* * * * *", "cron_timezone": "UTC\x00"}, r"'UTC\x00'"),
        ({"cron": "* * * * *", "cron_timezone": 5}, "invalid timezone '5'"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_function_options_out_of_bounds_are_refused(options: dict[str, Any], shown: str) -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:
        app.function("job", **options)(_job)
    assert "'job'" in str(excinfo.value)
    assert shown in str(excinfo.value)
    assert app.functions == {}


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a" * 201, "is 201 characters long; at most 200"),
        ("send\x00mail", r"'send\x00mail' contains a NUL"),
        ("mail\ud800", r"'mail\ud800' contains a lone surrogate"),
    ],
    ids=["long", "nul", "surrogate"],
)
def test_function_names_that_no_store_can_hold_are_refused(name: str, shown: str) -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:
        app.function(name)(_job)
    assert shown in str(excinfo.value)
    assert app.functions == {}
    # the prefix of a router counts too
    router = TickerRouter(prefix="x" * 150 + ".")
    with pytest.raises(RegistrationError, match="at most 200"):
        router.function("y" * 60)(_job)
    ok = TickerRouter(prefix="billing.")
    ok.function("y" * 192)(_job)
    assert list(ok.functions) == ["billing." + "y" * 192]


async def test_query_filters_that_no_store_can_hold_are_refused(jobs: Jobs) -> None:
    # Regression: PostgreSQL fails on a NUL in a query parameter (a 500 on the dashboard).
    with pytest.raises(InvalidArgumentError, match=r"'a\\x00'"):
        await jobs.app.time_tickers.query(text="a\x00")
    with pytest.raises(InvalidArgumentError, match=r"function 'e\\x00'"):
        await jobs.app.time_tickers.count(function="e\x00")
    with pytest.raises(InvalidArgumentError, match=r"function must be a string, got 5"):
        await jobs.app.cron_tickers.query(function=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="limit must be an integer >= 0, got '5'"):
        await jobs.app.time_tickers.query(limit="5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "policy",
    [
        {"base": float("nan")},
        {"base": -1.0},
        {"cap": 1e300},
        {"cap": float("inf")},
        {"jitter": 2.0},
        {"jitter": True},
    ],
    ids=repr,
)
def test_retry_policy_out_of_bounds_is_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        RetryPolicy(**policy)
    ((name, value),) = policy.items()
    assert f"RetryPolicy {name}" in str(excinfo.value)
    assert repr(value) in str(excinfo.value)


def test_retry_delays_stay_within_a_year() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tickerq.validation import MAX_DELAY, MAX_TIME

    @settings(max_examples=300, derandomize=True, database=None)
    @given(
        base=st.floats(0, MAX_DELAY),
        cap=st.floats(0, MAX_DELAY),
        jitter=st.floats(0, 1),
        number=st.integers(-5, 10**6),
        intervals=st.one_of(
            st.none(),
            st.lists(
                st.one_of(
                    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**9)
                ),
                min_size=1,
                max_size=4,
            ),
        ),
    )
    def check(
        base: float, cap: float, jitter: float, number: int, intervals: list[float] | None
    ) -> None:
        import random

        delay = RetryPolicy(base=base, cap=cap, jitter=jitter).delay(
            number, intervals, random.Random(number)
        )
        assert 0.0 <= delay <= MAX_DELAY
        MAX_TIME + dt.timedelta(seconds=delay)  # never overflows

    check()


async def test_a_stored_retry_interval_that_overflows_a_date_does_not_strand_the_row() -> None:
    # Regression: a row holding a retry interval of 1e300 seconds (stored before
    # intervals were bounded, or by another tool) made the engine's result
    # computation overflow: "Task exception was never retrieved", and the row
    # stayed IN_PROGRESS for good. The delay is now clamped to a year.
    from tickerq.models import TimeTicker
    from tickerq.testing import ManualClock, run_until_idle
    from tickerq.validation import MAX_DELAY

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    app = TickerQ(clock=ManualClock(start))

    @app.function
    async def fails(ctx: TickerContext) -> None:
        raise RuntimeError("no")

    row = TimeTicker(
        id=uuid.uuid4(),
        function="fails",
        execution_time=start,
        retries=1,
        retry_intervals=(1e300,),
        created_at=start,
        updated_at=start,
    )
    await app.store.add_time_tickers([row])
    async with app:
        await asyncio.wait_for(run_until_idle(app), timeout=10)
        ticker = await app.time_tickers.get(row.id)
    assert ticker.status is Status.IDLE
    assert ticker.retry_count == 1
    assert ticker.execution_time == start + dt.timedelta(seconds=MAX_DELAY)


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1),
    ],
    ids=["year-1", "year-9999", "1969", "naive"],
)
def test_manual_clock_refuses_times_out_of_range(when: dt.datetime) -> None:
    from tickerq.testing import ManualClock

    with pytest.raises(InvalidArgumentError, match=re.escape(when.isoformat())):
        ManualClock(when)
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(InvalidArgumentError, match=re.escape(when.isoformat())):
        clock.set(when)
    with pytest.raises(InvalidArgumentError, match="1e"):
        clock.tick(1e20)
    assert clock.now() == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_hostile_function_options_are_refused_or_kept_exactly() -> None:
    # @app.function(...) with generated names and options: a RegistrationError that
    # names a value (and nothing registered), or a function with exactly those options.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hostile import function_names, function_options, named

    outcomes = {"refused": 0, "registered": 0}

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(name=function_names, options=function_options, plain=st.booleans())
    def check(name: str, options: dict[str, Any], plain: bool) -> None:
        app = TickerQ()
        try:
            handle = app.function(name, **options)(_job)
        except RegistrationError as error:
            given_values = {**options, "name": name}
            assert named(error, given_values, name), f"{error} names none of {given_values}"
            assert app.functions == {}
            outcomes["refused"] += 1
            return
        outcomes["registered"] += 1
        assert app.functions == {name: handle}
        assert handle.name == name
        chosen = handle.options
        wanted = options.get("priority", Priority.NORMAL)
        if isinstance(wanted, str):
            assert chosen.priority.name == wanted.upper()
        else:
            assert chosen.priority is Priority(wanted)
        assert chosen.retries == options.get("retries", 0)
        assert chosen.max_concurrency == options.get("max_concurrency", 0)
        given_intervals = options.get("retry_intervals")
        assert chosen.retry_intervals == (
            None if given_intervals is None else tuple(float(i) for i in given_intervals)
        )
        timeout = options.get("timeout")
        assert chosen.timeout == (None if timeout is None else float(timeout))
        assert chosen.cron == options.get("cron")

    check()
    assert min(outcomes.values()) >= 20, outcomes


@pytest.mark.parametrize(
    ("node_id", "shown"),
    [("web\x00", r"'web\x00' contains a NUL"), ("n" * 201, "201 characters long")],
    ids=["nul", "long"],
)
def test_node_ids_that_no_store_can_hold_are_refused(node_id: str, shown: str) -> None:
    # Regression: PostgreSQL refused the node's first heartbeat (NUL) or lock rows
    # (over the 200-character column), after the app had started.
    with pytest.raises(InvalidArgumentError) as excinfo:
        TickerQ(node_id=node_id)
    assert shown in str(excinfo.value)

"""Registering job functions: decorator forms, options, early checks, routers, request types.

Everything here is checked when the decorator runs (or when a router is
included), so most tests need no engine; the scheduling ones only open the
memory store.
"""

import dataclasses
import datetime as dt
import threading
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict

from tickerq import (
    FunctionOptions,
    InvalidRequestError,
    Priority,
    RegistrationError,
    Status,
    TickerContext,
    TickerFunction,
    TickerQ,
    TickerQError,
    TickerRouter,
)
from tickerq.functions import collect_registration_errors

# Request types live at module level so their annotations resolve.


@dataclasses.dataclass
class Email:
    to: str
    attempts: int = 1


class Invoice(pydantic.BaseModel):
    number: str
    amount: float
    due: dt.datetime


class Sms(TypedDict):
    number: str
    text: str


class PlainThing:
    """A class pydantic does not know how to validate or serialize."""

    def __init__(self, value: int) -> None:
        self.value = value


def _reg_error(excinfo: pytest.ExceptionInfo[RegistrationError], function: str) -> str:
    """Common checks on a RegistrationError; returns its message."""
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert isinstance(error, TickerQError)
    assert error.function == function
    message = str(error)
    assert repr(function) in message
    assert error.problem in message
    return message


# -- decorator forms and options -------------------------------------------------------


def test_bare_decorator_uses_function_name() -> None:
    app = TickerQ()

    @app.function
    async def cleanup(ctx: TickerContext) -> None:
        return None

    assert isinstance(cleanup, TickerFunction)
    assert cleanup.name == "cleanup"
    assert app.functions == {"cleanup": cleanup}
    assert app.get_function("cleanup") is cleanup
    assert cleanup.is_async
    assert cleanup.wants_context
    assert cleanup.options == FunctionOptions()


def test_empty_parentheses_use_function_name() -> None:
    app = TickerQ()

    @app.function()
    def report() -> None:
        return None

    assert report.name == "report"
    assert app.get_function("report") is report
    assert not report.is_async
    assert not report.wants_context
    assert report.request_type is None


def test_explicit_name_and_every_option_is_stored() -> None:
    app = TickerQ()

    @app.function(
        "send_email",
        cron="0 */5 * * * *",
        priority=Priority.HIGH,
        max_concurrency=3,
        retries=4,
        retry_intervals=[10, 60, 300],
        timeout=30,
    )
    def deliver(ctx: TickerContext[Email]) -> str:
        return ctx.request.to

    assert deliver.name == "send_email"
    assert "deliver" not in app.functions
    assert app.get_function("send_email") is deliver
    options = deliver.options
    assert options.cron == "0 */5 * * * *"
    assert options.priority is Priority.HIGH
    assert options.max_concurrency == 3
    assert options.retries == 4
    assert options.retry_intervals == (10, 60, 300)
    assert isinstance(options.retry_intervals, tuple)
    assert options.timeout == 30
    assert deliver.request_type is Email
    # the original function stays callable
    assert deliver.func.__name__ == "deliver"


def test_default_options() -> None:
    app = TickerQ()

    @app.function("plain")
    def plain() -> None:
        return None

    options = plain.options
    assert options.cron is None
    assert options.priority is Priority.NORMAL
    assert options.max_concurrency == 0
    assert options.retries == 0
    assert options.retry_intervals is None
    assert options.timeout is None


def test_retry_intervals_are_copied_at_decoration() -> None:
    app = TickerQ()
    intervals = [1.0, 2.0]

    @app.function(retries=2, retry_intervals=intervals)
    def job() -> None:
        return None

    intervals.append(99.0)
    assert job.options.retry_intervals == (1.0, 2.0)


# -- decoration-time errors -------------------------------------------------------------


def test_duplicate_name_in_app() -> None:
    app = TickerQ()

    @app.function("dup")
    def first() -> None:
        return None

    with pytest.raises(RegistrationError) as excinfo:

        @app.function("dup")
        def second() -> None:
            return None

    message = _reg_error(excinfo, "dup")
    assert "already registered" in message
    assert "first" in message  # names who registered it first
    assert app.get_function("dup") is first


def test_duplicate_default_name_in_app() -> None:
    app = TickerQ()

    @app.function
    def job() -> None:
        return None

    original = job

    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def job() -> None:  # same name by default
            return None

    assert "already registered" in _reg_error(excinfo, "job")
    assert app.get_function("job") is original


def test_duplicate_name_across_include_router() -> None:
    app = TickerQ()
    router = TickerRouter()

    @app.function("charge")
    def app_charge() -> None:
        return None

    @router.function("charge")
    def router_charge() -> None:
        return None

    with pytest.raises(RegistrationError) as excinfo:
        app.include_router(router)
    assert "already registered" in _reg_error(excinfo, "charge")
    assert app.get_function("charge") is app_charge


def test_duplicate_name_between_two_routers() -> None:
    app = TickerQ()
    one, two = TickerRouter(prefix="x."), TickerRouter(prefix="x.")

    @one.function
    def job() -> None:
        return None

    @two.function("job")
    def other() -> None:
        return None

    app.include_router(one)
    with pytest.raises(RegistrationError) as excinfo:
        app.include_router(two)
    _reg_error(excinfo, "x.job")
    assert app.get_function("x.job").func is job.func


def test_including_the_same_router_twice_is_harmless() -> None:
    app = TickerQ()
    router = TickerRouter()

    @router.function
    def job() -> None:
        return None

    app.include_router(router)
    app.include_router(router)
    assert app.functions == {"job": job}


def test_two_parameters_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function  # type: ignore[arg-type]
        def two(ctx: TickerContext, extra: int) -> None:
            return None

    message = _reg_error(excinfo, "two")
    assert "ctx" in message
    assert "extra" in message
    assert "two" not in app.functions


def test_parameter_annotated_with_non_context_type_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function  # type: ignore[arg-type]
        def wrong(email: Email) -> None:
            return None

    message = _reg_error(excinfo, "wrong")
    assert "'email'" in message
    assert "Email" in message
    assert "TickerContext" in message


def test_var_positional_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def star(*args: Any) -> None:
            return None

    assert "args" in _reg_error(excinfo, "star")


def test_var_positional_message_names_the_real_problem() -> None:
    # Regression: it used to say "function 'star': parameter 'args' must be
    # positional; ...", but *args is positional; the problem is that it is variadic.
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def star(*args: Any) -> None:
            return None

    message = _reg_error(excinfo, "star")
    assert "*args" in message or "variadic" in message


def test_var_keyword_and_keyword_only_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def kwargs(**kw: Any) -> None:
            return None

    assert "kw" in _reg_error(excinfo, "kwargs")

    with pytest.raises(RegistrationError) as excinfo:

        @app.function  # type: ignore[arg-type]
        def kwonly(*, ctx: TickerContext) -> None:
            return None

    assert "'ctx'" in _reg_error(excinfo, "kwonly")
    assert app.functions == {}


def test_generator_functions_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def gen(ctx: TickerContext) -> Any:
            yield 1

    assert "generator" in _reg_error(excinfo, "gen")

    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        async def agen(ctx: TickerContext) -> Any:
            yield 1

    assert "generator" in _reg_error(excinfo, "agen")
    assert app.functions == {}


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("61 * * * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 32 * *", "day-of-month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day-of-week"),
        ("61 0 0 * * *", "second"),
    ],
)
def test_invalid_cron_names_the_field(expression: str, field: str) -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function(cron=expression)
        def job() -> None:
            return None

    message = _reg_error(excinfo, "job")
    assert f"{field} field" in message
    assert expression in message
    assert app.functions == {}


def test_cron_with_wrong_field_count_rejected() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function(cron="* * *")
        def job() -> None:
            return None

    assert "* * *" in _reg_error(excinfo, "job")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"retries": -1}, ("retries", "-1")),
        ({"max_concurrency": -2}, ("max_concurrency", "-2")),
        ({"retries": 2, "retry_intervals": [5, -3]}, ("retry_intervals", "-3")),
        ({"retries": 1, "retry_intervals": [float("nan")]}, ("retry_intervals", "nan")),
        ({"timeout": 0}, ("timeout", "0")),
        ({"timeout": -5}, ("timeout", "-5")),
        ({"timeout": float("inf")}, ("timeout", "inf")),
    ],
)
def test_bad_limits_rejected(options: dict[str, Any], words: tuple[str, ...]) -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:
        app.function("limited", **options)(lambda: None)
    message = _reg_error(excinfo, "limited")
    for word in words:
        assert word in message
    assert app.functions == {}


def test_unserializable_request_type_lock() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def locked(ctx: TickerContext[threading.Lock]) -> None:
            return None

    message = _reg_error(excinfo, "locked")
    assert "JSON" in message
    assert app.functions == {}


def test_unserializable_request_type_plain_class() -> None:
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:

        @app.function
        def thing(ctx: TickerContext[PlainThing]) -> None:
            return None

    message = _reg_error(excinfo, "thing")
    assert "PlainThing" in message
    assert "JSON" in message


# The options below are wrong in type, not just in value; a type checker catches
# them, but an untyped caller must still get a RegistrationError naming the
# function, not a bare TypeError, or an option that breaks every later schedule.


def test_non_integer_retries_rejected_at_decoration() -> None:
    # Regression: retries=1.5 used to be accepted here, and every schedule of the
    # function then failed with "retries must be an integer >= 0, got 1.5".
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:
        app.function("fractional", retries=1.5)(lambda: None)  # type: ignore[call-overload]
    assert "1.5" in _reg_error(excinfo, "fractional")


@pytest.mark.parametrize(
    "options",
    [
        {"retries": 1, "retry_intervals": ["10"]},
        {"timeout": "30"},
    ],
)
def test_non_numeric_limits_give_registration_error(options: dict[str, Any]) -> None:
    # Regression: these used to raise a bare TypeError ("'>=' not supported
    # between instances of 'str' and 'int'") naming neither function nor option.
    app = TickerQ()
    with pytest.raises(RegistrationError) as excinfo:
        app.function("typed", **options)(lambda: None)
    _reg_error(excinfo, "typed")


# -- routers ------------------------------------------------------------------------------


def test_router_prefixes_names_and_include_registers() -> None:
    app = TickerQ()
    router = TickerRouter(prefix="billing.")
    assert router.prefix == "billing."

    @router.function
    def charge(ctx: TickerContext) -> None:
        return None

    @router.function("refund", retries=2)
    def refund_payment() -> None:
        return None

    assert charge.name == "billing.charge"
    assert refund_payment.name == "billing.refund"
    assert set(router.functions) == {"billing.charge", "billing.refund"}
    assert app.functions == {}

    app.include_router(router)
    assert app.get_function("billing.charge") is charge
    assert app.get_function("billing.refund") is refund_payment
    assert app.get_function("billing.refund").options.retries == 2
    assert charge.app is app


async def test_router_function_unusable_before_inclusion() -> None:
    router = TickerRouter(prefix="billing.")

    @router.function
    async def charge(ctx: TickerContext) -> None:
        return None

    with pytest.raises(TickerQError) as excinfo:
        await charge.enqueue({"amount": 1})
    assert "billing.charge" in str(excinfo.value)
    with pytest.raises(TickerQError):
        await charge.schedule(None, after=5)

    app = TickerQ()
    app.include_router(router)
    await app.open()
    ticker = await charge.enqueue({"amount": 1})
    assert ticker.function == "billing.charge"
    assert await app.time_tickers.count() == 1


def test_include_router_clash_registers_nothing() -> None:
    # BUG: app.include_router registers the router's functions one by one, so a
    # clash on "b.refund" leaves "b.charge" registered although include_router
    # raised: the app ends up half-including the router.
    app = TickerQ()
    router = TickerRouter(prefix="b.")

    @router.function
    def charge() -> None:
        return None

    @router.function("refund")
    def refund() -> None:
        return None

    @app.function("b.refund")
    def existing() -> None:
        return None

    with pytest.raises(RegistrationError, match=r"b\.refund"):
        app.include_router(router)
    assert list(app.functions) == ["b.refund"]
    assert app.get_function("b.refund") is existing


def test_empty_name_rejected() -> None:
    # BUG: @app.function("") silently registers under the function's own name
    # (functions.py: ``label or func.__name__``) instead of rejecting the name.
    app = TickerQ()
    with pytest.raises(RegistrationError):

        @app.function("")
        def job() -> None:
            return None

    assert app.functions == {}


# -- collecting problems -------------------------------------------------------------


def test_collect_registration_errors_collects_every_problem() -> None:
    app = TickerQ()

    @app.function("taken")
    def taken() -> None:
        return None

    with collect_registration_errors() as problems:

        @app.function("taken")  # mistake 1: duplicate name
        def again() -> None:
            return None

        @app.function(cron="0 0 31 2 *")  # mistake 2: a day that never occurs
        def never() -> None:
            return None

        @app.function  # type: ignore[arg-type]  # mistake 3: bad signature
        def two_params(a: TickerContext, b: TickerContext) -> None:
            return None

        @app.function  # fine: no problem collected
        def fine() -> None:
            return None

    assert len(problems) == 3
    assert all(isinstance(p, RegistrationError) for p in problems)
    assert [p.function for p in problems] == ["taken", "never", "two_params"]
    assert "already registered" in str(problems[0])
    assert "0 0 31 2 *" in str(problems[1])
    assert "day-of-month" in str(problems[1])
    assert "'a', 'b'" in str(problems[2]) or "a, b" in str(problems[2])
    assert app.get_function("taken") is taken
    assert app.get_function("fine") is fine


def test_collect_registration_errors_is_scoped() -> None:
    app = TickerQ()
    with collect_registration_errors() as problems:
        app.function("neg", retries=-1)(lambda: None)
    assert len(problems) == 1
    # outside the block, problems raise again
    with pytest.raises(RegistrationError):
        app.function("neg2", retries=-1)(lambda: None)
    assert len(problems) == 1


# -- request types -------------------------------------------------------------------


async def test_dataclass_request() -> None:
    app = TickerQ()

    @app.function
    def send(ctx: TickerContext[Email]) -> None:
        return None

    assert send.request_type is Email
    await app.open()
    ticker = await send.enqueue(Email(to="a@b.c", attempts=2))
    assert ticker.request == {"to": "a@b.c", "attempts": 2}
    assert type(ticker.request) is dict
    stored = await app.time_tickers.get(ticker.id)
    assert stored.request == {"to": "a@b.c", "attempts": 2}
    assert stored.status is Status.IDLE

    decoded = send.decode_request(stored.request)
    assert decoded == Email(to="a@b.c", attempts=2)
    assert isinstance(decoded, Email)

    # a dict is validated into the type (defaults filled in)
    from_dict = await app.time_tickers.add("send", request={"to": "x@y.z"})
    assert from_dict.request == {"to": "x@y.z", "attempts": 1}

    with pytest.raises(InvalidRequestError):
        await send.enqueue({"to": ["not", "a", "string"]})  # type: ignore[arg-type]
    assert await app.time_tickers.count() == 2


async def test_pydantic_model_request() -> None:
    app = TickerQ()

    @app.function
    async def bill(ctx: TickerContext[Invoice]) -> None:
        return None

    await app.open()
    due = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
    ticker = await bill.enqueue(Invoice(number="INV-1", amount=9.5, due=due))
    assert ticker.request == {"number": "INV-1", "amount": 9.5, "due": "2030-05-01T12:00:00Z"}
    stored = await app.time_tickers.get(ticker.id)
    decoded = bill.decode_request(stored.request)
    assert isinstance(decoded, Invoice)
    assert decoded == Invoice(number="INV-1", amount=9.5, due=due)
    assert decoded.due == due


async def test_typeddict_request() -> None:
    app = TickerQ()

    @app.function
    def text(ctx: TickerContext[Sms]) -> None:
        return None

    await app.open()
    ticker = await text.enqueue({"number": "+100", "text": "hi"})
    assert ticker.request == {"number": "+100", "text": "hi"}
    assert text.decode_request(ticker.request) == {"number": "+100", "text": "hi"}

    with pytest.raises(InvalidRequestError) as excinfo:
        await text.enqueue({"number": "+100"})  # type: ignore[arg-type]
    assert "text" in str(excinfo.value)
    assert await app.time_tickers.count() == 1


async def test_plain_json_request() -> None:
    app = TickerQ()

    @app.function
    async def anything(ctx: TickerContext) -> None:
        return None

    @app.function
    def untyped(ctx) -> None:  # type: ignore[no-untyped-def]
        return None

    assert anything.request_type is Any
    assert untyped.request_type is Any
    await app.open()
    payload = {"a": [1, 2.5, "x", None, True], "b": {"c": False}}
    ticker = await anything.enqueue(payload)
    assert ticker.request == payload
    assert anything.decode_request(ticker.request) == payload
    for value in (3, "text", [1, 2], None, 1.5):
        t = await untyped.enqueue(value)
        assert (await app.time_tickers.get(t.id)).request == value


async def test_function_without_request_rejects_one() -> None:
    app = TickerQ()

    @app.function
    def nothing() -> None:
        return None

    await app.open()
    ticker = await nothing.enqueue()
    assert ticker.request is None
    with pytest.raises(InvalidRequestError) as excinfo:
        await nothing.enqueue({"x": 1})  # type: ignore[arg-type]
    assert "nothing" in str(excinfo.value)
    assert "{'x': 1}" in str(excinfo.value)
    assert await app.time_tickers.count() == 1


async def test_encode_request_direct() -> None:
    app = TickerQ()

    @app.function
    def send(ctx: TickerContext[Email]) -> None:
        return None

    assert send.encode_request(Email(to="q")) == {"to": "q", "attempts": 1}
    with pytest.raises(InvalidRequestError) as excinfo:
        send.encode_request({"attempts": 2})
    assert "to" in str(excinfo.value)
    assert excinfo.value.function == "send"

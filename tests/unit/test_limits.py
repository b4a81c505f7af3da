"""Rate limits and per-key concurrency: parsing, checks and the claim's gate (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickerq import InvalidArgumentError, RateLimit, RegistrationError, TickerContext, TickerQ
from tickerq.limits import SLOTS_PER_PERIOD, Gate, Gates, check_concurrency_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "limit", "seconds"),
    [
        ("100/m", 100, 60),
        ("10/s", 10, 1),
        ("5/10s", 5, 10),
        ("1000/h", 1000, 3600),
        ("2/d", 2, 86400),
        (" 3 / 2 minutes ", 3, 120),
        ("7/0.5s", 7, 0.5),
    ],
)
def test_parse(text: str, limit: int, seconds: float) -> None:
    rate = RateLimit.parse(text)
    assert (rate.limit, rate.per.total_seconds()) == (limit, seconds)


@pytest.mark.parametrize("text", ["", "100", "100/", "/m", "0/m", "-1/m", "5/x", "5/0s", "a/m"])
def test_bad_text_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="rate limit"):
        RateLimit.parse(text)


def test_bad_values_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="True"):
        RateLimit(True, per=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="period"):
        RateLimit(5, per=timedelta(days=8))
    assert RateLimit(5, per=2.5).per == timedelta(seconds=2.5)


@given(st.integers(1, 10_000), st.sampled_from([1, 2, 10, 60, 90, 3600, 7200, 86400]))
def test_text_round_trips(limit: int, seconds: int) -> None:
    rate = RateLimit(limit, per=timedelta(seconds=seconds))
    assert RateLimit.parse(str(rate)) == rate


def test_registration_checks_limits() -> None:
    app = TickerQ(limits={"smtp": "10/s"})

    @app.function(rate_limit="smtp")
    async def mail() -> None: ...

    with pytest.raises(RegistrationError, match="'nope' is not one of the app's limits"):

        @app.function(rate_limit="nope")
        async def other() -> None: ...

    with pytest.raises(RegistrationError, match="go together"):

        @app.function(max_per_key=2)
        async def keyless() -> None: ...

    with pytest.raises(RegistrationError, match="concurrency_key must be a function"):

        @app.function(concurrency_key="tenant", max_per_key=1)  # type: ignore[arg-type]
        async def bad_key(ctx: TickerContext[dict[str, str]]) -> None: ...

    with pytest.raises(RegistrationError, match="rate limit"):

        @app.function(rate_limit="0/s")
        async def zero() -> None: ...

    with pytest.raises(InvalidArgumentError, match=r"limits\['x'\]"):
        TickerQ(limits={"x": "fast"})


async def test_a_bad_key_fails_the_enqueue_and_stores_nothing() -> None:
    app = TickerQ()

    @app.function(concurrency_key=lambda req: req["tenant"], max_per_key=1)
    async def job(ctx: TickerContext[dict[str, object]]) -> None: ...

    async with app:
        with pytest.raises(InvalidArgumentError, match="concurrency_key of 'job' failed: KeyError"):
            await job.enqueue({"other": 1})
        with pytest.raises(InvalidArgumentError, match="must return text or an integer"):
            await job.enqueue({"tenant": [1]})
        with pytest.raises(InvalidArgumentError, match="1 to 200 characters"):
            await job.enqueue({"tenant": "x" * 201})
        assert await app.time_tickers.count() == 0
        assert (await job.enqueue({"tenant": 42})).concurrency_key == "42"
    assert check_concurrency_key("f", None) is None


@given(
    st.lists(st.floats(0, 30), min_size=1, max_size=40),
    st.integers(1, 5),
    st.integers(1, 20),
)
def test_no_window_holds_more_starts_than_the_limit(
    times: list[float], limit: int, per: int
) -> None:
    """Claims at arbitrary times, each wanting 3 starts: whatever the gate admits
    (stored as the claims would store it), no window of length ``per`` holds more
    than ``limit``; and a claim is refused only while a window is full."""
    gates = Gates(buckets={"b": RateLimit(limit, per=per)}, of_function={"f": ("b",)})
    log: list[tuple[datetime, int]] = []
    for offset in sorted(times):
        now = T0 + timedelta(seconds=offset)
        gate = Gate(gates, now, [("b", at, n) for at, n in log], {})
        admitted = sum(gate.admit("f", None) for _ in range(3))
        in_window = sum(n for at, n in log if at > now - timedelta(seconds=per))
        assert admitted == min(3, limit - in_window)
        if admitted:
            log.append((now, admitted))
        gate.close()
        if admitted < 3:
            assert gates.blocked_until is not None and gates.blocked_until > now
    for at, _ in log:
        window = sum(n for other, n in log if at - timedelta(seconds=per) < other <= at)
        assert window <= limit


@given(
    per_us=st.integers(min_value=1_000, max_value=7 * 86_400 * 1_000_000),
    at_us=st.integers(min_value=0, max_value=4_000_000_000 * 1_000_000),
)
def test_a_start_is_stored_at_its_slots_end_never_before_it(per_us: int, at_us: int) -> None:
    """stored_at(now) is the first slot end at or after now: never earlier (a start
    counts at least a period), less than a slot later, and a slot is at most a
    hundredth of the period (a period holds at most 101 stored rows)."""
    rate = RateLimit(1, per=timedelta(microseconds=per_us))
    now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us)
    stored = rate.stored_at(now)
    assert now <= stored < now + rate.slot
    assert rate.slot * SLOTS_PER_PERIOD <= rate.per or rate.slot == timedelta(microseconds=1)
    assert rate.stored_at(stored) == stored  # a slot's end is its own slot
    assert rate.stored_at(stored + timedelta(microseconds=1)) == stored + rate.slot


def test_slots_keep_whole_seconds_for_periods_up_to_100_seconds() -> None:
    whole = datetime(2026, 12, 1, 10, 11, 17, tzinfo=UTC)
    for text in ("3/10s", "4/m", "50/s", "5/100s"):
        assert RateLimit.parse(text).stored_at(whole) == whole, text
    assert RateLimit.parse("1000/h").slot == timedelta(seconds=30)
    assert RateLimit.parse("10/d").slot == timedelta(minutes=10)

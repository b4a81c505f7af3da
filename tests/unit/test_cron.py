"""Tests for tickerq.cron: parsing, errors, next fire times and DST rules."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from tickerq.cron import CronExpression, next_occurrences, parse_timezone, validate
from tickerq.errors import CronError

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expr: str, tz: str, after: datetime, until: datetime) -> list[datetime]:
    return list(CronExpression.parse(expr, tz).occurrences(after, until))


# -- parsing -----------------------------------------------------------------


def test_parse_five_fields() -> None:
    cron = CronExpression.parse("  */5   *  * * *  ")
    assert cron.expression == "*/5 * * * *"
    assert cron.timezone == ZoneInfo("UTC")
    assert cron.has_seconds is False
    assert cron.next_after(utc(2026, 1, 1, 10, 2)) == utc(2026, 1, 1, 10, 5)


def test_parse_six_fields_seconds_first() -> None:
    cron = CronExpression.parse("30 15 10 * * *")
    assert cron.has_seconds is True
    assert cron.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 10, 15, 30)
    every_20s = CronExpression.parse("*/20 * * * * *")
    got = list(every_20s.occurrences(utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 1)))
    assert got == [utc(2026, 1, 1, 10, 0, 20), utc(2026, 1, 1, 10, 0, 40), utc(2026, 1, 1, 10, 1)]


def test_names_for_days_and_months() -> None:
    # 2026-01-01 is a Thursday.
    weekdays = CronExpression.parse("0 9 * * mon-fri")
    got = list(weekdays.occurrences(utc(2026, 1, 1), utc(2026, 1, 6)))
    assert got == [utc(2026, 1, 1, 9), utc(2026, 1, 2, 9), utc(2026, 1, 5, 9)]
    assert CronExpression.parse("0 0 1 Mar,SEP *").next_after(utc(2026, 3, 2)) == utc(2026, 9, 1)


def test_cronsim_extras_last_and_nth() -> None:
    assert CronExpression.parse("0 0 L * *").next_after(utc(2026, 2, 1)) == utc(2026, 2, 28)
    assert CronExpression.parse("0 0 LW * *").next_after(utc(2026, 1, 1)) == utc(2026, 1, 30)
    assert CronExpression.parse("0 9 * * MON#2").next_after(utc(2026, 1, 1)) == utc(2026, 1, 12, 9)
    assert CronExpression.parse("0 12 * * 5L").next_after(utc(2026, 1, 1)) == utc(2026, 1, 30, 12)


def test_question_mark_means_any_day() -> None:
    cron = CronExpression.parse("0 8 ? * MON")
    assert cron.next_after(utc(2026, 1, 1)) == utc(2026, 1, 5, 8)


@pytest.mark.parametrize(
    ("alias", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_aliases(alias: str, expanded: str) -> None:
    start = utc(2026, 5, 17, 13, 7)
    got = next_occurrences(alias, after=start, n=3)
    assert got == next_occurrences(expanded, after=start, n=3)
    assert CronExpression.parse(alias).expression == alias


def test_immutable_hashable_and_equal_after_normalizing() -> None:
    a = CronExpression.parse("*/5 * * * *", BERLIN)
    b = CronExpression.parse("*/5   * * * *", ZoneInfo(BERLIN))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, CronExpression.parse("*/5 * * * *")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.expression = "0 * * * *"  # type: ignore[misc]


def test_is_interval_rule() -> None:
    assert CronExpression.parse("*/15 * * * *").is_interval
    assert CronExpression.parse("0 */2 * * *").is_interval
    assert CronExpression.parse("0 8-18/2 * * *").is_interval
    assert not CronExpression.parse("30 2 * * *").is_interval
    assert not CronExpression.parse("*/15 2 * * *").is_interval
    assert not CronExpression.parse("0 1-3 * * *").is_interval


# -- next_after / occurrences / next_occurrences -----------------------------


def test_next_after_is_strict_and_returns_utc() -> None:
    cron = CronExpression.parse("0 * * * *")
    result = cron.next_after(utc(2026, 1, 1, 10))
    assert result == utc(2026, 1, 1, 11)
    assert result.tzinfo is UTC
    assert cron.next_after(datetime(2026, 1, 1, 10, 0, 0, 1, tzinfo=UTC)) == utc(2026, 1, 1, 11)
    assert cron.next_after(datetime(2026, 1, 1, 9, 59, 59, 999999, tzinfo=UTC)) == utc(
        2026, 1, 1, 10
    )


def test_next_after_accepts_any_timezone() -> None:
    cron = CronExpression.parse("0 9 * * *", BERLIN)
    tokyo = datetime(2026, 1, 1, 17, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # 08:30 UTC
    assert cron.next_after(tokyo) == utc(2026, 1, 2, 8)


def test_occurrences_window_is_after_exclusive_until_inclusive() -> None:
    cron = CronExpression.parse("0 * * * *")
    got = list(cron.occurrences(utc(2026, 1, 1, 10), utc(2026, 1, 1, 13)))
    assert got == [utc(2026, 1, 1, 11), utc(2026, 1, 1, 12), utc(2026, 1, 1, 13)]
    assert list(cron.occurrences(utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 59))) == []


def test_next_occurrences() -> None:
    got = next_occurrences("0 9 * * *", BERLIN, after=utc(2026, 1, 1), n=3)
    assert got == [utc(2026, 1, 1, 8), utc(2026, 1, 2, 8), utc(2026, 1, 3, 8)]
    assert next_occurrences("0 9 * * *", after=utc(2026, 1, 1), n=0) == []
    with pytest.raises(ValueError, match="-1"):
        next_occurrences("0 9 * * *", n=-1)


def test_next_occurrences_defaults_to_now() -> None:
    before = datetime.now(UTC)
    got = next_occurrences("* * * * *", n=2)
    assert len(got) == 2
    assert before < got[0] <= before + timedelta(minutes=1)
    assert got[1] - got[0] == timedelta(minutes=1)


def test_no_more_fires_near_the_end_of_time() -> None:
    cron = CronExpression.parse("0 0 1 1 *")
    assert next_occurrences("0 0 1 1 *", after=utc(9998, 6, 1), n=3) == [utc(9999, 1, 1)]
    with pytest.raises(CronError, match="no fire time"):
        cron.next_after(utc(9999, 6, 1))


def test_describe() -> None:
    assert CronExpression.parse("*/5 * * * *").describe() == "every fifth minute of every hour"
    text = CronExpression.parse("30 9 * * 1-5", BERLIN).describe()
    assert text == "at 09:30 on Monday through Friday"
    assert CronExpression.parse("@hourly").describe() == "at the start of every hour"


def test_describe_falls_back_to_the_expression(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: CronSim) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(CronSim, "explain", broken)
    assert CronExpression.parse("0  9 * * *").describe() == "0 9 * * *"


# -- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "value"),
    [
        ("61 * * * *", "minute", "61"),
        ("0,61 * * * *", "minute", "61"),
        ("*/0 * * * *", "minute", "*/0"),
        ("60 * * * * *", "second", "60"),
        ("0 24 * * *", "hour", "24"),
        ("0 5-2 * * *", "hour", "5-2"),
        ("0 0 32 * *", "day-of-month", "32"),
        ("0 0 0 * *", "day-of-month", "0"),
        ("0 0 31 2 *", "day-of-month", "31"),
        ("0 0 * 13 *", "month", "13"),
        ("0 0 * foo *", "month", "foo"),
        ("0 0 * * 8", "day-of-week", "8"),
        ("0 0 * * MON#6", "day-of-week", "MON#6"),
        ("0 0 * * 1,,2", "day-of-week", "''"),
    ],
)
def test_bad_field_is_named(expression: str, field: str, value: str) -> None:
    with pytest.raises(CronError) as info:
        CronExpression.parse(expression)
    assert info.value.field == field
    assert info.value.expression == expression
    message = str(info.value)
    assert field in message
    assert value in message


@pytest.mark.parametrize(("expression", "count"), [("* * * *", 4), ("1 2 3 4 5 6 7", 7), ("", 0)])
def test_wrong_field_count(expression: str, count: int) -> None:
    with pytest.raises(CronError, match=rf"expected 5 or 6 fields, got {count}") as info:
        validate(expression)
    assert info.value.field is None


def test_unknown_alias() -> None:
    with pytest.raises(CronError, match="@reboot"):
        validate("@reboot")


def test_validate_accepts_good_expressions() -> None:
    for expression in ("* * * * *", "0 0 29 2 *", "*/10 * * * * *", "@daily", "0 9 * * sun"):
        validate(expression)


def test_cron_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="minute"):
        validate("99 * * * *")


@pytest.mark.parametrize("name", ["Mars/Olympus", "America", "", "../etc/passwd", "utc"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(CronError) as info:
        CronExpression.parse("* * * * *", name)
    assert info.value.field == "timezone"
    assert f"unknown timezone {name!r}" in str(info.value)
    with pytest.raises(CronError):
        parse_timezone(name)


def test_parse_timezone_accepts_names_and_tzinfos() -> None:
    assert parse_timezone(BERLIN) == ZoneInfo(BERLIN)
    assert parse_timezone(ZoneInfo(NEW_YORK)) == ZoneInfo(NEW_YORK)
    assert parse_timezone(UTC) == ZoneInfo("UTC")
    assert parse_timezone(timezone(timedelta(hours=2))) == ZoneInfo("Etc/GMT-2")
    assert parse_timezone(timezone(timedelta(hours=-5))) == ZoneInfo("Etc/GMT+5")
    with pytest.raises(CronError, match="not whole hours") as info:
        parse_timezone(timezone(timedelta(hours=5, minutes=30)))
    assert info.value.field == "timezone"


def test_naive_datetimes_are_rejected() -> None:
    cron = CronExpression.parse("* * * * *")
    naive = datetime(2026, 1, 1, 12)
    with pytest.raises(ValueError, match=r"naive datetime\.datetime\(2026, 1, 1, 12, 0\)"):
        cron.next_after(naive)
    with pytest.raises(ValueError, match="after"):
        list(cron.occurrences(naive, utc(2026, 1, 2)))
    with pytest.raises(ValueError, match="until"):
        list(cron.occurrences(utc(2026, 1, 1), naive))
    with pytest.raises(ValueError, match="naive"):
        next_occurrences("* * * * *", after=naive)


# -- DST: Europe/Berlin 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC),
#         2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC)
# -- DST: America/New_York 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC),
#         2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC)


def test_fixed_time_in_spring_gap_fires_once_at_transition_berlin() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_fixed_time_in_spring_gap_fires_once_at_transition_new_york() -> None:
    got = fires("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 9, 12))
    assert got == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]


def test_fixed_time_in_autumn_overlap_fires_once_berlin() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # Asked from the second half of the overlap (02:10 CET), it does not fire again.
    cron = CronExpression.parse("30 2 * * *", BERLIN)
    assert cron.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_fixed_time_in_autumn_overlap_fires_once_new_york() -> None:
    got = fires("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_six_field_fixed_time_in_gap_still_fires() -> None:
    # cronsim alone skips this day entirely for 6-field expressions.
    got = fires("0 30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert got == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_fixed_hour_with_minute_step_is_fixed_time() -> None:
    # Several wall times in the gap collapse into one fire at the transition ...
    spring = fires("*/30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert spring == [utc(2026, 3, 29, 1), utc(2026, 3, 30), utc(2026, 3, 30, 0, 30)]
    # ... and overlap times fire in the first (summer-time) half only.
    autumn = fires("*/30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert autumn == [
        utc(2026, 10, 25),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1),
        utc(2026, 10, 26, 1, 30),
    ]


def test_gap_time_and_transition_time_fire_once_together() -> None:
    got = fires("0 2,3 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert got == [utc(2026, 3, 29, 1), utc(2026, 3, 30), utc(2026, 3, 30, 1)]


def test_interval_has_no_fires_in_spring_gap_berlin() -> None:
    got = fires("30 * * * *", BERLIN, utc(2026, 3, 29), utc(2026, 3, 29, 2))
    assert got == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]  # 01:30 CET, 03:30 CEST


def test_interval_has_no_fires_in_spring_gap_new_york() -> None:
    got = fires("30 * * * *", NEW_YORK, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8))
    assert got == [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)]  # 01:30 EST, 03:30 EDT


def test_interval_fires_in_both_halves_of_overlap_berlin() -> None:
    got = fires("*/15 * * * *", BERLIN, utc(2026, 10, 24, 23, 50), utc(2026, 10, 25, 2))
    # Wall 02:00-02:45 CEST, then 02:00-02:45 CET again, then 03:00 CET.
    assert got == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 15),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 0, 45),
        utc(2026, 10, 25, 1, 0),
        utc(2026, 10, 25, 1, 15),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 1, 45),
        utc(2026, 10, 25, 2, 0),
    ]
    # Asked from the first half (02:50 CEST), the next fire is 02:00 CET, not 03:00.
    cron = CronExpression.parse("*/15 * * * *", BERLIN)
    assert cron.next_after(utc(2026, 10, 25, 0, 50)) == utc(2026, 10, 25, 1)


def test_interval_hour_step_fires_in_both_halves_berlin() -> None:
    got = fires("0 */2 * * *", BERLIN, utc(2026, 10, 24, 21), utc(2026, 10, 25, 4))
    # 00:00 CEST, 02:00 CEST, 02:00 CET, 04:00 CET.
    assert got == [
        utc(2026, 10, 24, 22),
        utc(2026, 10, 25),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 3),
    ]
    cron = CronExpression.parse("0 */2 * * *", BERLIN)
    assert cron.next_after(utc(2026, 10, 25)) == utc(2026, 10, 25, 1)


def test_interval_fires_in_both_halves_of_overlap_new_york() -> None:
    got = fires("0 * * * *", NEW_YORK, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7, 30))
    assert got == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 7),
    ]  # 01 EDT, 01 EST, 02 EST


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, "Australia/Lord_Howe", "UTC"])
@pytest.mark.parametrize("start", [utc(2026, 3, 1), utc(2026, 9, 25)])
def test_every_15_minutes_follows_real_time_across_transitions(tz: str, start: datetime) -> None:
    # Whole-hour and half-hour DST shifts keep quarter hours aligned with UTC.
    got = fires("*/15 * * * *", tz, start, start + timedelta(days=45))
    assert got == [start + timedelta(minutes=15 * i) for i in range(1, 45 * 96 + 1)]


@pytest.mark.parametrize("expr", ["0 */2 * * *", "30 * * * *", "30 */20 * * * *", "0 * * * 0"])
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
def test_interval_matches_brute_force_around_transitions(expr: str, tz: str) -> None:
    zone = ZoneInfo(tz)
    cron = CronExpression.parse(expr, tz)
    step = timedelta(seconds=30) if cron.has_seconds else timedelta(minutes=1)
    for day in (utc(2026, 3, 7), utc(2026, 3, 28), utc(2026, 10, 24), utc(2026, 10, 31)):
        end = day + timedelta(days=2)
        walls = CronSim(" ".join(expr.split()), day.astimezone(zone).replace(tzinfo=None))
        wanted: set[datetime] = set()
        for wall in walls:
            if wall > (end + timedelta(hours=15)).replace(tzinfo=None):
                break
            wanted.add(wall)
        expected = []
        instant = day + step
        while instant <= end:
            if instant.astimezone(zone).replace(tzinfo=None) in wanted:
                expected.append(instant)
            instant += step
        assert list(cron.occurrences(day, end)) == expected

"""Cron expressions: parsing, validation and next fire times, DST-aware.

A thin layer over :mod:`cronsim`, which does the field parsing and the
wall-clock matching. This module adds what the scheduler needs on top:

* 5 fields (``minute hour day-of-month month day-of-week``) or 6 fields with
  seconds first, plus the ``@hourly``-style aliases and ``?`` for "any day";
* errors that name the offending field and value (:class:`CronError`);
* a timezone per expression, with fire times always returned in UTC;
* daylight-saving rules in the style of Cronos/Hangfire. A cron is
  *interval-style* when its hour field is ``*`` or a step (``*/2``, ``8-18/2``);
  it then follows real time: no fires in the spring-forward gap, and fires in
  both halves of the fall-back overlap. Any other cron is *fixed-time*: a time
  in the gap fires once, at the transition instant, and a time in the overlap
  fires once, at its first (summer-time) instance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tickerq.errors import CronError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CronExpression", "next_occurrences", "parse_timezone", "validate"]

_EPOCH = datetime(2000, 1, 1)  # naive: cronsim then matches plain wall-clock time
_SECOND = timedelta(seconds=1)

_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, with N#K (K-th in month) or NL (last in month)",
}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def parse_timezone(name: str | tzinfo) -> ZoneInfo:
    """Return the :class:`ZoneInfo` for an IANA name or a tzinfo; raise CronError if unknown."""
    if isinstance(name, ZoneInfo):
        return name
    if isinstance(name, timezone):
        offset = name.utcoffset(None)
        if offset == timedelta(0):
            return ZoneInfo("UTC")
        hours, rest = divmod(offset, timedelta(hours=1))
        if rest:
            raise CronError(str(name), f"fixed offset {name} is not whole hours", "timezone")
        # The Etc/ zones have their sign inverted: Etc/GMT-2 is UTC+02:00.
        return ZoneInfo(f"Etc/GMT{-hours:+d}")
    if isinstance(name, tzinfo):
        key = getattr(name, "key", None) or getattr(name, "zone", None)
        if not isinstance(key, str):
            raise CronError(repr(name), f"cannot map tzinfo {name!r} to an IANA name", "timezone")
        name = key
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(name, f"unknown timezone {name!r}", "timezone") from None


def _require_aware(value: datetime, what: str) -> datetime:
    """Return ``value`` in UTC, or raise ValueError if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


def _split(expression: str) -> tuple[list[str], bool]:
    """Expand an alias and return the six cronsim fields (seconds first) and has_seconds."""
    text = _ALIASES.get(expression.lower(), expression)
    if text.startswith("@"):
        known = ", ".join(_ALIASES)
        raise CronError(expression, f"unknown alias {text!r} (known: {known})")
    parts = text.split()
    if len(parts) not in (5, 6):
        raise CronError(expression, f"expected 5 or 6 fields, got {len(parts)}")
    has_seconds = len(parts) == 6
    six = parts if has_seconds else ["0", *parts]
    for i in (3, 5):  # Quartz-style "?" means "any day", as "*" does
        if six[i] == "?":
            six[i] = "*"
    return six, has_seconds


def _term_ok(index: int, term: str) -> bool:
    """Return True if cronsim accepts ``term`` alone in field ``index``."""
    if not term:  # "1,,2": an empty item
        return False
    probe = ["0", "*", "*", "*", "*", "*"]
    probe[index] = term
    try:
        CronSim(" ".join(probe), _EPOCH)
    except CronSimError:
        return False
    return True


def _check_fields(expression: str, six: list[str]) -> None:
    """Raise CronError naming the first field (and item) cronsim rejects."""
    for index, (name, text) in enumerate(zip(_FIELDS, six, strict=True)):
        for term in text.split(","):
            if not _term_ok(index, term):
                problem = f"{term!r} is not a valid {name} (allowed: {_ALLOWED[name]})"
                raise CronError(expression, problem, name)


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """Return the UTC instant in ``(before, after]`` where the offset of ``zone`` changes."""
    target = after.astimezone(zone).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:  # transitions fall on whole seconds
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A validated cron expression bound to a timezone; immutable and hashable.

    Build one with :meth:`parse`. ``expression`` is the text as given with
    whitespace collapsed; ``has_seconds`` is true for the 6-field form.
    """

    expression: str
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    has_seconds: bool = field(init=False)
    _template: CronSim = field(init=False, repr=False, compare=False)
    _interval: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Normalize, validate and pre-parse the expression (raises CronError)."""
        text = " ".join(str(self.expression).split())
        six, has_seconds = _split(text)
        _check_fields(text, six)
        try:
            template = CronSim(" ".join(six), _EPOCH)
        except CronSimError:  # every field is fine alone: a day/month mismatch
            problem = f"day {six[3]!r} never occurs in month {six[4]!r}"
            raise CronError(text, problem, "day-of-month") from None
        hour = six[2]
        object.__setattr__(self, "expression", text)
        object.__setattr__(self, "timezone", parse_timezone(self.timezone))
        object.__setattr__(self, "has_seconds", has_seconds)
        object.__setattr__(self, "_template", template)
        object.__setattr__(self, "_interval", hour.startswith("*") or "/" in hour)

    @classmethod
    def parse(cls, expression: str, timezone: str | tzinfo = "UTC") -> CronExpression:
        """Parse ``expression`` for ``timezone`` (IANA name or tzinfo); raise CronError."""
        return cls(expression, parse_timezone(timezone))

    @property
    def is_interval(self) -> bool:
        """True when the hour field is ``*`` or a step, so DST follows real time."""
        return self._interval

    def next_after(self, after: datetime) -> datetime:
        """Return the first fire time strictly after ``after`` (aware), as aware UTC."""
        found = self._next(_require_aware(after, "after"))
        if found is None:
            raise CronError(self.expression, f"no fire time after {after.isoformat()}")
        return found

    def occurrences(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Yield the fire times in ``(after, until]`` in order, as aware UTC."""
        current = _require_aware(after, "after")
        end = _require_aware(until, "until")
        while (found := self._next(current)) is not None and found <= end:
            yield found
            current = found

    def describe(self) -> str:
        """Return a short English description, or the expression if none is available."""
        try:
            text = self._template.explain()
        except Exception:  # explain() is best effort; any failure falls back
            return self.expression
        return text[:1].lower() + text[1:] if text else self.expression

    # -- internals ---------------------------------------------------------

    def _walk(self, start: datetime) -> CronSim:
        """Return a cronsim iterator over naive wall times strictly after ``start``."""
        walker = copy.copy(self._template)  # shares the parsed field sets: no re-parse
        walker.dt = start.replace(microsecond=0)
        return walker

    def _instants(self, wall: datetime) -> tuple[datetime, datetime]:
        """Return the UTC instants of a naive wall time read with fold=0 and fold=1.

        Equal for an ordinary time; first < second inside an overlap; first >
        second for a wall time that does not exist (in a gap).
        """
        zone = self.timezone
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        return first, second

    def _next(self, after: datetime) -> datetime | None:
        """Return the next fire strictly after ``after`` (UTC), None if there is none."""
        local = after.astimezone(self.timezone)
        wall, second_half = local.replace(tzinfo=None), local.fold == 1
        overlap = self._overlap(wall)
        try:
            if not self._interval:
                # Fixed-time: overlap wall times fire only in the first half, so
                # from the second half resume at the end of the overlap.
                start = overlap[1] - _SECOND if overlap and second_half else wall
                return self._first_past(after, start, fold=None)
            if overlap is None:
                return self._first_past(after, wall, fold=0)
            if second_half:
                return self._first_past(after, wall, fold=1)
            # First half of an overlap: the wall times already passed fire again
            # in the second half, so take the earlier of the two readings.
            found = [
                self._first_past(after, wall, fold=0),
                self._first_past(after, overlap[0] - _SECOND, fold=1),
            ]
            return min((f for f in found if f is not None), default=None)
        except OverflowError:  # walked past datetime.max
            return None

    def _first_past(self, after: datetime, start: datetime, fold: int | None) -> datetime | None:
        """Walk wall times after ``start``; return the first whose instant is past ``after``.

        Each wall time is read with ``fold`` (0: first, 1: second reading of an
        overlap time). A wall time in a gap is skipped, or with ``fold=None``
        (fixed-time) fires at the transition; the instants then never decrease
        as the walk goes on, so the first one past ``after`` is the answer.
        """
        walker = self._walk(start)
        while (candidate := next(walker, None)) is not None:
            first, second = self._instants(candidate)
            if first > second:  # the wall time does not exist
                turn = _transition(self.timezone, second, first)
                if fold is None and turn > after:
                    return turn
                resume = turn.astimezone(self.timezone).replace(tzinfo=None)
                walker = self._walk(resume - _SECOND)
                continue
            instant = second if fold == 1 else first
            if instant > after:
                return instant
        return None

    def _overlap(self, wall: datetime) -> tuple[datetime, datetime] | None:
        """Return the naive (start, end) wall times of the overlap holding ``wall``."""
        first, second = self._instants(wall)
        if first >= second:
            return None
        turn = _transition(self.timezone, first, second)
        end = turn + (second - first)
        zone = self.timezone
        return turn.astimezone(zone).replace(tzinfo=None), end.astimezone(zone).replace(tzinfo=None)


def validate(expression: str) -> None:
    """Raise CronError if ``expression`` is not a valid cron expression."""
    CronExpression.parse(expression)


def next_occurrences(
    expression: str,
    timezone: str | tzinfo = "UTC",
    after: datetime | None = None,
    n: int = 5,
) -> list[datetime]:
    """Return the next ``n`` fire times (aware UTC) after ``after`` (default: now)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cron = CronExpression.parse(expression, timezone)
    current = _require_aware(after, "after") if after is not None else datetime.now(UTC)
    result: list[datetime] = []
    while len(result) < n and (found := cron._next(current)) is not None:
        result.append(found)
        current = found
    return result

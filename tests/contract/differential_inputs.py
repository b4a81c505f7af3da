"""What the differential test (test_differential.py) hands tickerq.

Strategies for the values a user passes to the API: JSON payloads of every type
(big and negative ints, integral floats, -0.0, 1e300, unicode, nesting; a bare
number as the whole payload too), aware datetimes in many zones, in the past and
the future and at DST edges, retry plans, descriptions, cron expressions; and the
bad values the API must refuse, each put into an otherwise good call.

``KNOWN_BUGS`` holds the guards that narrow these around bugs not fixed yet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

# -- guards -----------------------------------------------------------------------------

GUARDS = {
    "memory-aware-non-utc": "issue 8 item 8: aware datetimes are handed to the API in UTC "
    "(the memory store keeps and returns other offsets)",
    "sqlite-bare-number": "issue 8 item 1: no payload is a bare number, no `measure` jobs "
    "(SQLite's NUMERIC affinity turns 1.0 into 1 and strands the claim)",
    "text-search-unicode": "NEW: descriptions lower-case the same in every store "
    "(query(text=...) folds case in Python on memory, ASCII-only on SQLite, by collation "
    "on PostgreSQL)",
    "id-search-dashes": "NEW: ids are searched for with their dashes, by pieces with a "
    "hex digit (query(text=...) ignores dashes in ids on SQLite and PostgreSQL, not on "
    "memory, so 'abcd' finds '...ab-cd...' only there, and '-' finds every ticker on memory)",
    "memory-stale-finished-at": "NEW: finished_at of an IDLE time ticker is not compared "
    "(after retry() of an ended ticker and a failed attempt with retries left, the memory "
    "store still shows the old end; SQLite and PostgreSQL show None)",
    "memory-cancelled-child-released": "NEW: chain children that start with their parent "
    "(run_condition IN_PROGRESS) are not cancelled (when the parent starts, the memory store "
    "moves a cancelled child's execution_time and updated_at and schedules it again)",
    "seeded-cron-edit": "issue 8 item 6: the seeded cron ticker (c0) keeps its expression "
    "(edit it, restart: memory seeds a second one, SQLite and PostgreSQL do not)",
    "input-bounds": "issue 8 item 9: no hostile value that some store accepts and another "
    "refuses, or that is refused with a non-TickerQError, or that strands a row",
}
"""Every guard there is, and what it narrows while it is on."""

_ON = frozenset(
    {
        "text-search-unicode",
        "id-search-dashes",
    }
)

KNOWN_BUGS: frozenset[str] = frozenset(
    _ON
    if os.environ.get("TICKERQ_DIFF_GUARDS") is None
    else filter(None, os.environ["TICKERQ_DIFF_GUARDS"].split(","))
)
"""Guards on: bugs of issue 8 (and new ones) not fixed on this branch yet. Each narrows the
generated data so that the test keeps finding *other* discrepancies. Take a guard out of
``_ON`` once its fix has landed (the test must then pass without it). To see a guarded
bug, run with ``TICKERQ_DIFF_GUARDS=`` (none) or a comma-separated list of guards."""
if KNOWN_BUGS - GUARDS.keys():
    raise ValueError(f"unknown guards in TICKERQ_DIFF_GUARDS: {sorted(KNOWN_BUGS - GUARDS.keys())}")

# -- times ------------------------------------------------------------------------------

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kathmandu",  # +05:45, no DST
    "America/St_Johns",  # -03:30 / -02:30
    "Pacific/Kiritimati",  # +14
    "Pacific/Pago_Pago",  # -11
)
"""IANA zones of generated datetimes and cron tickers."""

STARTS = (
    datetime(2026, 3, 7, 12, 0, tzinfo=UTC),  # the day before US spring-forward
    datetime(2026, 3, 28, 12, 0, tzinfo=UTC),  # the day before EU spring-forward
    datetime(2026, 4, 4, 6, 0, tzinfo=UTC),  # fall-back in Santiago, Lord Howe, Chatham
    datetime(2026, 10, 3, 6, 0, tzinfo=UTC),  # spring-forward in Lord Howe
    datetime(2026, 10, 24, 12, 0, tzinfo=UTC),  # the day before EU fall-back
    datetime(2026, 10, 31, 12, 0, tzinfo=UTC),  # the day before US fall-back
)
"""Where the manual clocks of an example start: a day or so before DST changes."""


def transitions(zone: str, start: datetime, days: int = 4) -> list[datetime]:
    """UTC instants in [start - 1 day, start + days] where ``zone``'s offset changes."""
    tz = ZoneInfo(zone)
    out = []
    t = start - timedelta(days=1)
    step = timedelta(minutes=15)
    before = t.astimezone(tz).utcoffset()
    while t < start + timedelta(days=days):
        t += step
        offset = t.astimezone(tz).utcoffset()
        if offset != before:
            out.append(t)  # every zone here changes on a quarter hour
            before = offset
    return out


EDGES = {start: [(z, e) for z in ZONES for e in transitions(z, start)] for start in STARTS}
"""For each start, the DST changes (zone, UTC instant) near it."""


@dataclass(frozen=True)
class When:
    """A generated execution time, made concrete against the clock of the example.

    ``base`` "now": the clock's time plus ``seconds``, shown in ``zone``;
    "edge": the wall time ``seconds`` after a DST change near the start, read with
    the offset from *before* the change (so it may fall in the gap or the overlap),
    with ``fold``; "fixed": the clock's time plus ``seconds`` at a fixed UTC offset of
    ``fold`` minutes.
    """

    base: str
    seconds: float
    zone: str = "UTC"
    fold: int = 0
    edge: int = 0

    def at(self, now: datetime, start: datetime) -> datetime:
        """The aware datetime this stands for (in UTC under the item-8 guard)."""
        return to_api(self._at(now, start))

    def _at(self, now: datetime, start: datetime) -> datetime:
        if self.base == "now":
            return (now + timedelta(seconds=self.seconds)).astimezone(ZoneInfo(self.zone))
        if self.base == "fixed":
            tz = timezone(timedelta(minutes=self.fold))
            return (now + timedelta(seconds=self.seconds)).astimezone(tz)
        edges = EDGES[start]
        zone, instant = edges[self.edge % len(edges)]
        tz = ZoneInfo(zone)
        old_offset = (instant - timedelta(microseconds=1)).astimezone(tz).utcoffset()
        assert old_offset is not None
        wall = (instant + timedelta(seconds=self.seconds)).replace(tzinfo=None) + old_offset
        return wall.replace(tzinfo=tz, fold=self.fold)


def to_api(value: Any) -> Any:
    """``value`` as handed to the API: an aware datetime becomes UTC while the
    ``memory-aware-non-utc`` guard is on (item 8 of issue 8)."""
    if "memory-aware-non-utc" in KNOWN_BUGS and isinstance(value, datetime) and value.utcoffset():
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return value
    return value


def _offset_seconds(limit: int) -> st.SearchStrategy[float]:
    whole = st.integers(-limit, limit).map(float)
    special = st.sampled_from([0.0, -1.0, 1.0, 59.999999, 60.0, 3600.0, 0.000001, -0.5])
    precise = st.tuples(st.integers(-limit, limit), st.integers(0, 999_999)).map(
        lambda p: p[0] + p[1] / 1e6
    )
    return st.one_of(special, whole, precise)


whens: st.SearchStrategy[When] = st.one_of(
    st.builds(
        When,
        base=st.just("now"),
        seconds=_offset_seconds(3 * 86400),
        zone=st.sampled_from(ZONES),
    ),
    st.builds(
        When,
        base=st.just("edge"),
        seconds=st.integers(-5400, 5400).map(float),
        fold=st.integers(0, 1),
        edge=st.integers(0, 40),
    ),
    st.builds(
        When,
        base=st.just("fixed"),
        seconds=_offset_seconds(2 * 86400),
        fold=st.integers(-14 * 60 + 1, 14 * 60 - 1),
    ),
)
"""Execution times: in the past and the future, in many zones, at DST edges."""

# -- JSON payloads ----------------------------------------------------------------------

BIG_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**70, -(2**70), 10**30]
ODD_FLOATS = [1.0, -0.0, 0.0, 2.5, -2.5, 1e300, -1e300, 5e-324, 1e16, 1e-7, 0.1, 1e21, 123.0]
ODD_TEXT = ["", "5", "1.0", "null", "true", "é", "☃ snow", "\u2028", "'\"\\", "%_", "NUL\x00"]

numbers: st.SearchStrategy[int | float] = st.one_of(
    st.sampled_from(BIG_INTS),
    st.sampled_from(ODD_FLOATS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
"""Every kind of JSON number: small, big (beyond 64 bits), negative, integral floats, -0.0."""

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.sampled_from(ODD_TEXT),
    st.text(max_size=8),
)


def _bare_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=4))
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3))


payloads: st.SearchStrategy[Any] = st.recursive(_scalars, _containers, max_leaves=6)
if "sqlite-bare-number" in KNOWN_BUGS:
    payloads = payloads.filter(lambda v: not _bare_number(v))
"""JSON values of every type, bare or nested; a bare number is the whole payload too."""


# -- other arguments --------------------------------------------------------------------

_text_chars = st.characters(
    codec="utf-8", exclude_characters="\x00" if "input-bounds" in KNOWN_BUGS else ""
)
DESCRIPTIONS = ("Report", "über Straße", "ÜBER", "Éclair", "ΣΊΣΥΦΟΣ", "İstanbul", "100%_done")
SEARCHES = ("é", "ü", "Ü", "ß", "σίσυφος", "ς", "i̇", "%", "_", "report", "sync")
"""Texts to search tickers by (query(text=...)): matching the descriptions above in
several cases, LIKE wildcards; never all hex digits (ids are random per store)."""


def _case_safe(text: str) -> bool:
    """True when lower-casing ``text`` changes ASCII letters only."""
    return all(c.isascii() or c.lower() == c for c in text)


descriptions = st.one_of(
    st.just(""),
    st.sampled_from(DESCRIPTIONS),
    st.text(_text_chars, max_size=12),
)
if "text-search-unicode" in KNOWN_BUGS:
    descriptions = descriptions.filter(_case_safe)
retry_counts = st.integers(0, 3)
retry_plans = st.one_of(
    st.none(),
    st.lists(st.sampled_from([0, 1, 0.5, 30, 90, 600, 3600, 0.000001, 1.2345678]), max_size=3),
)
timeouts = st.one_of(st.none(), st.sampled_from([1, 2.5, 3600]))

EXPRESSIONS = (
    "0 * * * *",
    "*/30 * * * *",
    "30 2 * * *",
    "0 2 * * *",
    "15 1 * * *",
    "0 0 * * *",
    "45 */6 * * *",
    "0 9 * * 1-5",
    "0 0 29 2 *",
    "0 30 2 * * *",
    "0 12 * * 0",
)
"""Cron expressions: hourly and daily ones, fires in DST gaps and overlaps, rare ones."""

ADVANCES = (0.0, 0.000001, 1.0, 59.0, 60.0, 61.0, 600.0, 1799.5, 3600.0, 4 * 3600.0, 86400.0)
"""How far one step moves the clocks (seconds)."""

# -- bad input ----------------------------------------------------------------------------


class _Opaque:
    def __repr__(self) -> str:
        return "<not JSON>"


class _Long(str):
    """A long string with a short repr (hypothesis prints the examples it runs)."""

    def __new__(cls, text: str, times: int) -> _Long:
        made = super().__new__(cls, text * times)
        made.shown = f"<{text!r} * {times}>"
        return made

    shown: str

    def __repr__(self) -> str:
        return self.shown


class _Deep(list[Any]):
    """A list nested ``depth`` deep, with a short repr (hypothesis prints examples, and
    Python's parser chokes on the full one)."""

    def __init__(self, depth: int) -> None:
        value: Any = 0
        for _ in range(depth - 1):
            value = [value]
        super().__init__([value])
        self.depth = depth

    def __repr__(self) -> str:
        return f"<list nested {self.depth} deep>"


def _unguarded(*cases: tuple[Any, ...]) -> tuple[tuple[str, Any], ...]:
    """The cases ``(argument, value[, guard])`` whose guard is not in KNOWN_BUGS."""
    return tuple((c[0], c[1]) for c in cases if len(c) == 2 or c[2] not in KNOWN_BUGS)


BAD_TIME_TICKER_ARGS = _unguarded(
    ("function", "no_such_function"),
    ("function", ""),
    ("execution_time", datetime(2026, 3, 2, 9, 0)),  # naive
    ("execution_time", "2026-03-02T09:00:00Z"),
    ("execution_time", datetime(1, 1, 1, tzinfo=UTC)),
    ("execution_time", datetime(1, 1, 1, 5, tzinfo=ZoneInfo("Asia/Tokyo")), "input-bounds"),
    ("execution_time", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    (
        "execution_time",
        datetime(9999, 12, 31, 20, tzinfo=ZoneInfo("America/New_York")),
        "input-bounds",
    ),
    ("request", math.nan),
    ("request", {"a": [math.inf]}),
    ("request", _Opaque()),
    ("request", b"bytes"),
    ("request", {1, 2}),
    ("request", {("tuple", "key"): 1}),
    ("request", _Deep(400)),
    ("request", _Long("x", 1_000_001)),
    ("request", "NUL \x00 inside"),
    ("description", 123, "input-bounds"),
    ("description", None, "input-bounds"),
    ("description", "NUL \x00 inside", "input-bounds"),
    ("description", "\ud800 lone surrogate", "input-bounds"),
    ("description", _Long("d", 100_000)),
    ("retries", -1),
    ("retries", True),
    ("retries", "2"),
    ("retries", 1.5),
    ("retries", 2**70, "input-bounds"),
    ("retry_intervals", [-1]),
    ("retry_intervals", [math.nan]),
    ("retry_intervals", [math.inf]),
    ("retry_intervals", "10"),
    ("retry_intervals", [True]),
    ("retry_intervals", [1e300], "input-bounds"),
    ("retry_intervals", [10**20], "input-bounds"),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", math.nan),
    ("timeout", True),
    ("timeout", "5"),
    ("after", math.nan),
    ("after", "10"),
    ("after", 1e300, "input-bounds"),
)
"""One bad argument each, put into an otherwise good ``time_tickers.add`` call. Some are
accepted today (issue 8 item 9); then they must be accepted alike and behave alike."""

BAD_CRON_ARGS = _unguarded(
    ("function", "no_such_function"),
    ("expression", "61 * * * *"),
    ("expression", "* * * *"),
    ("expression", ""),
    ("expression", "* * * * * * *"),
    ("expression", "0 0 31 2 *"),
    ("expression", "x" * 10_000),
    ("timezone", "Mars/Olympus_Mons"),
    ("timezone", ""),
    ("timezone", "../../etc/passwd"),
    ("timezone", 123),
    ("misfire", "sometimes"),
    ("retries", -1),
    ("retries", 2**70, "input-bounds"),
    ("retry_intervals", [math.inf]),
    ("request", math.nan),
    ("description", 5, "input-bounds"),
    ("description", "NUL \x00 inside", "input-bounds"),
    ("enabled", "yes", "input-bounds"),
    ("enabled", 1),
    ("enabled", None, "input-bounds"),
)
"""One bad argument each, put into an otherwise good ``cron_tickers.add`` call."""

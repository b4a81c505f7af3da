"""Flow control that holds across the cluster: rate limits and per-key concurrency.

A **rate limit** (:class:`RateLimit`, written ``"100/m"``) allows at most
``limit`` starts in any window of length ``per``: a function's own
(``@app.function(rate_limit="100/m")``), a named one shared by functions
(``TickerQ(limits={"smtp": "10/s"})`` and ``rate_limit="smtp"``) and one for
the whole app (``TickerQ(rate_limit=...)``). A **per-key concurrency** limit
(``@app.function(concurrency_key=lambda req: req.tenant_id, max_per_key=1)``)
allows at most ``max_per_key`` runs at once of the tickers whose key (computed
from the request at enqueue and stored with the row) is the same.

Both are kept by the store's claim, so every node counts the same starts and the
same running rows: a job held back stays IDLE (no attempt used, not failed) and
starts once allowed. :class:`Gates` is what the engine hands the claim; the
claim opens a :class:`Gate` on what is stored (the recent starts of each rate
limit, the running rows of each key) and admits rows through it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tickerq.errors import InvalidArgumentError

__all__ = ["MAX_KEY_LENGTH", "Gate", "Gates", "RateLimit", "rate_limit_text"]

MAX_KEY_LENGTH = 200
"""The longest concurrency key (as stored)."""

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+?)s?\s*$")
_MAX_LIMIT = 1_000_000
_MAX_PER = timedelta(days=7)
SLOTS_PER_PERIOD = 100
"""A rate limit stores its starts by slot, at most this many in a period (see
:meth:`RateLimit.stored_at`)."""
_SLOT_STEPS = sorted(
    {m * 10**e for e in range(6) for m in (1, 2, 5)}
    | {s * 1_000_000 for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)}
)
"""The slot lengths in microseconds: each divides a second, a minute or an hour
(a start at a whole second is stored at that second for periods up to 100 s)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` starts in any window of length ``per``, across the cluster.

    ``RateLimit(100, per=timedelta(minutes=1))`` or ``RateLimit.parse("100/m")``
    (units ``s``, ``m``, ``h``, ``d``, with an optional count: ``"5/10s"``).
    """

    limit: int
    per: timedelta

    def __post_init__(self) -> None:
        limit, per = self.limit, self.per
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
            raise InvalidArgumentError(
                f"a rate limit's limit must be an integer from 1 to {_MAX_LIMIT:,}, got {limit!r}"
            )
        if isinstance(per, int | float) and not isinstance(per, bool):
            per = timedelta(seconds=per)
            object.__setattr__(self, "per", per)
        if not isinstance(per, timedelta) or not timedelta(milliseconds=1) <= per <= _MAX_PER:
            raise InvalidArgumentError(
                f"a rate limit's period must be from 1 ms to 7 days, got {self.per!r}"
            )

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"100/m"``, ``"10/s"``, ``"5/10s"``, ``"1000/h"``, ``"2/d"``."""
        match = _RATE.match(text.lower()) if isinstance(text, str) else None
        if match is None or match.group(3) not in _UNITS:
            raise InvalidArgumentError(
                f"a rate limit is written like '100/m' (units s, m, h, d), got {text!r}"
            )
        count, span, unit = match.groups()
        try:
            seconds = (float(span) if span else 1.0) * _UNITS[unit]
        except ValueError:
            raise InvalidArgumentError(f"bad period in rate limit {text!r}") from None
        return cls(int(count), timedelta(seconds=seconds))

    @property
    def slot(self) -> timedelta:
        """How long a slot of stored starts lasts: the longest step of
        1/2/5 x 10^k microseconds (or 1 s ... 1 h, each dividing the next unit)
        that is at most a hundredth of the period."""
        most = self.per // SLOTS_PER_PERIOD // _MICROSECOND
        return timedelta(microseconds=max((s for s in _SLOT_STEPS if s <= most), default=1))

    def stored_at(self, now: datetime) -> datetime:
        """When a start at ``now`` is stored: the end of its slot (``now`` itself
        when it falls on a slot's end). One stored row per slot keeps a period's
        rows at most :data:`SLOTS_PER_PERIOD` + 1, whatever the throughput and the
        period; a start counts until its slot's end plus the period, never less
        than the period after it (at most a hundredth of the period longer)."""
        step = self.slot // _MICROSECOND
        at = (now - _EPOCH) // _MICROSECOND
        return _EPOCH + timedelta(microseconds=-(-at // step) * step)

    def __str__(self) -> str:
        return rate_limit_text(self)


def rate_limit_text(rate: RateLimit) -> str:
    """``rate`` as it is written: ``100/m``, ``5/10s``."""
    seconds = rate.per.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{rate.limit}/{unit}" if n == 1 else f"{rate.limit}/{n}{unit}"
    return f"{rate.limit}/{seconds:g}s"


def as_rate_limit(value: Any, what: str) -> RateLimit:
    """A RateLimit given as one or as its text; InvalidArgumentError naming ``what``."""
    if isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        try:
            return RateLimit.parse(value)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{what}: {exc}") from None
    raise InvalidArgumentError(f"{what} must be a RateLimit or text like '100/m', got {value!r}")


def looks_like_rate(text: str) -> bool:
    """Whether ``text`` is written as a rate (``100/m``) rather than a limit's name."""
    return "/" in text


APP_BUCKET = "app"
"""The bucket of the app-wide rate limit."""


def function_bucket(function: str) -> str:
    """The bucket of a function's own rate limit."""
    return "function:" + function


def named_bucket(name: str) -> str:
    """The bucket of a named (shared) rate limit."""
    return "limit:" + name


def limit_label(bucket: str) -> str:
    """How a bucket is shown: ``app``, ``own`` (a function's own limit) or the name
    of a shared limit."""
    if bucket.startswith("function:"):
        return "own"
    return bucket.removeprefix("limit:")


@dataclass(slots=True)
class Gates:
    """The cluster-wide limits a claim keeps, built by the engine from the app's
    configuration; the claim reports back what it held back.

    ``buckets`` maps each rate limit's bucket to its limit, ``of_function`` each
    rate-limited function to its buckets (its own, a named one, the app's), and
    ``per_key`` each function with a per-key limit to its ``max_per_key``.
    """

    buckets: dict[str, RateLimit] = field(default_factory=dict)
    of_function: dict[str, tuple[str, ...]] = field(default_factory=dict)
    per_key: dict[str, int] = field(default_factory=dict)
    app_wide: bool = False
    """The app-wide limit applies to every function (not only those in of_function)."""
    blocked_until: datetime | None = None
    """Set by a claim: the earliest time a rate limit that held work back lets more start."""
    blocked: bool = False
    """Set by a claim: a limit held due work back (an end elsewhere may free it)."""

    def buckets_of(self, function: str) -> tuple[str, ...]:
        """The rate limits a start of ``function`` counts against."""
        own = self.of_function.get(function, ())
        if self.app_wide and APP_BUCKET not in own:
            return (*own, APP_BUCKET)
        return own

    def applies_to(self, functions: Collection[str]) -> bool:
        """Whether any of ``functions`` has a limit here (else the claim ignores the gates)."""
        if self.app_wide:
            return bool(functions)
        return any(f in self.of_function or f in self.per_key for f in functions)

    def stored_at(self, bucket: str, now: datetime) -> datetime:
        """When the starts a claim at ``now`` makes under ``bucket`` are stored
        (see :meth:`RateLimit.stored_at`)."""
        return self.buckets[bucket].stored_at(now)

    def buckets_for(self, functions: Iterable[str]) -> list[str]:
        """The buckets starts of ``functions`` count against, sorted (the lock order)."""
        out: set[str] = set()
        for f in functions:
            out.update(self.buckets_of(f))
        return sorted(out)


@dataclass(slots=True)
class _Bucket:
    limit: RateLimit
    used: int = 0
    starts: list[tuple[datetime, int]] = field(default_factory=list)
    taken: int = 0


class Gate:
    """One claim's view of the limits: the starts already in each rate limit's
    window and the running rows of each key, read from the store under the claim's
    locks; :meth:`admit` decides row by row and counts what it admits.

    ``starts`` are (bucket, started_at, count) of recent starts (older ones are
    ignored); ``running`` counts running rows by (function, key); ``spare``
    counts, by function, what a key with no running row counts as running (room
    other nodes hold ahead: see :mod:`tickerq.stores.sql.prepaid`).
    """

    def __init__(
        self,
        gates: Gates,
        now: datetime,
        starts: Iterable[tuple[str, datetime, int]],
        running: Mapping[tuple[str, str], int],
        spare: Mapping[str, int] | None = None,
    ) -> None:
        self.gates = gates
        self.now = now
        self._buckets = {name: _Bucket(limit) for name, limit in gates.buckets.items()}
        for name, at, count in starts:
            bucket = self._buckets.get(name)
            if bucket is not None and at > now - bucket.limit.per:
                bucket.used += count
                bucket.starts.append((at, count))
        self._running = dict(running)
        self._spare = dict(spare or {})
        self.held = False
        """Whether a limit held something back (a function or key at its limit)."""

    def may_start(self, function: str) -> bool:
        """Whether every rate limit of ``function`` has room for one more start."""
        for name in self.gates.buckets_of(function):
            bucket = self._buckets.get(name)
            if bucket is not None and bucket.used + bucket.taken >= bucket.limit.limit:
                self.held = True
                return False
        return True

    def room(self, function: str) -> int | None:
        """Starts of ``function`` its rate limits allow now (None: no rate limit)."""
        rooms = [
            b.limit.limit - b.used - b.taken
            for name in self.gates.buckets_of(function)
            if (b := self._buckets.get(name)) is not None
        ]
        return max(min(rooms), 0) if rooms else None

    def saturated_keys(self, functions: Iterable[str]) -> dict[str, list[str]]:
        """By function (with a per-key limit), the keys at their limit now."""
        out: dict[str, list[str]] = {}
        per_key = self.gates.per_key
        for (function, key), count in self._running.items():
            limit = per_key.get(function)
            if limit is not None and count >= limit:
                out.setdefault(function, []).append(key)
        wanted = set(functions)
        found = {f: sorted(keys) for f, keys in out.items() if f in wanted}
        if found:
            self.held = True
        return found

    def admit(self, function: str, key: str | None) -> bool:
        """Whether a row of ``function`` with concurrency ``key`` may start now;
        if so, it is counted (a start in each rate limit, a run of the key)."""
        limit = self.gates.per_key.get(function)
        spare = self._spare.get(function, 0)
        if (
            limit is not None
            and key is not None
            and self._running.get((function, key), spare) >= limit
        ):
            self.held = True
            return False
        if not self.may_start(function):
            return False
        for name in self.gates.buckets_of(function):
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.taken += 1
        if limit is not None and key is not None:
            self._running[(function, key)] = self._running.get((function, key), spare) + 1
        return True

    def count(self, taken: Mapping[str, int], *, held: bool) -> None:
        """Count starts admitted elsewhere (a claim that decided in SQL), by bucket,
        and whether it held something back."""
        for name, n in taken.items():
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.taken += n
        self.held = self.held or held

    def taken(self) -> dict[str, int]:
        """Starts admitted by this claim, by bucket (to store)."""
        return {name: b.taken for name, b in self._buckets.items() if b.taken}

    def expired(self, starts: Iterable[tuple[Any, str, datetime]]) -> list[Any]:
        """The ids of stored starts (id, bucket, started_at) no window needs any more."""
        out = []
        for ident, name, at in starts:
            bucket = self._buckets.get(name)
            if bucket is None or at <= self.now - bucket.limit.per:
                out.append(ident)
        return out

    def close(self) -> None:
        """Report to the gates what was held back and when a full rate limit frees."""
        until: datetime | None = None
        for bucket in self._buckets.values():
            limit = bucket.limit.limit
            if bucket.used + bucket.taken < limit:
                continue
            # Room for one more start comes when enough of the window's starts age
            # out: the oldest ones first (this claim's own are stored at its slot's end).
            excess = bucket.used + bucket.taken - limit + 1
            frees = bucket.limit.stored_at(self.now) + bucket.limit.per
            for at, count in sorted(bucket.starts):
                excess -= count
                if excess <= 0:
                    frees = at + bucket.limit.per
                    break
            until = frees if until is None else min(until, frees)
        self.gates.blocked_until = until
        self.gates.blocked = self.held or until is not None


def check_concurrency_key(function: str, value: Any) -> str | None:
    """The stored form of what a function's ``concurrency_key`` returned: text of
    at most :data:`MAX_KEY_LENGTH` characters (None: the ticker has no key)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidArgumentError(
            f"the concurrency_key of {function!r} must return text or an integer, "
            f"got {type(value).__name__} {value!r:.80}"
        )
    text = str(value)
    if not text or len(text) > MAX_KEY_LENGTH or "\x00" in text:
        raise InvalidArgumentError(
            f"the concurrency key of {function!r} must be 1 to {MAX_KEY_LENGTH} characters "
            f"without NUL, got {text!r:.80}"
        )
    return text

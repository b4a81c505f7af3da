"""When a failed attempt runs again."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from tickerq.errors import InvalidArgumentError
from tickerq.validation import MAX_DELAY

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Delay before retry number ``n`` (0-based) of a job that has retries left.

    With ``intervals`` (from the ticker or the function) the n-th interval is
    used, the last one repeating. Without, exponential backoff with jitter:
    ``base * 2**n`` seconds capped at ``cap``, then a random factor in
    ``[1 - jitter, 1]`` so that many failing jobs do not retry in lockstep.

    ``base`` and ``cap`` are seconds in ``[0, MAX_DELAY]`` (a year) and
    ``jitter`` a fraction in ``[0, 1]``; every delay is at most a year, so the
    time of a retry is always a valid datetime.
    """

    base: float = 10.0
    cap: float = 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        """Refuse bounds that would make a delay negative, infinite or NaN."""
        for name, value, top in (
            ("base", self.base, MAX_DELAY),
            ("cap", self.cap, MAX_DELAY),
            ("jitter", self.jitter, 1.0),
        ):
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and 0 <= value <= top  # False for NaN
            ):
                raise InvalidArgumentError(
                    f"RetryPolicy {name} must be a number from 0 to {top:,.0f}, got {value!r}"
                )

    def delay(
        self, retry_number: int, intervals: Sequence[float] | None, rng: random.Random
    ) -> float:
        """Seconds to wait before retry ``retry_number``: finite, from 0 to MAX_DELAY."""
        if intervals:
            raw = float(intervals[min(max(retry_number, 0), len(intervals) - 1)])
            # Rows stored before intervals were bounded may hold anything.
            return raw if 0.0 <= raw <= MAX_DELAY else (0.0 if raw < 0 else MAX_DELAY)
        raw = min(self.cap, self.base * (2.0 ** min(max(retry_number, 0), 62)))
        delay = raw * (1.0 - self.jitter * rng.random())
        return delay if math.isfinite(delay) else MAX_DELAY

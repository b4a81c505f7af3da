"""When a failed attempt runs again."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Delay before retry number ``n`` (0-based) of a job that has retries left.

    With ``intervals`` (from the ticker or the function) the n-th interval is
    used, the last one repeating. Without, exponential backoff with jitter:
    ``base * 2**n`` seconds capped at ``cap``, then a random factor in
    ``[1 - jitter, 1]`` so that many failing jobs do not retry in lockstep.
    """

    base: float = 10.0
    cap: float = 3600.0
    jitter: float = 0.5

    def delay(
        self, retry_number: int, intervals: Sequence[float] | None, rng: random.Random
    ) -> float:
        """Seconds to wait before retry ``retry_number``."""
        if intervals:
            return float(intervals[min(retry_number, len(intervals) - 1)])
        raw = min(self.cap, self.base * (2.0 ** min(retry_number, 62)))
        return raw * (1.0 - self.jitter * rng.random())

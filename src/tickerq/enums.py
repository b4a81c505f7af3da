"""The enumerations of tickerq's data model (names kept from TickerQ)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["EnqueueOutcome", "MisfirePolicy", "Priority", "RunCondition", "Status", "TickerKind"]


class Status(StrEnum):
    """Where a ticker (or cron occurrence) is in its life."""

    IDLE = "IDLE"
    """Waiting for its execution time (also: waiting to retry)."""
    QUEUED = "QUEUED"
    """TickerQ's "claimed, about to start". Kept for compatibility; tickerq's claims
    start jobs at once (IN_PROGRESS), so no row stays in it."""
    IN_PROGRESS = "IN_PROGRESS"
    """Running on a node."""
    DONE = "DONE"
    """Succeeded."""
    DUE_DONE = "DUE_DONE"
    """Succeeded, but started later than the app's lateness threshold."""
    FAILED = "FAILED"
    """Failed with no retries left (or terminated as failed)."""
    CANCELLED = "CANCELLED"
    """Cancelled before or while running."""
    SKIPPED = "SKIPPED"
    """Not run: a chain condition did not match, or the job asked to be skipped."""

    @property
    def is_final(self) -> bool:
        """True for statuses a ticker never leaves by itself."""
        return self in _FINAL

    @property
    def is_success(self) -> bool:
        """True for DONE and DUE_DONE."""
        return self in (Status.DONE, Status.DUE_DONE)


_FINAL = frozenset({Status.DONE, Status.DUE_DONE, Status.FAILED, Status.CANCELLED, Status.SKIPPED})


class RunCondition(StrEnum):
    """When a child ticker of a chain runs, given its parent's outcome."""

    ON_SUCCESS = "ON_SUCCESS"
    ON_FAILURE = "ON_FAILURE"
    ON_CANCELLED = "ON_CANCELLED"
    ON_FAILURE_OR_CANCELLED = "ON_FAILURE_OR_CANCELLED"
    ON_ANY_COMPLETED_STATUS = "ON_ANY_COMPLETED_STATUS"
    """Default: after the parent ends with any status except SKIPPED."""
    IN_PROGRESS = "IN_PROGRESS"
    """Starts together with the parent."""

    def matches(self, parent_status: Status) -> bool:
        """Whether a child with this condition runs after its parent ended so."""
        if self is RunCondition.ON_SUCCESS:
            return parent_status.is_success
        if self is RunCondition.ON_FAILURE:
            return parent_status is Status.FAILED
        if self is RunCondition.ON_CANCELLED:
            return parent_status is Status.CANCELLED
        if self is RunCondition.ON_FAILURE_OR_CANCELLED:
            return parent_status in (Status.FAILED, Status.CANCELLED)
        if self is RunCondition.ON_ANY_COMPLETED_STATUS:
            return parent_status.is_final and parent_status is not Status.SKIPPED
        return False  # IN_PROGRESS children are started with the parent, not after it


class Priority(IntEnum):
    """A function's priority. A free slot always goes to the highest waiting one.

    LONG_RUNNING jobs get a thread of their own outside the slot pool.
    """

    LOW = 0
    NORMAL = 1
    HIGH = 2
    LONG_RUNNING = 3


class MisfirePolicy(StrEnum):
    """What a cron ticker does with fires missed while no node was running."""

    RUN_ONCE = "RUN_ONCE"
    """Default: run the latest missed fire once."""
    RUN_ALL = "RUN_ALL"
    """Run every missed fire."""
    SKIP = "SKIP"
    """Run none of the missed fires; wait for the next one."""


class TickerKind(StrEnum):
    """What kind of row a running job came from."""

    TIME = "TIME"
    CRON_OCCURRENCE = "CRON_OCCURRENCE"


class EnqueueOutcome(StrEnum):
    """What an enqueue did (``ticker.enqueued``); only a unique key makes it other than ADDED."""

    ADDED = "ADDED"
    """A new ticker was stored."""
    KEPT = "KEPT"
    """``on_conflict="keep"``: a ticker with the key waits or runs; nothing was stored
    and the ticker returned is that one."""
    REPLACED = "REPLACED"
    """``on_conflict="replace"``: the waiting ticker with the key took the new request,
    time and options (same id); it is returned."""
    CHAINED = "CHAINED"
    """``on_conflict="replace"`` while the ticker with the key runs: a new ticker was
    stored that runs once that run has ended (a chain child of it), and now holds the key."""

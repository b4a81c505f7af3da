"""What cancel, retry and update may act on, and what a bulk operation reports.

The state rules (:data:`CANCEL`, :data:`RETRY`, :data:`UPDATE`) are the one place
that says which statuses each operation accepts and how a refusal reads. The
single calls (``time_tickers.cancel(id)``, ...) raise TickerStateError with that
text; the bulk calls (``time_tickers.cancel_many(ids)``, ...) report it per id in
a :class:`BulkResult`. Stores act only on rows whose status the rule allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.errors import InvalidArgumentError
from tickerq.unique import KeyHeld, held_reason
from tickerq.validation import short_repr

__all__ = [
    "CANCEL",
    "MAX_BULK_IDS",
    "NOT_FOUND_REASON",
    "RETRY",
    "RULES",
    "UPDATE",
    "BulkItem",
    "BulkOutcome",
    "BulkResult",
    "StateRule",
    "build_result",
    "check_ids",
    "kind_name",
]

MAX_BULK_IDS = 1000
"""The most ids one bulk call takes (one transaction holds their rows locked)."""


def kind_name(kind: TickerKind) -> str:
    """``time ticker`` or ``cron occurrence``, for messages."""
    return "time ticker" if kind is TickerKind.TIME else "cron occurrence"


@dataclass(frozen=True, slots=True)
class StateRule:
    """The statuses an operation acts on, and why it refuses the others."""

    name: str
    allowed: frozenset[Status]
    refused_because: str
    """The end of a refusal: ``{ticker} is {status}; {refused_because}``."""
    refused_as: str
    """The refused rows in two words, for summaries (``already ended``)."""

    def allows(self, status: Status) -> bool:
        """Whether the operation acts on a row in ``status``."""
        return status in self.allowed

    def reason(self, status: Status) -> str:
        """Why a row in ``status`` is refused, e.g. ``is DONE; it has already ended``."""
        return f"is {status.name}; {self.refused_because}"

    def refusal(self, kind: TickerKind, ticker_id: UUID, status: Status) -> str:
        """The message of the TickerStateError a single call raises."""
        return f"{kind_name(kind)} {ticker_id} {self.reason(status)}"


_WAITING = frozenset({Status.IDLE, Status.QUEUED})

CANCEL = StateRule(
    "cancel",
    _WAITING | {Status.IN_PROGRESS},
    "it has already ended",
    "already ended",
)
"""Cancel: a waiting row ends CANCELLED at once; a running one is flagged, and
its node (told at once, or at its next heartbeat) cancels it."""

RETRY = StateRule(
    "retry",
    frozenset(Status) - {Status.IN_PROGRESS},
    "it can run again once this run has ended",
    "still running",
)
"""Retry: an ended (or waiting) row becomes due now; a running one is refused."""

UPDATE = StateRule(
    "update",
    frozenset({Status.IDLE}),
    "it can be changed only while it waits (IDLE)",
    "not waiting",
)
"""Update: only a waiting row's fields change."""


RULES = {rule.name: rule for rule in (CANCEL, RETRY, UPDATE)}
"""The rules by operation name."""


def check_ids(ids: Any, what: str = "ids") -> list[UUID]:
    """The distinct ticker ids of a bulk call, in the order given (UUIDs or their
    text); raises InvalidArgumentError naming the bad value, or the count when
    there are more than :data:`MAX_BULK_IDS`."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | set | frozenset):
        raise InvalidArgumentError(f"{what} must be a list of ticker ids, got {short_repr(ids)}")
    if len(ids) > MAX_BULK_IDS:
        raise InvalidArgumentError(
            f"{what} holds {len(ids):,} ids; at most {MAX_BULK_IDS:,} are allowed per call"
        )
    out: dict[UUID, None] = {}
    for i, value in enumerate(ids):
        if isinstance(value, UUID):
            out[value] = None
            continue
        try:
            out[UUID(value)] = None
        except (TypeError, ValueError, AttributeError):
            raise InvalidArgumentError(
                f"{what}[{i}] is not a ticker id (a UUID): {short_repr(value)}"
            ) from None
    return list(out)


class BulkOutcome(StrEnum):
    """What a bulk operation did with one id."""

    DONE = "done"
    """It took effect."""
    REQUESTED = "requested"
    """Cancel of a running ticker: its node was asked to cancel it (it ends
    CANCELLED when the job stops)."""
    NOT_FOUND = "not_found"
    """No ticker of that kind has this id."""
    NOT_ALLOWED = "not_allowed"
    """Its status does not allow the operation (``reason`` says why)."""


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One id of a bulk operation and what happened to it."""

    id: UUID
    outcome: BulkOutcome
    status: Status | None = None
    """The status it had when the operation looked (None when not found)."""
    function: str | None = None
    """Its function (None when not found)."""
    reason: str | None = None
    """Why it was skipped (NOT_FOUND, NOT_ALLOWED), e.g. ``is DONE; it has already ended``."""
    held_by: UUID | None = None
    """NOT_ALLOWED because its unique key is held: the time ticker that holds it."""

    @property
    def skipped(self) -> bool:
        """True when nothing was done to it."""
        return self.outcome in (BulkOutcome.NOT_FOUND, BulkOutcome.NOT_ALLOWED)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk call did, per id, in the order the ids were given (each id once).

    Nothing fails silently: every id is here as DONE, REQUESTED (a running
    ticker asked to cancel), NOT_FOUND or NOT_ALLOWED (with the reason).
    """

    action: str
    """``cancel``, ``retry`` or ``update``."""
    kind: TickerKind
    items: tuple[BulkItem, ...]

    def __iter__(self) -> Iterator[BulkItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def of(self, ticker_id: UUID) -> BulkItem:
        """The item of ``ticker_id``; raises KeyError if it was not in the call."""
        for item in self.items:
            if item.id == ticker_id:
                return item
        raise KeyError(ticker_id)

    @property
    def done(self) -> list[UUID]:
        """The ids the operation took effect on."""
        return [i.id for i in self.items if i.outcome is BulkOutcome.DONE]

    @property
    def requested(self) -> list[UUID]:
        """Running tickers whose node was asked to cancel them."""
        return [i.id for i in self.items if i.outcome is BulkOutcome.REQUESTED]

    @property
    def skipped(self) -> list[BulkItem]:
        """The items nothing was done to (not found, or not allowed in their state)."""
        return [i for i in self.items if i.skipped]

    @property
    def ok(self) -> bool:
        """True when no id was skipped."""
        return not any(i.skipped for i in self.items)

    def summary(self) -> str:
        """One line for people, e.g. ``cancel: 3 done, 1 requested, 2 skipped (1 is
        DONE; it has already ended, 1 not found)``."""
        parts = [f"{len(self.done)} done"]
        if self.requested:
            parts.append(f"{len(self.requested)} requested")
        skipped = self.skipped
        if skipped:
            reasons = Counter(i.reason or i.outcome.value for i in skipped)
            why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            parts.append(f"{len(skipped)} skipped ({why})")
        return f"{self.action}: " + ", ".join(parts)


NOT_FOUND_REASON = "not found"
"""The reason of a NOT_FOUND item."""


def build_result(
    rule: StateRule,
    kind: TickerKind,
    ids: Sequence[UUID],
    found: dict[UUID, tuple[Status, str]],
    held_by: Mapping[UUID, KeyHeld] | None = None,
) -> BulkResult:
    """The result of applying ``rule`` to ``ids``, given the status and function the
    store found of each (before it acted); running rows a cancel reached are REQUESTED,
    rows the store left because their unique key is held (``held_by``) NOT_ALLOWED."""
    items = []
    for ticker_id in ids:
        seen = found.get(ticker_id)
        if seen is None:
            items.append(BulkItem(ticker_id, BulkOutcome.NOT_FOUND, reason=NOT_FOUND_REASON))
            continue
        status, function = seen
        held = held_by.get(ticker_id) if held_by else None
        if held is not None:
            items.append(
                BulkItem(
                    ticker_id,
                    BulkOutcome.NOT_ALLOWED,
                    status,
                    function,
                    held_reason(held),
                    held.holder,
                )
            )
        elif not rule.allows(status):
            items.append(
                BulkItem(ticker_id, BulkOutcome.NOT_ALLOWED, status, function, rule.reason(status))
            )
        elif rule is CANCEL and status is Status.IN_PROGRESS:
            items.append(BulkItem(ticker_id, BulkOutcome.REQUESTED, status, function))
        else:
            items.append(BulkItem(ticker_id, BulkOutcome.DONE, status, function))
    return BulkResult(rule.name, kind, tuple(items))

"""Unique jobs: at most one waiting or running time ticker per (function, unique key).

``enqueue(..., unique_key="order-42")`` stores the key on the ticker. The key is
*held* while its ticker waits or runs (IDLE, QUEUED or IN_PROGRESS); a ticker
that ended (done, failed, cancelled, skipped) releases it. Every store keeps the
rule itself, so it holds across nodes: the SQL stores by a partial unique index
on ``(function, unique_key)`` over the holding rows (whichever node inserts
second finds the first), the memory store by an index of the held keys.

What an enqueue does when the key is held (``on_conflict``):

* ``"keep"`` (default): store nothing, return the holder (``enqueued`` KEPT);
* ``"error"``: raise :class:`~tickerq.errors.DuplicateJobError` naming the holder;
* ``"replace"`` (debounce): a holder that waits (IDLE) takes the new request,
  time and options in place, keeping its id (REPLACED). A holder that has
  started (QUEUED or IN_PROGRESS) is not touched: a new ticker is stored as its
  chain child (run condition ON_ANY_COMPLETED_STATUS), so it runs once that run
  has ended, and the key moves to it (CHAINED). The running ticker no longer
  holds the key, so a later replace updates the new one in place: one ticker
  waits per key, and two runs of a key never overlap.

Retrying an ended ticker whose key another ticker holds now, or updating a
ticker to a key that is held, is refused (``retry_many``/``update_many``:
NOT_ALLOWED with ``held_by``; ``retry``/``update``: DuplicateJobError).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args
from uuid import UUID

from tickerq.enums import RunCondition, Status
from tickerq.errors import InvalidArgumentError
from tickerq.validation import check_text, short_repr

if TYPE_CHECKING:
    from tickerq.models import TimeTicker

__all__ = [
    "CHAINED_CONDITION",
    "HOLDING",
    "MAX_UNIQUE_KEY_LENGTH",
    "ON_CONFLICT",
    "REPLACED_FIELDS",
    "KeyHeld",
    "OnConflict",
    "check_batch_keys",
    "check_on_conflict",
    "check_unique_key",
    "claim_keys",
    "held_reason",
    "replacement",
    "successor",
]

OnConflict = Literal["keep", "replace", "error"]
"""What an enqueue does when its unique key is held (see the module's doc)."""

ON_CONFLICT: tuple[str, ...] = get_args(OnConflict)

MAX_UNIQUE_KEY_LENGTH = 200
"""The longest unique key (the width of its column)."""

HOLDING = frozenset({Status.IDLE, Status.QUEUED, Status.IN_PROGRESS})
"""The statuses in which a ticker holds its unique key (as the SQL index's predicate
:data:`tickerq.stores.sql.schema.UNIQUE_HELD_SQL` says)."""

CHAINED_CONDITION = RunCondition.ON_ANY_COMPLETED_STATUS
"""The run condition of a ticker chained after a running holder: it runs whatever
way the holder's run ends (unless the holder is SKIPPED, like every chain child)."""

REPLACED_FIELDS = (
    "request",
    "execution_time",
    "priority",
    "retries",
    "retry_intervals",
    "timeout",
    "description",
    "headers",
    "concurrency_key",
    "updated_at",
)
"""What a replace copies from the new ticker onto a waiting holder (its id, chain,
attempts and retry count stay)."""


class KeyHeld(NamedTuple):
    """Why a retry or update of a ticker was refused: its key and who holds it."""

    function: str
    key: str
    holder: UUID


def check_unique_key(value: Any) -> str | None:
    """A unique key: None (no key), or a non-empty storable string of at most
    :data:`MAX_UNIQUE_KEY_LENGTH` characters; raises InvalidArgumentError naming it."""
    if value is None:
        return None
    text = check_text(value, "unique_key", max_length=MAX_UNIQUE_KEY_LENGTH)
    if not text.strip():
        raise InvalidArgumentError(f"unique_key cannot be empty, got {text!r}")
    return text


def check_on_conflict(value: Any) -> OnConflict:
    """``"keep"``, ``"replace"`` or ``"error"``; raises InvalidArgumentError naming the value."""
    if isinstance(value, str) and value in ON_CONFLICT:
        return value  # type: ignore[return-value]
    raise InvalidArgumentError(
        f"on_conflict must be one of {', '.join(map(repr, ON_CONFLICT))}, got {short_repr(value)}"
    )


def check_batch_keys(tickers: Iterable[TimeTicker]) -> None:
    """Raise InvalidArgumentError if two tickers of a batch share a function and key."""
    seen: set[tuple[str, str]] = set()
    for t in tickers:
        if t.unique_key is None:
            continue
        pair = (t.function, t.unique_key)
        if pair in seen:
            raise InvalidArgumentError(
                f"unique key {t.unique_key!r} of function {t.function!r} is given twice "
                "in one batch; a key is held by one ticker at a time"
            )
        seen.add(pair)


def replacement(new: TimeTicker) -> dict[str, Any]:
    """The fields a waiting holder takes from ``new`` when it is replaced."""
    return {name: getattr(new, name) for name in REPLACED_FIELDS}


def successor(new: TimeTicker, holder: UUID) -> TimeTicker:
    """``new`` as the chain child of a running ``holder``: it runs once that run ended."""
    return new.evolve(parent_id=holder, run_condition=CHAINED_CONDITION)


def held_reason(held: KeyHeld) -> str:
    """Why a retry or update was refused, for a bulk result."""
    return f"its unique key {held.key!r} is held by time ticker {held.holder}"


def claim_keys(
    candidates: Sequence[tuple[UUID, str, str]],
    holders: Iterable[tuple[UUID, str, str]],
) -> dict[UUID, KeyHeld]:
    """Which ``candidates`` (id, function, key: rows about to hold a key, in the order
    they take it) are refused, and who holds their key: a ticker in ``holders``
    (id, function, key: those holding now) other than itself, or an earlier
    candidate. A holder that would give its key up in the same change still counts
    (refusing a little more keeps every store's answer the same, race or not)."""
    taken = {(f, k): i for i, f, k in holders}
    refused: dict[UUID, KeyHeld] = {}
    for ticker_id, function, key in candidates:
        holder = taken.get((function, key))
        if holder is not None and holder != ticker_id:
            refused[ticker_id] = KeyHeld(function, key, holder)
            continue
        taken[(function, key)] = ticker_id
    return refused

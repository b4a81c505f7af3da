"""The read side of the store contract: what a dashboard reads, as named values.

Every store answers these reads (the section "read side for dashboards" of
:class:`tickerq.stores.base.Store`) from its own data, so a dashboard needs
nothing but the contract: the census (rows by kind, function, status and root),
throughput buckets, locks per node, what is due next, a page of time tickers
and a change marker.

Searching time tickers
----------------------
One semantics, on every store, for the dashboard's page
(:meth:`Store.search_time_tickers`) and for :meth:`Store.query_time_tickers` /
:meth:`Store.count_time_tickers` (``app.time_tickers.query`` and ``count``):

* filters: time tickers only; ``statuses``, ``function``, ``parent_id`` and
  ``roots_only`` (no parent) as given;
* order (the *list order*): latest ``execution_time`` first, tickers without one
  last, then latest ``created_at``, then highest id;
* text (see :class:`TextSearch`), matched case-insensitively and literally
  (``%`` and ``_`` are characters):

  - a text that is a UUID (``uuid.UUID`` accepts it) finds that ticker only;
  - otherwise a ticker matches when its id starts with the text's hex digits
    (the text, without dashes, is 4 to 32 hex digits: a range of ids, searched
    in the whole store), or when it is among the latest :data:`TEXT_WINDOW`
    tickers that pass the filters (in the list order) and its function or
    description contains the text, or its id (written without dashes)
    contains the text's hex digits (the text without dashes is all hex).

  When more than :data:`TEXT_WINDOW` tickers pass the filters, the page says
  so (:attr:`TickerPage.searched`): narrowing the filters searches further back.
  A big table is thus never scanned for a word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from tickerq.enums import Priority, Status, TickerKind
from tickerq.notices import CRONS, NODES, PAUSES, TICKERS

if TYPE_CHECKING:
    from tickerq.models import TimeTicker

__all__ = [
    "TEXT_WINDOW",
    "BucketSpan",
    "Census",
    "CensusGroup",
    "ChangeMarker",
    "DepthGroup",
    "DueItem",
    "NodeLocks",
    "TextSearch",
    "ThroughputBucket",
    "TickerPage",
    "outcome_slot",
]

TEXT_WINDOW = 10_000
"""Text search (other than by id) looks at this many latest tickers that pass the
filters. Stores read it when they search, so it can be changed at run time."""

_HEX_PREFIX = re.compile(r"[0-9a-f]{4,32}")
_HEX_DIGITS = re.compile(r"[0-9a-f]+")


# -- census --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CensusGroup:
    """One group of the census: rows of one kind, function and status, roots or not."""

    kind: TickerKind
    function: str
    status: Status
    root: bool
    """True for rows without a parent (chain tops, lone tickers, cron occurrences)."""


@dataclass(frozen=True, slots=True)
class Census:
    """How many rows (time tickers and cron occurrences) each :class:`CensusGroup` holds.

    On a big SQL table the census is kept and refreshed now and then, so it may
    lag the rows (see :mod:`tickerq.stores.sql.reads`); elsewhere it is exact.
    """

    counts: Mapping[CensusGroup, int]
    """Rows per group; groups without rows are left out."""

    def by_status(self) -> dict[TickerKind, dict[Status, int]]:
        """Rows of each kind in each status (every kind and status present, 0 if none)."""
        out: dict[TickerKind, dict[Status, int]] = {k: dict.fromkeys(Status, 0) for k in TickerKind}
        for group, count in self.counts.items():
            out[group.kind][group.status] += count
        return out

    def total(
        self,
        kind: TickerKind = TickerKind.TIME,
        *,
        statuses: Sequence[Status] | None = None,
        function: str | None = None,
        roots_only: bool = False,
    ) -> int:
        """Rows of ``kind`` with one of ``statuses`` (any if None), of ``function``
        (any if None), only roots if ``roots_only``."""
        wanted = set(statuses) if statuses else None
        return sum(
            n
            for g, n in self.counts.items()
            if g.kind is kind
            and (wanted is None or g.status in wanted)
            and (function is None or g.function == function)
            and (g.root or not roots_only)
        )


# -- throughput ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThroughputBucket:
    """Rows that ended in one time bucket, by outcome."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    other: int = 0
    """Cancelled or skipped (or ended, then made to wait again by a retry)."""


@dataclass(frozen=True, slots=True)
class BucketSpan:
    """The buckets of a throughput read: ``[start, end)`` in steps of ``size`` seconds
    (UNIX times), the last bucket holding ``now``."""

    start: int
    end: int
    size: int

    @classmethod
    def of(cls, now: datetime, span: timedelta, bucket: timedelta) -> BucketSpan:
        """The buckets of ``bucket`` (at least a second) covering the last ``span``."""
        size = max(int(bucket.total_seconds()), 1)
        end = int(now.timestamp()) // size * size + size
        start = end - max(int(span.total_seconds()) // size, 1) * size
        return cls(start, end, size)

    def starts(self) -> range:
        """The start of each bucket, oldest first."""
        return range(self.start, self.end, self.size)

    def buckets(self, counts: Mapping[int, Sequence[int]], now: datetime) -> list[ThroughputBucket]:
        """One :class:`ThroughputBucket` per bucket (in ``now``'s timezone), from
        ``counts``: bucket start -> (succeeded, failed, other); missing ones are empty."""
        out = []
        for b in self.starts():
            triple = counts.get(b, (0, 0, 0))
            out.append(ThroughputBucket(datetime.fromtimestamp(b, now.tzinfo), *triple))
        return out


def outcome_slot(status: Status) -> int:
    """Where a row that ended with ``status`` counts in a throughput triple:
    0 succeeded, 1 failed, 2 other."""
    return 0 if status.is_success else 1 if status is Status.FAILED else 2


# -- nodes and due work --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeLocks:
    """How many rows one node holds locked (claimed or running)."""

    node: str
    held: int


@dataclass(frozen=True, slots=True)
class DueItem:
    """A waiting row and when it is due."""

    kind: TickerKind
    id: UUID
    function: str
    execution_time: datetime


@dataclass(frozen=True, slots=True)
class DepthGroup:
    """The rows of one function and priority that wait to run (both kinds): IDLE and
    not waiting for a chain parent, as the claim sees them."""

    function: str
    priority: Priority
    waiting: int
    """Rows waiting, due or not."""
    due: int
    """Of those, the rows due by the time asked for (a free slot would take them)."""


# -- time ticker pages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickerPage:
    """A page of time tickers (in the list order) and how many match."""

    items: list[TimeTicker]
    total: int
    """Tickers matching the query. Without text on a big SQL table it comes from the
    census, so it may lag the rows (never below the tickers this page proves)."""
    searched: int | None = None
    """Set when the text was searched only among this many latest tickers."""


@dataclass(frozen=True, slots=True)
class TextSearch:
    """A search text, taken apart as the search semantics (module notes) use it."""

    words: str
    """The text, lower-cased: matched inside function and description."""
    exact: UUID | None
    """The id, when the text is a UUID (then nothing else is matched)."""
    hex_digits: str | None
    """The text without dashes when it is all hex digits: matched inside ids."""
    prefix: tuple[UUID, UUID] | None
    """The lowest and highest id starting with the text's 4 to 32 hex digits."""

    @classmethod
    def parse(cls, text: str) -> TextSearch:
        """Take ``text`` apart (it is matched as it is: strip it first if need be)."""
        words = text.lower()
        try:
            exact: UUID | None = UUID(text)
        except ValueError:
            exact = None
        digits = words.replace("-", "")
        hex_digits = digits if _HEX_DIGITS.fullmatch(digits) else None
        prefix = None
        if _HEX_PREFIX.fullmatch(digits):
            prefix = (UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f")))
        return cls(words, exact, hex_digits, prefix)

    def in_window(self, ticker_id: UUID, function: str, description: str) -> bool:
        """Whether a ticker inside the search window matches (by words or a piece of id)."""
        return (
            self.words in function.lower()
            or self.words in description.lower()
            or (self.hex_digits is not None and self.hex_digits in ticker_id.hex)
        )

    def by_prefix(self, ticker_id: UUID) -> bool:
        """Whether ``ticker_id`` starts with the text's hex digits (searched in the whole store)."""
        return self.prefix is not None and self.prefix[0] <= ticker_id <= self.prefix[1]


# -- change marker -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeMarker:
    """Values that move whenever a store's data changes, cheap to read: a dashboard
    compares two markers to see changes made by other processes."""

    time_tickers: datetime | None
    """Latest change of a time ticker."""
    occurrences: datetime | None
    """Latest change of a cron occurrence."""
    crons: tuple[datetime | None, int]
    """Latest change of a cron ticker, and how many there are."""
    nodes: tuple[datetime | None, int]
    """Latest heartbeat, and how many nodes there are."""
    deletions: int | None
    """Moves when rows are deleted (a deletion counter, or the number of rows)."""
    pauses: tuple[datetime | None, int] = (None, 0)
    """Latest pause, and how many there are (a resume deletes one)."""

    def parts(self) -> tuple[object, ...]:
        """The marker as a flat tuple: time tickers, occurrences, cron change, cron
        count, heartbeat, node count, deletions, latest pause, pause count."""
        return (
            self.time_tickers,
            self.occurrences,
            *self.crons,
            *self.nodes,
            self.deletions,
            *self.pauses,
        )

    def changed_since(self, before: ChangeMarker) -> frozenset[str]:
        """The topics (of :data:`tickerq.notices.TOPICS`) whose part moved since ``before``."""
        topics: set[str] = set()
        if self.time_tickers != before.time_tickers:
            topics.add(TICKERS)
        if self.occurrences != before.occurrences or self.deletions != before.deletions:
            topics |= {TICKERS, CRONS}
        if self.crons != before.crons:
            topics.add(CRONS)
        if self.nodes != before.nodes:
            topics.add(NODES)
        if self.pauses != before.pauses:
            topics.add(PAUSES)
        return frozenset(topics)

"""The memory store's unique keys (see :mod:`tickerq.unique`): an index of the held
keys, and the enqueue, retry and update checks that keep one holder per key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from tickerq.enums import EnqueueOutcome, Status, TickerKind
from tickerq.errors import DuplicateJobError, TickerNotFoundError
from tickerq.models import TimeTicker
from tickerq.operations import UPDATE
from tickerq.stores.base import Store
from tickerq.stores.memory_rows import Row, time_ticker
from tickerq.unique import (
    HOLDING,
    KeyHeld,
    OnConflict,
    check_batch_keys,
    claim_keys,
    replacement,
    successor,
)

__all__ = ["HeldKeys", "MemoryUnique"]


class HeldKeys:
    """(function, unique key) -> the row that holds it.

    An entry stands while its row is stored, still has that function and key and
    holds it (:data:`~tickerq.unique.HOLDING`); a row that ended or changed its key
    leaves a stale entry, dropped when looked up, replaced or when the row goes.
    So no status change of the store has to update the index: only the changes
    that make a row hold a key (add, retry, update) enter it, after checking it.
    """

    __slots__ = ("_by_key", "_rows")

    def __init__(self, rows: dict[UUID, Row]) -> None:
        self._rows = rows
        self._by_key: dict[tuple[str, str], Row] = {}

    def holder(self, function: str, key: str) -> Row | None:
        """The row holding ``key`` of ``function`` now, or None."""
        pair = (function, key)
        row = self._by_key.get(pair)
        if row is None:
            return None
        if (
            self._rows.get(row.id) is row
            and row.status in HOLDING
            and row.unique_key == key
            and row.function == function
        ):
            return row
        del self._by_key[pair]
        return None

    def hold(self, row: Row) -> None:
        """Enter ``row`` (just checked to be the only one) as its key's holder."""
        if row.unique_key is not None and row.status in HOLDING:
            self._by_key[(row.function, row.unique_key)] = row

    def forget(self, row: Row) -> None:
        """``row`` leaves the store: drop its entry."""
        if row.unique_key is not None:
            pair = (row.function, row.unique_key)
            if self._by_key.get(pair) is row:
                del self._by_key[pair]

    def __len__(self) -> int:
        return len(self._by_key)


class MemoryUnique(Store):
    """Unique keys of :class:`~tickerq.stores.memory.MemoryStore` (mixed into it)."""

    _rows: dict[UUID, Row]
    _held_keys: HeldKeys
    """Set by the store's constructor."""

    async def add_unique(self, ticker: TimeTicker, on_conflict: OnConflict) -> TimeTicker:
        """Add ``ticker`` unless its key is held; else keep, refuse or replace (see Store).
        Nothing here suspends, so the check and the change are one step."""
        assert ticker.unique_key is not None
        if ticker.parent_id is not None and ticker.parent_id not in self._rows:
            raise TickerNotFoundError("time ticker", ticker.parent_id)
        holder = self._held_keys.holder(ticker.function, ticker.unique_key)
        if holder is None:
            await self.add_time_tickers((ticker,))
            return self._snapshot(ticker.id, EnqueueOutcome.ADDED)
        if on_conflict == "keep":
            return time_ticker(holder).evolve(enqueued=EnqueueOutcome.KEPT)
        if on_conflict == "error":
            raise DuplicateJobError(ticker.function, ticker.unique_key, holder.id)
        if holder.status is Status.IDLE:
            await self.update_time_tickers({holder.id: replacement(ticker)})
            return self._snapshot(holder.id, EnqueueOutcome.REPLACED)
        holder.unique_key = None  # it runs on; the key moves to the ticker after it
        await self.add_time_tickers((successor(ticker, holder.id),))
        return self._snapshot(ticker.id, EnqueueOutcome.CHAINED)

    def _snapshot(self, ticker_id: UUID, outcome: EnqueueOutcome) -> TimeTicker:
        return time_ticker(self._rows[ticker_id]).evolve(enqueued=outcome)

    def _check_new_keys(self, tickers: Sequence[TimeTicker]) -> None:
        """Before an add stores anything: no key given twice, none held."""
        check_batch_keys(tickers)
        for t in tickers:
            if t.unique_key is not None and t.status in HOLDING:
                holder = self._held_keys.holder(t.function, t.unique_key)
                if holder is not None:
                    raise DuplicateJobError(t.function, t.unique_key, holder.id)

    def _refused_keys(self, targets: Iterable[tuple[Row, str, str | None]]) -> dict[UUID, KeyHeld]:
        """Of rows about to hold a key (row, its function and key after the change),
        those refused because another holds it or an earlier one (by id) takes it."""
        candidates = sorted((row.id, f, k) for row, f, k in targets if k is not None)
        holders = []
        for _, function, key in candidates:
            holder = self._held_keys.holder(function, key)
            if holder is not None:
                holders.append((holder.id, function, key))
        return claim_keys(candidates, holders)

    def _refused_retries(self, rows: Iterable[Row]) -> dict[UUID, KeyHeld]:
        """Of ``rows`` about to run again, the ended ones whose key is held."""
        return self._refused_keys(
            (row, row.function, row.unique_key)
            for row in rows
            if row.kind is TickerKind.TIME and row.status not in HOLDING
        )

    def _refused_updates(
        self,
        changes: Mapping[UUID, Mapping[str, Any]],
        allowed: frozenset[Status] = UPDATE.allowed,
    ) -> dict[UUID, KeyHeld]:
        """Of the rows ``changes`` would change, those it would give a held key."""
        targets = []
        for ticker_id, fields in changes.items():
            if "unique_key" not in fields and "function" not in fields:
                continue
            row = self._rows.get(ticker_id)
            if row is None or row.kind is not TickerKind.TIME:
                continue
            if row.status not in allowed or row.status not in HOLDING:
                continue
            function = fields.get("function", row.function)
            key = fields.get("unique_key", row.unique_key)
            if (function, key) != (row.function, row.unique_key):
                targets.append((row, function, key))
        return self._refused_keys(targets)

"""Unique keys on the SQL stores (see :mod:`tickerq.unique`).

The partial unique index ``uq_tickerq_tickers_unique`` on ``(function,
unique_key)`` over the rows that hold their key decides every race: a unique
enqueue is an ``INSERT ... ON CONFLICT (function, unique_key) WHERE <held> DO
NOTHING``, so of two nodes adding one key at once exactly one row goes in (on
PostgreSQL the second insert waits for the first transaction, then finds its
row); the loser reads the holder, locked (``FOR UPDATE`` on PostgreSQL; SQLite's
write transactions run one at a time), and keeps, refuses or replaces it. A
holder that ended between the two statements is no longer found: the insert is
tried again.

Retries and updates that would make a row hold a key read the holders first and
leave those rows alone; a holder another node adds in between makes the
statement fail on the index, and the transaction is run again (it then sees
that holder). On PostgreSQL a deadlock or serialization failure runs it again
too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Connection, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from tickerq.enums import EnqueueOutcome, Status
from tickerq.errors import DuplicateJobError, TickerNotFoundError, TickerStateError
from tickerq.models import TimeTicker
from tickerq.notices import TICKERS, Changed, WorkDue
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import IN_CHUNK, TIME, SqlBase, T
from tickerq.stores.sql.rows import ticker_from_row, ticker_values
from tickerq.stores.sql.schema import UNIQUE_HELD_SQL, tickers
from tickerq.unique import KeyHeld, OnConflict, claim_keys, replacement, successor

__all__ = ["SqlUnique", "held_keys_of"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_HELD = text(UNIQUE_HELD_SQL)
_TRIES = 5
"""Times a transaction runs when a race makes it fail (then the error is raised)."""
_RETRIED_STATES = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure."""
_CHANGED = Changed(frozenset({TICKERS}))


def _retryable(exc: DBAPIError, integrity: bool) -> bool:
    if integrity and isinstance(exc, IntegrityError):
        return True
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return state in _RETRIED_STATES


def held_keys_of(conn: Connection, pairs: Iterable[tuple[str, str]]) -> list[tuple[UUID, str, str]]:
    """The rows (id, function, key) that hold one of ``pairs`` (function, key) now."""
    wanted = set(pairs)
    keys = sorted({k for _, k in wanted})
    found: list[tuple[UUID, str, str]] = []
    for i in range(0, len(keys), IN_CHUNK):
        rows = conn.execute(
            select(T.id, T.function, T.unique_key).where(
                T.unique_key.in_(keys[i : i + IN_CHUNK]), _HELD
            )
        )
        found.extend((r.id, r.function, r.unique_key) for r in rows)
    return [h for h in found if (h[1], h[2]) in wanted]


class SqlUnique(SqlBase):
    """Unique enqueues and the key checks of retries and updates."""

    async def write_retrying(
        self, transaction: Callable[[Connection], R], *, integrity: bool = False
    ) -> R:
        """:meth:`write`, run again when a race made it fail: a PostgreSQL deadlock or
        serialization failure, and with ``integrity`` a broken unique index (a key
        another node took since the transaction read the holders)."""
        for attempt in range(1, _TRIES + 1):
            try:
                return await self.write(transaction)
            except DBAPIError as exc:
                if attempt == _TRIES or not _retryable(exc, integrity):
                    raise
                logger.debug(
                    "unique keys: transaction raced another (%s); running it again",
                    type(exc.orig).__name__,
                    extra={"action": "unique_retry", "attempt": attempt},
                )
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def add_unique(self, ticker: TimeTicker, on_conflict: OnConflict) -> TimeTicker:
        """Add ``ticker`` unless its key is held; else keep, refuse or replace (see Store)."""
        assert ticker.unique_key is not None

        def tx(conn: Connection) -> tuple[EnqueueOutcome, Any, list[Any]]:
            for _ in range(_TRIES):
                done = self._add_or_settle(conn, ticker, on_conflict)
                if done is not None:
                    return done
            raise TickerStateError(
                f"unique key {ticker.unique_key!r} of {ticker.function!r} kept changing "
                f"hands; gave up after {_TRIES} tries"
            )

        outcome, row, changed = await self.write_retrying(tx)
        for r in changed:
            self._announce(TIME, r.id, r.function, r.status, r.updated_at)
        return ticker_from_row(row).evolve(enqueued=outcome)

    def _insert_unless_held(self, conn: Connection, values: dict[str, Any]) -> Any:
        """INSERT the row unless its (function, key) is held; the row, or None."""
        module: Any = self.dialect._insert_module()  # a SQLite process loads no PG dialect
        stmt = (
            module.insert(tickers)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[T.function, T.unique_key], index_where=_HELD)
            .returning(tickers)
        )
        return conn.execute(stmt).first()

    def _add_or_settle(
        self, conn: Connection, ticker: TimeTicker, on_conflict: OnConflict
    ) -> tuple[EnqueueOutcome, Any, list[Any]] | None:
        """One try: insert, or act on the holder; None when the holder ended meanwhile."""
        key = ticker.unique_key
        assert key is not None
        parent = self._mark_parent(conn, ticker)
        row = self._insert_unless_held(conn, ticker_values(ticker, parent is not None))
        if row is not None:
            if parent is not None:
                row = self._settle_child(conn, row, parent)
            self._notify_due(conn, row)
            return EnqueueOutcome.ADDED, row, [row]
        holder = conn.execute(
            select(tickers)
            .where(T.function == ticker.function, T.unique_key == key, _HELD)
            .with_for_update()
        ).first()
        if holder is None:
            return None  # it ended between the two statements: try the insert again
        if on_conflict == "keep":
            return EnqueueOutcome.KEPT, holder, []
        if on_conflict == "error":
            raise DuplicateJobError(ticker.function, key, holder.id)
        if holder.status == Status.IDLE.value:
            changed = conn.execute(
                update(tickers)
                .where(T.id == holder.id)
                .values(**_column_values(replacement(ticker)))
                .returning(tickers)
            ).one()
            self._notify_due(conn, changed)
            return EnqueueOutcome.REPLACED, changed, [changed]
        # The holder has started: the new ticker runs after it and takes the key over.
        conn.execute(
            update(tickers).where(T.id == holder.id).values(unique_key=None, has_children=True)
        )
        child = self._insert_unless_held(conn, ticker_values(successor(ticker, holder.id), True))
        if child is None:  # another node's replace moved the key first (it waited for ours)
            raise TickerStateError(f"unique key {key!r} of {ticker.function!r} was taken meanwhile")
        self._notify(conn, _CHANGED)
        return EnqueueOutcome.CHAINED, child, [child]

    def _mark_parent(self, conn: Connection, ticker: TimeTicker) -> Status | None:
        """Mark the chain parent of ``ticker`` (as every add of a child does: its run's
        end then resolves the child); its status, or None without a parent."""
        if ticker.parent_id is None:
            return None
        found = conn.execute(
            update(tickers)
            .where(T.id == ticker.parent_id)
            .values(has_children=True)
            .returning(T.status)
        ).first()
        if found is None:
            raise TickerNotFoundError("time ticker", ticker.parent_id)
        return Status(found.status)

    def _settle_child(self, conn: Connection, row: Any, parent: Status) -> Any:
        """A child added under a parent that ended or runs: resolve it now (as
        :meth:`SqlStore.add_time_tickers` does); the row as it is then."""
        if parent.is_final:
            self._resolve_children(conn, row.parent_id, parent, row.updated_at)
        elif parent is Status.IN_PROGRESS:
            self._start_in_progress_children(conn, [row.parent_id], row.updated_at)
        else:
            return row
        return conn.execute(select(tickers).where(T.id == row.id)).one()

    def _notify_due(self, conn: Connection, row: Any) -> None:
        due = row.execution_time
        waits = row.status == Status.IDLE.value and not row.awaiting_parent and due is not None
        self._notify(conn, WorkDue(dialects.as_utc(due)) if waits else _CHANGED)

    def _refused_keys(
        self, conn: Connection, candidates: Sequence[tuple[UUID, str, str]]
    ) -> dict[UUID, KeyHeld]:
        """Of ``candidates`` (id, function, key: rows about to hold a key), those
        refused because another row holds the key or an earlier one (by id) takes it."""
        if not candidates:
            return {}
        ordered = sorted(candidates)
        holders = held_keys_of(conn, ((f, k) for _, f, k in ordered))
        return claim_keys(ordered, holders)


def _column_values(changes: dict[str, Any]) -> dict[str, Any]:
    """Replaced fields as column values."""
    values = dict(changes)
    if values.get("retry_intervals") is not None:
        values["retry_intervals"] = list(values["retry_intervals"])
    values["headers"] = values.get("headers") or None
    values["priority"] = int(values["priority"])
    return values

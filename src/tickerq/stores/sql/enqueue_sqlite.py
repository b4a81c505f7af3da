"""Adding time tickers on SQLite: one hop to the writer thread, group commit.

The general path builds an SQLAlchemy INSERT per call (compile cache lookup,
per-column bind processing) and runs it through the store's writer thread.
Here each add becomes plain rows (values stored exactly as SQLAlchemy stores
them on SQLite, see :mod:`tickerq.stores.sql.schema`) and one prepared
statement run on the writer's own sqlite3 connection, on the writer thread,
so it never waits on another write transaction of this process.

Adds that arrive while a transaction is under way are queued and committed
together in the next one (group commit): one ``BEGIN IMMEDIATE`` ... ``COMMIT``
for all of them. Each add still stands alone: a duplicate id or a missing
parent fails that add only (its rows are rolled back to a savepoint), and an
add's ``await`` returns only once the transaction holding its rows has
committed. A child whose parent was stored earlier and has already started
or ended needs its chain resolved at once: that add is handed back to the
general path (:meth:`SqlStore.add_time_tickers`), which does it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from uuid import UUID

from tickerq.enums import Status, TickerKind
from tickerq.errors import DuplicateTickerError, TickerNotFoundError, TickerStateError
from tickerq.models import TimeTicker

__all__ = ["GENERAL_PATH", "SqliteEnqueue"]

R = TypeVar("R")

Submit = Callable[[Callable[[sqlite3.Connection], R]], "asyncio.Future[R]"]
"""Runs a function of the writer's sqlite3 connection on the writer thread."""

GENERAL_PATH: Final = "general path"
"""An add's outcome when a parent outside it has started or ended (see the module doc)."""

_TIME = TickerKind.TIME.value
_WAITING_PARENTS = frozenset({Status.IDLE.value})
_CHUNK = 500

_COLUMNS = (
    "id", "kind", "function", "status", "priority", "execution_time", "request", "retries",
    "retry_intervals", "retry_count", "timeout", "description", "parent_id", "run_condition",
    "awaiting_parent", "cancel_requested", "claims", "stale_restarts", "created_at",
    "updated_at", "has_children", "headers", "concurrency_key",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO tickerq_tickers ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)


def _text(moment: datetime | None) -> str | None:
    """A datetime as SQLAlchemy keeps it on SQLite: naive UTC text with microseconds."""
    if moment is None:
        return None
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def _row(t: TimeTicker, has_children: bool) -> tuple[Any, ...]:
    """The column values (in ``_COLUMNS`` order) of a new time ticker row."""
    created = _text(t.created_at)
    updated = created if t.updated_at == t.created_at else _text(t.updated_at)
    due = t.execution_time
    intervals = None if t.retry_intervals is None else list(t.retry_intervals)
    parent = t.parent_id
    return (
        t.id.hex, _TIME, t.function, t.status.value, int(t.priority),
        created if due == t.created_at else _text(due), _json(t.request), t.retries,
        _json(intervals), t.retry_count, t.timeout, t.description,
        None if parent is None else parent.hex,
        None if t.run_condition is None else t.run_condition.value,
        0 if parent is None else 1, 0, 0, 0, created, updated, 1 if has_children else 0,
        json.dumps(t.headers) if t.headers else None, t.concurrency_key,
    )  # fmt: skip


@dataclass(slots=True)
class _Add:
    """One call's rows, waiting for (or in) a transaction."""

    rows: list[tuple[Any, ...]]
    outside: list[str]
    """Hex ids of the parents that are not among the rows (stored earlier)."""
    future: asyncio.Future[object] = field(repr=False)


class SqliteEnqueue:
    """Group commit of new time tickers into a SQLite file, from one event loop."""

    def __init__(self, path: str, submit: Submit[list[object]]) -> None:
        self.path = path
        self._submit = submit
        self._pending: list[_Add] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        """A flush of the pending adds is scheduled on the loop."""
        self._busy = False
        """A batch is on the writer thread and its outcomes not yet handed out."""
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def add(self, new: Sequence[TimeTicker], outside: set[UUID]) -> bool:
        """Store ``new`` (parents before children; ids unique among them) atomically.

        Returns False, having stored nothing, when a parent in ``outside`` has
        started or ended: the caller adds them through the general path.
        Raises DuplicateTickerError or TickerNotFoundError (nothing stored).
        """
        loop = asyncio.get_running_loop()
        parents = {t.parent_id for t in new}
        rows = [_row(t, t.id in parents) for t in new]
        add = _Add(rows, [p.hex for p in outside], loop.create_future())
        if loop is not self._loop:
            if self._busy or self._scheduled:  # adds of another loop are under way
                return _outcome((await self._submit(functools.partial(_commit, batch=[add])))[0])
            self._loop = loop
        self._pending.append(add)
        if not (self._busy or self._scheduled):
            self._scheduled = True
            loop.call_soon(self._flush)
        return _outcome(await add.future)

    def _flush(self) -> None:
        """Commit the pending adds here and now if the write lock is free at once;
        else on the writer thread, which waits for it."""
        self._scheduled = False
        batch = [add for add in self._pending if not add.future.done()]  # not cancelled
        self._pending = []
        if not batch:
            return
        if self._closed:
            _hand_out(batch, [TickerStateError(f"the store at {self.path} is closed")] * len(batch))
            return
        db = self._db
        try:
            if db is None:
                db = self._db = _connect(self.path)
            outcomes = _commit(db, batch)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY and not (db and db.in_transaction):
                self._to_writer(batch)
            else:
                _hand_out(batch, [exc] * len(batch))
            return
        except Exception as exc:
            outcomes = [exc] * len(batch)
        _hand_out(batch, outcomes)

    def _to_writer(self, batch: list[_Add]) -> None:
        try:
            done = self._submit(functools.partial(_commit, batch=batch))
        except Exception as exc:  # the store was closed meanwhile
            _hand_out(batch, [exc] * len(batch))
            return
        self._busy = True
        done.add_done_callback(functools.partial(self._handed_back, batch))

    def _handed_back(self, batch: list[_Add], done: asyncio.Future[list[object]]) -> None:
        self._busy = False
        if done.cancelled():
            outcomes: list[object] = [asyncio.CancelledError()] * len(batch)
        elif (error := done.exception()) is not None:
            outcomes = [error] * len(batch)
        else:
            outcomes = done.result()
        _hand_out(batch, outcomes)
        if self._pending and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        """Close the connection of the adds committed on the loop; later adds fail."""
        self._closed = True
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _hand_out(batch: list[_Add], outcomes: list[object]) -> None:
    for add, outcome in zip(batch, outcomes, strict=True):
        if add.future.done():  # its caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            add.future.set_exception(outcome)
        else:
            add.future.set_result(outcome)


def _outcome(outcome: object) -> bool:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome is not GENERAL_PATH


def _commit(db: sqlite3.Connection, batch: list[_Add]) -> list[object]:
    """On the writer thread: every add of ``batch`` in one transaction; their outcomes
    (True, GENERAL_PATH or the error that add raises)."""
    outcomes: list[object] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for add in batch:
            outcomes.append(_insert(db, add))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _insert(db: sqlite3.Connection, add: _Add) -> object:
    if add.outside:
        marks = ", ".join("?" * len(add.outside))
        found = dict(
            db.execute(
                f"SELECT id, status FROM tickerq_tickers WHERE id IN ({marks})", add.outside
            ).fetchall()
        )
        for parent in add.outside:
            if parent not in found:
                return TickerNotFoundError("time ticker", UUID(hex=parent))
        if not _WAITING_PARENTS.issuperset(found.values()):
            return GENERAL_PATH
    if len(add.rows) == 1:  # a failed statement changes nothing: no savepoint needed
        try:
            db.execute(_INSERT, add.rows[0])
        except sqlite3.IntegrityError as exc:
            return _why(db, add, exc)
    else:
        db.execute("SAVEPOINT tickerq_add")
        try:
            db.executemany(_INSERT, add.rows)
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK TO tickerq_add")
            db.execute("RELEASE tickerq_add")
            return _why(db, add, exc)
        db.execute("RELEASE tickerq_add")
    if add.outside:  # their runs' ends must resolve the new children
        marks = ", ".join("?" * len(add.outside))
        db.execute(
            f"UPDATE tickerq_tickers SET has_children = 1 WHERE id IN ({marks})", add.outside
        )
    return True


def _why(db: sqlite3.Connection, add: _Add, error: sqlite3.IntegrityError) -> BaseException:
    """The error of an add whose INSERT broke a constraint (its rows are not stored)."""
    ids = [row[0] for row in add.rows]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        taken = db.execute(
            f"SELECT id FROM tickerq_tickers WHERE id IN ({marks}) LIMIT 1", chunk
        ).fetchone()
        if taken is not None:
            return DuplicateTickerError("time ticker", UUID(hex=taken[0]))
    return error


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    for pragma in ("PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"):
        db.execute(pragma)
    return db

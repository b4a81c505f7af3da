"""Shared parts of the SQL store: connection, notices, events and chain resolution."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    func,
    literal,
    or_,
    select,
    update,
)

from tickerq.enums import RunCondition, Status, TickerKind
from tickerq.errors import StoreConnectionError, TickerStateError
from tickerq.events import CronTickerChanged, TickerChanged
from tickerq.notices import CRONS, NODES, TICKERS, Changed, Notice, encode
from tickerq.operations import kind_name
from tickerq.stores.base import Outcome, Store
from tickerq.stores.reads import ChangeMarker
from tickerq.stores.sql import dialects
from tickerq.stores.sql.hot_sqlite import SqliteHotPath
from tickerq.stores.sql.notify import CHANNEL, Listener, Pacer
from tickerq.stores.sql.rows import JOB_COLUMN_NAMES
from tickerq.stores.sql.schema import tickers
from tickerq.stores.sql.threaded import ThreadedEngine
from tickerq.stores.sql.watch import SqliteWatcher
from tickerq.urls import mask_secrets, mask_url

if TYPE_CHECKING:  # PostgreSQL only, imported when a PostgreSQL store opens
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tickerq.stores.sql.enqueue_pg import PgEnqueue
    from tickerq.stores.sql.hot import HotPath

__all__ = [
    "CHANGED_NODES",
    "CHANGED_WORK",
    "IDLE",
    "IN_CHUNK",
    "JOB_COLUMNS",
    "OCCURRENCE",
    "RUNNING",
    "TIME",
    "SqlBase",
    "T",
    "kind_name",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")

T = tickers.c
IDLE, RUNNING = Status.IDLE.value, Status.IN_PROGRESS.value
TIME, OCCURRENCE = TickerKind.TIME.value, TickerKind.CRON_OCCURRENCE.value
JOB_COLUMNS = tuple(T[name] for name in JOB_COLUMN_NAMES)

IN_CHUNK = 500
"""Ids per ``IN (...)`` list (SQLite builds before 3.32 take at most 999 parameters)."""

CHANGED_WORK = Changed(frozenset({TICKERS, CRONS}))
"""The notice of a node's own work (jobs claimed and ended, crons fired, leases
reclaimed, retention): rows of either kind changed. Paced (see ``Pacer``)."""

CHANGED_NODES = Changed(frozenset({NODES}))
"""A node started, reported (heartbeat) or stopped."""

PACE = 0.1
"""Seconds between two notices of a node's own work, at most (see ``Pacer``)."""

SAFETY_POLL = 5.0
"""While LISTEN is up, :meth:`SqlBase.watch` still reads the change marker this
often: a notice can be lost (a sender's paced notice that failed, a node of an
older version that sends fewer)."""


def _matching_conditions(parent: Status) -> list[str]:
    return [
        c.value for c in RunCondition if c is not RunCondition.IN_PROGRESS and c.matches(parent)
    ]


class SqlBase(Store):
    """Connection handling and helpers shared by the SQL store's parts."""

    shared = True

    use_hot_path = True
    """False: every claim and result goes through the general path (SQLAlchemy, one
    transaction). The contract suite runs once each way, so both paths answer alike."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int | None = None,
        auto_upgrade: bool = False,
        pgbouncer: bool | None = None,
        listen_url: str | None = None,
    ) -> None:
        """``pool_size``, ``pgbouncer`` and ``listen_url`` override the URL's options of
        the same names (see docs/stores.md, "Connections")."""
        self.url = url
        self.auto_upgrade = auto_upgrade
        self.dialect = dialects.for_url(url).with_options(
            pgbouncer=pgbouncer, listen_url=listen_url
        )
        self.budget = self.dialect.budget(pool_size)
        """How this node's connections are shared out (pool, hot path, LISTEN)."""
        self.pool_size = self.budget.total
        self.poll_interval = self.dialect.poll_interval_for(self.budget.listen)
        self._engine: AsyncEngine | ThreadedEngine | None = None
        self._writer: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._listener: Listener | None = None
        self._pacer: Pacer | None = None
        self._watches: list[float] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._pg_enqueue: PgEnqueue | None = None
        self._unwritten: list[Outcome] = []
        """Results the hot path left over whose general-path write failed after the
        claim that carried them (written with the next claim)."""
        self.hot: HotPath | SqliteHotPath | None = None
        """The engine's finish-and-claim path (one statement on PostgreSQL, one
        thread hop on SQLite); None until open, and on PostgreSQL when the
        connection budget has no room for it."""

    @property
    def sa_engine(self) -> AsyncEngine | ThreadedEngine:
        """The SQLAlchemy engine (after open); not tickerq's job engine, which is ``app.engine``.

        PostgreSQL: an ``AsyncEngine``; SQLite: a
        :class:`~tickerq.stores.sql.threaded.ThreadedEngine` (the same API, as far as
        the store uses it)."""
        if self._engine is None:
            raise TickerStateError(f"the store {self.dialect.safe_url} is not open")
        return self._engine

    @property
    def is_open(self) -> bool:
        """Whether the store is connected (between :meth:`open` and :meth:`close`)."""
        return self._engine is not None

    async def open(self) -> None:
        """Connect, and create the schema if the database is empty.

        A schema from an older tickerq is upgraded if the store was made with
        ``auto_upgrade=True``; otherwise TickerStateError says how to upgrade it.
        """
        self.dialect.check_location()
        if self._engine is None:
            self._engine = self.dialect.create_engine(self.budget.pool)
        try:
            await self.dialect.prepare(self._engine, self.auto_upgrade)
        except BaseException as exc:
            engine, self._engine = self._engine, None
            await engine.dispose()
            if _is_connection_failure(exc):
                raise StoreConnectionError(
                    f"cannot connect to {self.dialect.name} at {self.dialect.where}: "
                    f"{type(exc).__name__}: {mask_secret(str(exc).splitlines()[0], self.url)}"
                ) from None
            raise
        file = self.dialect.file
        if file is not None and self._writer is None:
            self._writer = self.dialect.create_writer_engine()
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="tickerq-sqlite-writer")
        if file is None:
            from tickerq.stores.sql.enqueue_pg import PgEnqueue

            assert not isinstance(self._engine, ThreadedEngine)
            self._pg_enqueue = PgEnqueue(self._engine)
            if self._pacer is None:
                self._pacer = Pacer(PACE, self._send_changed_work)
        if self.hot is None and self.budget.hot_path and self.use_hot_path:
            if file is not None:
                self.hot = SqliteHotPath(file)
            else:
                from tickerq.stores.sql.hot import HotPath

                self.hot = HotPath(self.dialect.plain_url, pgbouncer=self.dialect.pgbouncer)
        if self._watches and self._watch_task is None:
            self._start_watch()

    async def close(self) -> None:
        """Close every pooled connection (and the LISTEN and hot-path connections)."""
        watch, self._watch_task = self._watch_task, None
        if watch is not None:  # open() starts it again for the watches still asked for
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        if self._pacer is not None:
            await self._pacer.close()
            self._pacer = None
        if self.hot is not None:
            await self.hot.close()
            self.hot = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        enqueue, self._pg_enqueue = self._pg_enqueue, None
        if enqueue is not None:
            await enqueue.close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        writer, thread = self._writer, self._writer_thread
        self._writer = self._writer_thread = None
        if writer is not None and thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, writer.dispose)
            thread.shutdown(wait=True)

    async def ping(self) -> None:
        """One small read. SQLite: on a new read-only connection to the file, in a
        thread (the pool's open connections would still read a file deleted or
        moved away); PostgreSQL: ``SELECT 1`` on a pooled connection."""
        engine = self.sa_engine  # TickerStateError while the store is closed
        file = self.dialect.file
        if file is None:
            async with engine.connect() as conn:
                await conn.execute(select(literal(1)))
            return
        await asyncio.to_thread(_read_sqlite_file, file)

    async def write(self, transaction: Callable[[Connection], R]) -> R:
        """Run ``transaction(conn)`` in one write transaction and return its result.

        On SQLite the whole transaction runs on the store's writer thread: nothing
        awaits while it holds the file's write lock, so an event loop blocked by a
        job (here or in another process) never holds up the other nodes sharing
        the file. On PostgreSQL it runs on a pooled connection (``run_sync``).
        """
        if self._writer is not None and self._writer_thread is not None:
            writer = self._writer

            def run() -> R:
                with writer.begin() as conn:
                    return transaction(conn)

            return await asyncio.get_running_loop().run_in_executor(self._writer_thread, run)
        async with self.sa_engine.begin() as conn:
            return await conn.run_sync(transaction)

    def write_sqlite(self, transaction: Callable[[Any], R]) -> asyncio.Future[R]:
        """SQLite: run ``transaction(db)`` on the writer thread with the writer's sqlite3
        connection ``db`` (in autocommit mode: the transaction begins and ends itself)."""
        writer, thread = self._writer, self._writer_thread
        if writer is None or thread is None:
            raise TickerStateError(f"the store {self.dialect.safe_url} is not open")

        def run() -> R:
            raw = writer.raw_connection()
            try:
                return transaction(raw.driver_connection)
            finally:
                raw.close()

        return asyncio.get_running_loop().run_in_executor(thread, run)

    async def listen(self) -> None:
        """On PostgreSQL, LISTEN for other nodes' notices (on ``listen_url`` if given)
        and publish them on the bound bus, until the store closes.

        Not when the connection budget has no room for it, nor in PgBouncer mode
        without a ``listen_url``: the node then polls every
        ``dialects.NO_LISTEN_POLL_INTERVAL`` seconds (unless the engine sets its own).
        """
        if not self.budget.listen or self._listener is not None:
            return
        dsn = self.dialect.listen_url or self.dialect.plain_url
        self._listener = Listener(dsn, mask_url(dsn), self._publish_notice)
        await self._listener.start()

    @property
    def listening(self) -> bool:
        """True while other nodes' notices arrive (PostgreSQL, LISTEN connected)."""
        return self._listener is not None and self._listener.up

    def _publish_notice(self, notice: Notice) -> None:
        bus = self.events
        if bus is not None:
            bus.publish_notice(notice)

    def _notify(self, conn: Connection, notice: Notice) -> None:
        """Tell other nodes, when this transaction commits (PostgreSQL only). At most
        once per transaction: PostgreSQL serializes the commits that notify."""
        self.dialect.notify(conn, CHANNEL, encode(notice))

    def _pace(self) -> tuple[str | None, int]:
        """Before a write of the node's own work: the notice payload it may carry
        (None: it may not, or no other node listens: SQLite) and the pacer's mark."""
        pacer = self._pacer
        if pacer is None:
            return None, 0
        return (encode(CHANGED_WORK) if pacer.may_send() else None), pacer.mark()

    def _paced(self, mark: int, *, sent: bool, changed: bool) -> None:
        """After a write of the node's own work: whether it sent the notice, and
        whether it changed anything (a change without a notice is owed)."""
        pacer = self._pacer
        if pacer is None:
            return
        if sent:
            pacer.sent(mark)
        elif changed:
            pacer.owe()

    def _notify_work(self, conn: Connection) -> tuple[bool, int]:
        """In a write transaction of the node's own work that changes rows: send its
        paced notice if it may. Returns (sent, mark) for :meth:`_paced`."""
        payload, mark = self._pace()
        if payload is None:
            return False, mark
        self.dialect.notify(conn, CHANNEL, payload)
        return True, mark

    async def _send_changed_work(self) -> None:
        await self.write(lambda conn: self._notify(conn, CHANGED_WORK))

    def watch(self, interval: float) -> Callable[[], None]:
        """Publish :class:`~tickerq.notices.Changed` on the bound bus for what other
        processes change, until the returned function is called.

        On PostgreSQL this LISTENs (the other nodes' notices say what changed); the
        change marker is read every ``interval`` seconds only while LISTEN is down
        (or impossible), else every ``SAFETY_POLL`` seconds (or ``interval`` if
        longer). On SQLite the marker is read when the file's ``PRAGMA
        data_version`` moved, looked at every ``interval`` seconds (a few
        microseconds when nothing changed). Only while the store is open: a watch
        asked for before it opens, or kept across a close, starts when it opens.
        """
        self._watches.append(interval)
        if self._engine is not None and (self._watch_task is None or self._watch_task.done()):
            self._start_watch()

        def stop() -> None:
            if interval in self._watches:
                self._watches.remove(interval)
            if not self._watches and self._watch_task is not None:
                self._watch_task.cancel()
                self._watch_task = None

        return stop

    def _start_watch(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(
            self._watch(), name="tickerq-watch"
        )

    async def _watch(self) -> None:
        file = self.dialect.file
        gate = SqliteWatcher(file) if file is not None else None
        previous: ChangeMarker | None = None
        read_at = float("-inf")
        try:
            if gate is None:
                try:
                    await self.listen()
                except Exception as exc:
                    logger.warning("LISTEN failed (%s); polling for changes instead", exc)
            while self._watches:
                interval = min(self._watches)
                now = asyncio.get_running_loop().time()
                if gate is not None:
                    look = gate.changed()
                else:
                    look = not self.listening or now - read_at >= max(interval, SAFETY_POLL)
                if look:
                    read_at = now
                    previous = await self._look(previous, gate)
                await asyncio.sleep(interval)
        finally:
            if gate is not None:
                gate.close()

    async def _look(
        self, previous: ChangeMarker | None, gate: SqliteWatcher | None
    ) -> ChangeMarker | None:
        """Read the change marker; publish what moved since ``previous``."""
        try:
            marker = await self.change_marker()
        except Exception as exc:
            logger.debug("reading the change marker failed: %s", exc)
            if gate is not None:
                gate.close()  # look again next time
            return previous
        if marker is not None and previous is not None and marker != previous:
            topics = marker.changed_since(previous)
            if topics:
                self._publish_notice(Changed(topics))
        return marker

    def _announce(
        self, kind: str, ticker_id: UUID, function: str, status: str, at: datetime
    ) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(TickerChanged(at, TickerKind(kind), ticker_id, function, Status(status)))

    def _announce_cron(self, cron_id: UUID, at: datetime) -> None:
        bus = self.events
        if bus is not None and bus.active:
            bus.publish(CronTickerChanged(at, cron_id))

    # -- chains -----------------------------------------------------------------------

    def _finish(
        self,
        conn: Connection,
        ticker_id: UUID,
        status: Status,
        now: datetime,
        *,
        error_message: str | None = None,
        skipped_reason: str | None = None,
    ) -> None:
        conn.execute(
            update(tickers)
            .where(T.id == ticker_id)
            .values(
                status=status.value,
                finished_at=now,
                updated_at=now,
                error_message=error_message,
                skipped_reason=skipped_reason,
                lock_holder=None,
                locked_at=None,
                lease_until=None,
            )
        )
        self._resolve_children(conn, ticker_id, status, now)

    def _resolve_children(
        self, conn: Connection, parent_id: UUID, parent: Status, now: datetime
    ) -> None:
        self._resolve_children_of(conn, [parent_id], parent, now)

    def _resolve_children_of(
        self, conn: Connection, parent_ids: Sequence[UUID], parent: Status, now: datetime
    ) -> None:
        """Resolve the waiting children of parents that all ended with ``parent``: those
        whose run condition matches become due, the others SKIPPED (recursively)."""
        if not parent_ids:
            return
        if len(parent_ids) > IN_CHUNK:
            for i in range(0, len(parent_ids), IN_CHUNK):
                self._resolve_children_of(conn, parent_ids[i : i + IN_CHUNK], parent, now)
            return
        waiting = and_(T.parent_id.in_(parent_ids), T.awaiting_parent.is_(True), T.status == IDLE)
        matching = _matching_conditions(parent)
        runs = (
            or_(T.run_condition.in_(matching), T.run_condition.is_(None))
            if (RunCondition.ON_ANY_COMPLETED_STATUS.value in matching)
            else T.run_condition.in_(matching)
        )
        conn.execute(
            update(tickers)
            .where(waiting, runs)
            .values(
                awaiting_parent=False,
                execution_time=dialects.later_of(T.execution_time, now),
                updated_at=now,
            )
        )
        skipped = conn.execute(
            update(tickers)
            .where(waiting)
            .values(
                awaiting_parent=False,
                status=Status.SKIPPED.value,
                finished_at=now,
                updated_at=now,
                skipped_reason=literal("run condition ")
                + func.coalesce(T.run_condition, RunCondition.ON_ANY_COMPLETED_STATUS.value)
                + literal(f" did not match the parent's status {parent.name}"),
            )
            .returning(T.id)
        )
        self._resolve_children_of(conn, list(skipped.scalars()), Status.SKIPPED, now)

    def _start_in_progress_children(
        self, conn: Connection, parents: list[UUID], now: datetime
    ) -> None:
        conn.execute(
            update(tickers)
            .where(
                T.parent_id.in_(parents),
                T.awaiting_parent.is_(True),
                T.status == IDLE,
                T.run_condition == RunCondition.IN_PROGRESS.value,
            )
            .values(
                awaiting_parent=False,
                execution_time=dialects.later_of(T.execution_time, now),
                updated_at=now,
            )
        )


def _read_sqlite_file(path: str) -> None:
    """Open ``path`` read-only (never creating it) and read its tickers table's schema."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False)
    try:
        db.execute(f"SELECT 1 FROM {tickers.name} LIMIT 0").fetchall()
    finally:
        db.close()


def _is_connection_failure(exc: BaseException) -> bool:
    """True for errors that mean the server could not be reached or refused us."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and isinstance(cause, OSError)


def mask_secret(text: str, url: str) -> str:
    """``text`` without the password of ``url`` in it."""
    return mask_secrets(text, url)

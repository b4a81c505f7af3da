"""SQLite through SQLAlchemy's plain (sync) engine, each connection on a thread of its own.

The SQL store's reads and schema work on SQLite used SQLAlchemy's ``AsyncEngine``
over aiosqlite; that loads ``sqlalchemy.ext.asyncio`` (and with it the ORM),
greenlet and aiosqlite, about 8 MB of a worker's memory, for a driver that runs
every connection on a thread anyway. :class:`ThreadedEngine` offers the part
of the ``AsyncEngine`` API the store uses (``connect()``, ``begin()``,
``execute``, ``scalar``, ``scalars``, ``run_sync``, ``commit``, ``rollback``,
``dispose``) over a plain ``Engine``:

- a checked-out connection does all its work on one thread (a *worker*),
  one job at a time, in the order asked; a worker keeps its thread between
  checkouts, and there are at most ``size`` of them (a checkout waits for a
  free one, without blocking the event loop);
- results are buffered on the worker's thread, so reading them never touches
  the database from the event loop;
- the end of a checkout (commit or rollback, close, and the worker's return
  to the pool) runs on the worker's thread whatever happens to the task that
  asked for it: a cancelled task leaves no transaction open and no connection
  checked out;
- the engine's events apply as on any ``Engine`` (the store's SQLite
  settings: busy timeout, WAL, ``BEGIN IMMEDIATE``).

PostgreSQL keeps SQLAlchemy's ``AsyncEngine`` (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, TypeVarTuple, overload

from sqlalchemy import exc

from tickerq.errors import InvalidArgumentError

if TYPE_CHECKING:
    from sqlalchemy.engine import (
        URL,
        Connection,
        CursorResult,
        Dialect,
        Engine,
        Result,
        ScalarResult,
    )
    from sqlalchemy.engine.interfaces import (
        CoreExecuteOptionsParameter,
        _CoreAnyExecuteParams,
        _CoreSingleExecuteParams,
    )
    from sqlalchemy.sql.base import Executable
    from sqlalchemy.sql.selectable import TypedReturnsRows
    from sqlalchemy.util.typing import TupleAny, Unpack

__all__ = ["ThreadedConnection", "ThreadedEngine"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Ts = TypeVarTuple("_Ts")

_Job = Callable[[], None]


class _Worker:
    """A thread that runs one checkout's jobs in order, and the connection it holds."""

    __slots__ = ("conn", "generation", "jobs", "thread")

    def __init__(self, name: str, generation: int) -> None:
        self.conn: Connection | None = None
        self.generation = generation
        self.jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()

    def stop(self) -> None:
        """End the thread once the jobs queued before this have run."""
        self.jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the task that waited was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _begin(conn: Connection) -> None:
    conn.begin()


def _buffered(result: CursorResult[Any]) -> Result[Any]:
    """``result`` with every row read (on the worker's thread): a result without rows
    as it is (its rowcount kept), else an equal result over the rows read."""
    if not result.returns_rows:
        return result
    return result.freeze()()


class ThreadedEngine:
    """A plain SQLAlchemy ``Engine`` used from asyncio: each checked-out connection runs
    its work on a thread of its own (see the module's doc). At most ``size``
    connections are checked out at once; the engine's pool should hold as many."""

    def __init__(self, sync_engine: Engine, size: int, *, name: str = "tickerq-sqlite") -> None:
        if size < 1:
            raise InvalidArgumentError(f"size must be 1 or more, got {size!r}")
        self.sync_engine = sync_engine
        """The plain engine the connections come from (its events and pool apply)."""
        self.size = size
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._workers = 0
        """Workers made and not retired: idle, checked out, or being handed over."""
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Worker]]] = deque()
        self._generation = 0
        """Bumped by :meth:`dispose`: workers of an older generation retire when released."""

    @property
    def url(self) -> URL:
        """The database URL."""
        return self.sync_engine.url

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect."""
        return self.sync_engine.dialect

    @property
    def checked_out(self) -> int:
        """Connections checked out now (workers busy or being handed over)."""
        with self._lock:
            return self._workers - len(self._idle)

    def connect(self) -> ThreadedConnection:
        """A connection, checked out by ``async with``; a statement begins a
        transaction (SQLAlchemy's autobegin), which ends rolled back at the block's
        end unless committed."""
        return ThreadedConnection(self, begin=False)

    def begin(self) -> ThreadedConnection:
        """A connection in a transaction, by ``async with``: committed at the block's
        end, rolled back if it raises (or is cancelled)."""
        return ThreadedConnection(self, begin=True)

    async def dispose(self) -> None:
        """Close the idle connections and end their threads; connections checked out
        now are closed (not pooled) and their threads end when they are released.
        The engine stays usable: later checkouts open new connections."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            self._workers -= len(idle)
        for worker in idle:
            worker.stop()
        for worker in idle:
            worker.thread.join()
        self.sync_engine.dispose()

    # -- workers ------------------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._workers < self.size:
                self._workers += 1
                return self._new_worker()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[_Worker] = loop.create_future()
            waiter = (loop, future)
            self._waiters.append(waiter)
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if future.done() and not future.cancelled():
                self._release(future.result())  # handed over as this task was cancelled
            raise

    def _new_worker(self) -> _Worker:
        return _Worker(f"{self._name}-{id(self):x}", self._generation)

    def _release(self, worker: _Worker) -> None:
        """Give a worker (its connection closed) to the first waiting checkout, or
        keep it idle; a worker from before a dispose retires. Any thread."""
        while True:
            with self._lock:
                if worker.generation != self._generation:
                    worker.stop()
                    if not self._waiters:
                        self._workers -= 1
                        return
                    worker = self._new_worker()  # the waiter gets a fresh one
                if not self._waiters:
                    self._idle.append(worker)
                    return
                loop, future = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(self._hand, future, worker)
                return
            except RuntimeError:  # that waiter's loop is closed: try the next one
                continue

    def _hand(self, future: asyncio.Future[_Worker], worker: _Worker) -> None:
        if future.done():  # the waiting task was cancelled meanwhile
            self._release(worker)
        else:
            future.set_result(worker)

    def _stale(self, worker: _Worker) -> bool:
        return worker.generation != self._generation


class ThreadedConnection:
    """A connection of a :class:`ThreadedEngine`, checked out by ``async with`` (see
    :meth:`ThreadedEngine.connect` and :meth:`ThreadedEngine.begin`). Its methods
    run on the connection's thread, one at a time, in the order called."""

    def __init__(self, engine: ThreadedEngine, *, begin: bool) -> None:
        self.engine = engine
        self._begin = begin
        self._worker: _Worker | None = None
        self._closed = False

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect."""
        return self.engine.dialect

    @property
    def sync_connection(self) -> Connection | None:
        """The plain connection (None until the first statement of a ``connect()``)."""
        return self._worker.conn if self._worker is not None else None

    def in_transaction(self) -> bool:
        """Whether a transaction is in progress."""
        conn = self.sync_connection
        return conn is not None and conn.in_transaction()

    async def __aenter__(self) -> ThreadedConnection:
        if self._worker is not None or self._closed:
            raise exc.InvalidRequestError("this connection was already checked out")
        self._worker = await self.engine._acquire()
        if self._begin:
            try:
                await self._run(_begin)
            except BaseException:
                await self._end(commit=False)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._end(commit=self._begin and exc_type is None)

    async def close(self) -> None:
        """Roll back what is not committed and return the connection to the pool."""
        await self._end(commit=False)

    # -- statements ---------------------------------------------------------------------

    @overload
    async def execute(
        self,
        statement: TypedReturnsRows[Unpack[_Ts]],
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> Result[Unpack[_Ts]]: ...

    @overload
    async def execute(
        self,
        statement: Executable,
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> Result[Unpack[TupleAny]]: ...

    async def execute(
        self,
        statement: Executable,
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> Result[Unpack[TupleAny]]:
        """Run a statement; its result, rows already read."""
        return await self._run(
            lambda conn: _buffered(
                conn.execute(statement, parameters, execution_options=execution_options)
            )
        )

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None
    ) -> Result[Unpack[TupleAny]]:
        """Run a SQL string as the driver takes it; its result, rows already read."""
        return await self._run(lambda conn: _buffered(conn.exec_driver_sql(statement, parameters)))

    @overload
    async def scalar(
        self,
        statement: TypedReturnsRows[_T],
        parameters: _CoreSingleExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> _T | None: ...

    @overload
    async def scalar(
        self,
        statement: Executable,
        parameters: _CoreSingleExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> Any: ...

    async def scalar(
        self,
        statement: Executable,
        parameters: _CoreSingleExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> Any:
        """The first column of the first row of a statement's result (None: no row)."""
        return await self._run(
            lambda conn: conn.scalar(statement, parameters, execution_options=execution_options)
        )

    @overload
    async def scalars(
        self,
        statement: TypedReturnsRows[_T],
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> ScalarResult[_T]: ...

    @overload
    async def scalars(
        self,
        statement: Executable,
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> ScalarResult[Any]: ...

    async def scalars(
        self,
        statement: Executable,
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> ScalarResult[Any]:
        """The first column of every row of a statement's result."""
        result = await self.execute(statement, parameters, execution_options=execution_options)
        return result.scalars()

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``fn(connection, *args, **kwargs)`` on the connection's thread, with the plain
        connection; its return value."""
        return await self._run(lambda conn: fn(conn, *args, **kwargs))

    async def commit(self) -> None:
        """Commit the transaction in progress (if any)."""
        await self._run(lambda conn: conn.commit())

    async def rollback(self) -> None:
        """Roll back the transaction in progress (if any)."""
        await self._run(lambda conn: conn.rollback())

    # -- the thread ---------------------------------------------------------------------

    def _submit(self, work: Callable[[], _T]) -> asyncio.Future[_T]:
        """Queue ``work`` on the worker's thread; a future of its outcome."""
        worker = self._worker
        if worker is None or self._closed:
            raise exc.ResourceClosedError("this connection is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def job() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = work()
            except BaseException as caught:
                error = caught
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)

        worker.jobs.put(job)
        return future

    async def _run(self, work: Callable[[Connection], _T]) -> _T:
        worker = self._worker
        engine = self.engine

        def on_connection() -> _T:
            assert worker is not None
            if worker.conn is None:
                worker.conn = engine.sync_engine.connect()
            return work(worker.conn)

        future = self._submit(on_connection)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()  # settled as the task was cancelled: nobody reads it
            raise

    async def _end(self, *, commit: bool) -> None:
        """Commit (if ``commit``) or roll back, close, and release the worker, all on its
        thread: this runs to the end even if the awaiting task is cancelled."""
        worker = self._worker
        if worker is None or self._closed:
            return
        engine = self.engine

        def end() -> None:
            conn, worker.conn = worker.conn, None
            try:
                if conn is not None:
                    try:
                        if commit and conn.in_transaction():
                            conn.commit()
                    except BaseException:
                        # SQLite keeps the transaction open when COMMIT fails (a
                        # deferred foreign key), where SQLAlchemy counts it ended:
                        # the connection's state is unknown, so it is not pooled.
                        conn.invalidate()
                        raise
                    finally:
                        if engine._stale(worker):
                            conn.invalidate()  # disposed meanwhile: close it, don't pool it
                        conn.close()  # rolls back what is left
            finally:
                engine._release(worker)

        future = self._submit(end)
        self._closed = True
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()
            raise

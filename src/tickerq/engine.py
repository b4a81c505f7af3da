"""The engine: sleeps until work is due, claims it up to the free slots, runs it.

One asyncio task (the loop) decides; each claimed job runs in a task of its
own (async functions on the loop, sync ones in the thread pool, LONG_RUNNING
ones in a thread of their own). Results are written back in batches: every
job that ends in the same turn of the event loop goes to the store in one
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import traceback as tb
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.context import TickerContext
from tickerq.enums import Priority, Status
from tickerq.errors import TerminateExecution
from tickerq.events import EngineStateChanged
from tickerq.firing import fire_due_crons
from tickerq.models import Node
from tickerq.retry import RetryPolicy
from tickerq.stores.base import Job, Outcome

if TYPE_CHECKING:
    from tickerq.app import TickerQ
    from tickerq.functions import TickerFunction

__all__ = ["Engine", "EngineOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Tuning of the engine; the defaults suit most apps."""

    late_threshold: float = 1.0
    """A run that starts more than this many seconds after its time ends as DUE_DONE."""
    grace_period: float = 30.0
    """On stop, running jobs get this many seconds to finish before they are interrupted."""
    lease: float = 60.0
    """How long a claim holds without a heartbeat before another node may take it over."""
    heartbeat_interval: float = 10.0
    """How often a node on a shared store reports itself and extends its leases."""
    poll_interval: float | None = None
    """Look for due work at least this often (wake-ups from other nodes can be lost).
    None: the store's default (memory: never; SQLite: 0.5 s; PostgreSQL: 5 s)."""
    misfire_grace: float = 5.0
    """A cron fire later than this counts as missed (for the SKIP policy)."""
    retention: float | None = 7 * 24 * 3600.0
    """Ended tickers and occurrences older than this many seconds are deleted (None: keep)."""
    retention_batch: int = 500
    """Rows deleted per batch, so purging never holds long locks."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff used when a ticker has retries but no retry intervals."""


class _Run:
    """A job running on this node."""

    __slots__ = ("ctx", "fn", "interrupted", "job", "started_at", "task", "thread", "timed_out")

    def __init__(self, job: Job, fn: TickerFunction[Any], ctx: TickerContext[Any], now: datetime):
        self.job = job
        self.fn = fn
        self.ctx = ctx
        self.started_at = now
        self.task: asyncio.Task[None] | None = None
        self.thread: asyncio.Future[Any] | None = None
        self.interrupted = False
        self.timed_out = False


class Engine:
    """Runs an app's due work on this node. Created and driven by :class:`TickerQ`."""

    def __init__(self, app: TickerQ, options: EngineOptions) -> None:
        self.app = app
        self.options = options
        self.store = app.store
        self.clock = app.clock
        self.node_id = app.node_id
        self.max_concurrency = app.max_concurrency
        self.paused = False
        self.started_at: datetime | None = None
        self._running: dict[UUID, _Run] = {}
        self._active = 0
        self._fn_active: dict[str, int] = {}
        self._outcomes: list[Outcome] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._deadline: datetime | None = None
        self._stopping = False
        self._maintaining = False
        self._cancel_before_start: set[UUID] = set()
        self._idle = asyncio.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._rng = random.Random()
        self._limited: list[TickerFunction[Any]] = []
        self._known_functions = -1
        self._check_crons = True
        self._crons_checked_at = datetime.min.replace(tzinfo=UTC)
        self._store_error_at = datetime.min.replace(tzinfo=UTC)
        self._long_running = False
        self._functions: dict[str, TickerFunction[Any]] = {}

    # -- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def active(self) -> int:
        """Jobs running on this node now (LONG_RUNNING included)."""
        return len(self._running)

    @property
    def background_tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The loop and heartbeat tasks: their clock sleeps are polls and heartbeats, not
        due work (``tickerq.testing.advance`` jumps over them)."""
        return tuple(t for t in (self._loop_task, self._heartbeat_task) if t is not None)

    async def start(self) -> None:
        """Start the loop (and heartbeats on a shared store)."""
        self._functions = self.app._functions  # live: functions registered later count too
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="tickerq")
        self._stopping = False
        self.started_at = self.clock.now()
        # Rows held under this id belong to a predecessor that died: take them back.
        if await self.store.reclaim_expired(self.started_at, node=self.node_id):
            logger.warning("node %s took back the jobs a dead run of it held", self.node_id)
        await self.store.heartbeat(self._node(), [], self._lease_until(self.started_at))
        await self.store.listen(self._on_notice)
        self._loop_task = asyncio.create_task(self._main(), name="tickerq-engine")
        if self.store.shared or self.options.retention is not None:
            self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="tickerq-heartbeat")
        self._publish_state("running")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running jobs finish for ``grace`` seconds; interrupt the rest.

        Interrupted jobs go back to IDLE without using a retry, so they run
        again when a node starts; nothing claimed is left locked.
        """
        if self._loop_task is None:
            return
        self._stopping = True
        self.wake()
        await self._loop_task
        self._loop_task = None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        grace = self.options.grace_period if grace is None else grace
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                logger.warning(
                    "stopping: %d job(s) still running after %.1f s; interrupting them",
                    len(pending),
                    grace,
                )
                for run in list(self._running.values()):
                    self._interrupt(run)
                await asyncio.wait(pending, timeout=1.0)
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self._flush()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        await self.store.remove_node(self.node_id)
        self._publish_state("stopped")

    def pause(self) -> None:
        """Stop claiming new work; running jobs go on."""
        self.paused = True
        self._publish_state("paused")

    def resume(self) -> None:
        """Claim work again."""
        self.paused = False
        self._publish_state("running")
        self.wake()

    def wake(self, due: datetime | None = None) -> None:
        """Look for work now; with ``due``, only if that is earlier than the planned wake-up."""
        if due is not None:
            if self._deadline is not None and due >= self._deadline:
                return
            self._check_crons = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            self._idle.clear()
            wakeup.set_result(None)

    async def wait_idle(self) -> None:
        """Return once nothing is running, nothing is due and results are written."""
        while self.running:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    def _on_notice(self, kind: str, value: str) -> None:
        """A notice from another node (PostgreSQL NOTIFY)."""
        if kind == "cancel":
            with contextlib.suppress(ValueError):
                self.cancel_local(UUID(value))
        elif kind == "due":
            try:
                self.wake(datetime.fromisoformat(value))
            except ValueError:
                self.wake()
        else:
            self.wake()

    def is_running_elsewhere(self, ctx: TickerContext[Any]) -> bool:
        """Whether another run of the same cron ticker (or function) is in progress here."""
        for run in list(self._running.values()):
            other = run.ctx
            if other is ctx or other.function != ctx.function:
                continue
            if ctx.cron_ticker_id is None or other.cron_ticker_id == ctx.cron_ticker_id:
                return True
        return False

    def cancel_local(self, ticker_id: UUID, claimed: bool = False) -> bool:
        """Cancel a job running on this node; True if it was here.

        With ``claimed``, a job claimed but not started yet is cancelled when it
        would start.
        """
        run = self._running.get(ticker_id)
        if run is None:
            if claimed:
                self._cancel_before_start.add(ticker_id)
            return False
        run.ctx._request_cancel()
        if (
            run.task is not None
            and run.fn.is_async
            and run.job.priority is not Priority.LONG_RUNNING
        ):
            run.task.cancel()
        return True

    # -- the loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        store = self.store
        clock = self.clock
        while not self._stopping:
            self._wakeup = loop.create_future()
            self._idle.clear()
            now = clock.now()
            try:
                free = self.max_concurrency - self._active
                if not self.paused and (
                    self._check_crons or (now - self._crons_checked_at).total_seconds() >= 1.0
                ):
                    # Crons are looked at when a deadline or a due-time wake-up brought
                    # the loop here, and at least every second: not on every batch.
                    self._check_crons = False
                    self._crons_checked_at = now
                    await fire_due_crons(store, now, self._priority_of, self.options.misfire_grace)
                if not self.paused and (free > 0 or self._has_long_running()):
                    if await self._claim(now, free):
                        continue  # more may be due; claim again before sleeping
                elif self._outcomes and self._flush_task is None:
                    await self._flush()
                # Full: a finishing job wakes the loop; asking for the next due time is moot.
                full = free <= 0 and not self._has_long_running()
                deadline = None if self.paused or full else await store.next_due_time()
            except Exception:
                self._store_error_at = now
                logger.exception("engine loop failed; retrying in 1 s")
                deadline = now + timedelta(seconds=1)
            if deadline is not None and deadline <= now:
                deadline = None  # due but no room: a finishing job wakes us
            poll_interval = self.options.poll_interval or store.poll_interval
            if poll_interval:
                poll = now + timedelta(seconds=poll_interval)
                deadline = poll if deadline is None else min(deadline, poll)
            self._deadline = deadline
            if not (self._running or self._outcomes or self._maintaining or self._flush_task):
                self._idle.set()
            await clock.sleep_until(deadline, self._wakeup)
            if not self._wakeup.done():
                self._check_crons = True  # the deadline (or a poll) came
            self._deadline = None
        self._idle.set()

    async def _claim(self, now: datetime, free: int) -> bool:
        """Claim due work up to the free slots and start it; True if any came.

        Results of the jobs that ended go in with the claim: one round trip for both.
        """
        finished, self._outcomes = self._outcomes, []
        try:
            jobs = await self.store.claim(
                now,
                node=self.node_id,
                lease_until=self._lease_until(now),
                slots=max(free, 0),
                capacity=self._capacity(),
                functions=self._functions.keys(),
                limits=self._limits(),
                finished=finished,
            )
        except BaseException:
            self._outcomes[:0] = finished
            raise
        if jobs:
            self._dispatch(jobs, now)
        return bool(jobs)

    def _limits(self) -> dict[str, int]:
        """Each limited function's max_concurrency (enforced cluster-wide by shared stores)."""
        return {f.name: f.options.max_concurrency for f in self._limited}

    def _has_long_running(self) -> bool:
        self._capacity()  # refreshes the cached views of the registered functions
        return self._long_running

    def _priority_of(self, function: str) -> Priority:
        fn = self._functions.get(function)
        return fn.options.priority if fn is not None else Priority.NORMAL

    def _capacity(self) -> dict[str, int]:
        if len(self._functions) != self._known_functions:
            self._known_functions = len(self._functions)
            self._limited = [f for f in self._functions.values() if f.options.max_concurrency]
            self._long_running = any(
                f.options.priority is Priority.LONG_RUNNING for f in self._functions.values()
            )
        fn_active = self._fn_active
        return {f.name: f.options.max_concurrency - fn_active.get(f.name, 0) for f in self._limited}

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.options.lease)

    def _dispatch(self, jobs: list[Job], now: datetime) -> None:
        """Start a task for each claimed (already IN_PROGRESS) job."""
        loop = asyncio.get_running_loop()
        late = timedelta(seconds=self.options.late_threshold)
        for job in jobs:
            fn = self._functions.get(job.function)
            if self._cancel_before_start and job.id in self._cancel_before_start:
                self._cancel_before_start.discard(job.id)
                self._record(job, now, Status.CANCELLED, reason="cancelled before it started")
                continue
            if fn is None:
                self._record(
                    job,
                    now,
                    Status.FAILED,
                    error=LookupError(
                        f"function {job.function!r} is not registered on node {self.node_id}"
                    ),
                )
                continue
            due = job.execution_time
            ctx: TickerContext[Any] = TickerContext(
                app=self.app,
                id=job.id,
                function=job.function,
                kind=job.kind,
                request=None,
                retry_count=job.retry_count,
                scheduled_for=due,
                is_due=due is not None and now - due > late,
                cron_ticker_id=job.cron_ticker_id,
                parent_id=job.parent_id,
                loop=loop,
            )
            run = _Run(job, fn, ctx, now)
            self._running[job.id] = run
            if job.priority is not Priority.LONG_RUNNING:
                self._active += 1
            if fn.options.max_concurrency:
                self._fn_active[fn.name] = self._fn_active.get(fn.name, 0) + 1
            run.task = loop.create_task(self._execute(run))

    async def _execute(self, run: _Run) -> None:
        job, fn, ctx = run.job, run.fn, run.ctx
        status = Status.DUE_DONE if ctx.is_due else Status.DONE
        error: BaseException | None = None
        reason: str | None = None
        timeout = job.timeout if job.timeout is not None else fn.options.timeout
        try:
            await self._call(run, timeout)
        except TerminateExecution as stop:
            status, reason = stop.status, stop.reason
        except asyncio.CancelledError:
            if not (run.interrupted or ctx.cancelled):
                raise
        except TimeoutError as exc:
            error = exc
            if run.timed_out:
                error = TimeoutError(f"timed out after {timeout:g} s")
                error.__traceback__ = exc.__traceback__
        except Exception as exc:
            error = exc
        except BaseException:
            self._release_slot(run)
            raise
        try:
            await self._conclude(run, status, error, reason)
            if run.thread is not None and not run.thread.done() and not run.interrupted:
                # A thread cannot be killed: its slot stays taken until it returns.
                await asyncio.wait([run.thread])
        finally:
            self._release_slot(run)

    async def _conclude(
        self, run: _Run, status: Status, error: BaseException | None, reason: str | None
    ) -> None:
        job, ctx = run.job, run.ctx
        if run.interrupted:
            self._record(
                job, run.started_at, Status.IDLE, counts_as_retry=False, error=_INTERRUPTED
            )
        elif ctx.cancelled and not run.timed_out and status is not Status.FAILED:
            self._record(job, run.started_at, Status.CANCELLED)
        elif error is not None:
            await self._on_error(ctx, error)
            self._record(job, run.started_at, Status.FAILED, error=error)
        else:
            self._record(job, run.started_at, status, reason=reason)

    async def _call(self, run: _Run, timeout: float | None) -> None:
        job, fn, ctx = run.job, run.fn, run.ctx
        if fn.wants_context and job.request is not None:
            ctx._request = fn.decode_request(job.request)
        if not fn.is_async or job.priority is Priority.LONG_RUNNING:
            await self._in_thread(run, timeout)
            return
        call = fn.func(ctx) if fn.wants_context else fn.func()
        if timeout is None:
            await call
            return
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                await call
        finally:
            run.timed_out = limit.expired()

    async def _in_thread(self, run: _Run, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fn, ctx = run.fn, run.ctx
        func = fn.func
        if fn.is_async:

            def call() -> Any:
                return asyncio.run(func(ctx) if fn.wants_context else func())
        elif fn.wants_context:

            def call() -> Any:
                return func(ctx)
        else:
            call = func
        future: asyncio.Future[Any]
        if run.job.priority is Priority.LONG_RUNNING:
            future = loop.create_future()
            threading.Thread(
                target=_thread_main,
                args=(loop, future, call),
                name=f"tickerq-{fn.name}",
                daemon=True,
            ).start()
        else:
            future = loop.run_in_executor(self._pool, call)
        run.thread = future
        if timeout is None:
            await asyncio.shield(future)
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            run.timed_out = True
            ctx._request_cancel()  # ask the thread to stop; the run counts as failed
            raise

    def _release_slot(self, run: _Run) -> None:
        job = run.job
        if self._running.pop(job.id, None) is None:
            return
        if job.priority is not Priority.LONG_RUNNING:
            self._active -= 1
        if run.fn.options.max_concurrency:
            self._fn_active[run.fn.name] -= 1
        self.wake()  # a slot is free

    def _interrupt(self, run: _Run) -> None:
        run.interrupted = True
        run.ctx._request_cancel()
        if run.task is not None:
            run.task.cancel()

    async def _on_error(self, ctx: TickerContext[Any], error: BaseException) -> None:
        handler = self.app.exception_handler
        if handler is None:
            logger.error(
                "job %s (%s) failed: %s: %s",
                ctx.function,
                ctx.id,
                type(error).__name__,
                error,
                extra={"action": "job_failed", "ticker_id": str(ctx.id)},
            )
            return
        try:
            result = handler(ctx, error)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            logger.exception("the exception handler failed for job %s", ctx.id)

    # -- results ----------------------------------------------------------------------

    def _record(
        self,
        job: Job,
        started_at: datetime,
        status: Status,
        *,
        error: BaseException | None = None,
        reason: str | None = None,
        counts_as_retry: bool = True,
    ) -> None:
        now = self.clock.now()
        outcome = Outcome(
            job=job,
            status=status,
            node=self.node_id,
            started_at=started_at,
            finished_at=now,
            counts_as_retry=counts_as_retry,
            skipped_reason=reason if status is Status.SKIPPED else None,
        )
        if reason and status is not Status.SKIPPED:
            outcome.error_message = reason
        if error is not None:
            outcome.error_type = type(error).__name__
            outcome.error_message = str(error) or type(error).__name__
            outcome.traceback = "".join(tb.format_exception(error))
            if counts_as_retry and job.retry_count < job.retries:
                delay = self.options.retry.delay(job.retry_count, job.retry_intervals, self._rng)
                outcome.status = Status.IDLE
                outcome.retry_at = now + timedelta(seconds=delay)
        self._outcomes.append(outcome)
        if not self._stopping and self.running:
            self.wake()  # the loop writes it with its next claim
        elif self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(0)  # let every job ending in this turn join the batch
            await self._flush()
        finally:
            self._flush_task = None
        self.wake()

    async def _flush(self) -> None:
        """Write the waiting results (retrying after database errors)."""
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self.store.complete(batch)
            except Exception:
                self._store_error_at = self.clock.now()
                logger.exception("writing %d result(s) failed; will retry", len(batch))
                self._outcomes[:0] = batch
                await asyncio.sleep(1.0)  # real time: the database needs it to recover

    # -- heartbeats -------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self.options.heartbeat_interval
        if not self.store.shared:  # nothing to renew: only retention, now and then
            interval = max(60.0, min(3600.0, (self.options.retention or 36000.0) / 10))
        while True:
            await self.clock.sleep(interval)
            now = self.clock.now()
            self._maintaining = True
            self._idle.clear()
            try:
                running = list(self._running)
                await self.store.heartbeat(self._node(), running, self._lease_until(now))
                for ticker_id in await self.store.cancel_requested(running):
                    self.cancel_local(ticker_id)
                # Right after the database was unreachable, every lease looks lapsed:
                # give live nodes one lease to renew before taking their jobs.
                if (now - self._store_error_at).total_seconds() > self.options.lease and (
                    await self.store.reclaim_expired(now)
                ):
                    self.wake()
                await self._purge(now)
            except Exception:
                self._store_error_at = self.clock.now()
                logger.exception("heartbeat failed")
            finally:
                self._maintaining = False
                self.wake()  # the loop re-checks for work and idleness

    async def _purge(self, now: datetime) -> None:
        retention = self.options.retention
        if retention is None:
            return
        cutoff = now - timedelta(seconds=retention)
        total = 0
        while (count := await self.store.purge(cutoff, self.options.retention_batch)) > 0:
            total += count
            if count < self.options.retention_batch:
                break
            await asyncio.sleep(0)  # let jobs run between batches
        if total:
            logger.info("purged %d ended ticker(s) older than %s", total, cutoff.isoformat())

    def _node(self) -> Node:
        from tickerq import __version__

        now = self.clock.now()
        return Node(
            id=self.node_id,
            started_at=self.started_at or now,
            last_heartbeat=now,
            version=__version__,
            max_concurrency=self.max_concurrency,
            active=len(self._running),
            functions=tuple(self._functions),
        )

    def _publish_state(self, state: str) -> None:
        bus = self.app.events
        if bus.active:
            bus.publish(EngineStateChanged(self.clock.now(), self.node_id, state))


_INTERRUPTED = InterruptedError("the node stopped before the job finished; it runs again")


def _thread_main(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], call: Callable[[], Any]
) -> None:
    try:
        result = call()
    except BaseException as exc:  # handed to the loop, re-raised there
        loop.call_soon_threadsafe(_settle, future, None, exc)
    else:
        loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

"""The engine: sleeps until work is due, claims it up to the free slots, runs it.

One asyncio task (the loop) decides; each claimed job runs in a task of its
own (async functions on the loop, sync ones in the thread pool, LONG_RUNNING
ones in a thread of their own). Results are written back in batches: every
job that ends in the same turn of the event loop goes to the store in one
call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback as tb
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq import _joblog
from tickerq.context import TickerContext
from tickerq.enums import Priority, Status
from tickerq.errors import InvalidRequestError, TerminateExecution
from tickerq.events import EngineStateChanged
from tickerq.firing import fire_due_crons
from tickerq.hooks import Cancellation, Failure, Hooks
from tickerq.limits import APP_BUCKET, Gates, RateLimit, function_bucket, named_bucket
from tickerq.middleware import Pipeline
from tickerq.models import Node
from tickerq.notices import PAUSES, TICKERS, CancelRequested, Changed, Notice, Wake, WorkDue
from tickerq.pausing import PauseView
from tickerq.retry import RetryPolicy
from tickerq.stores.base import Job, LostRunPolicy, Outcome
from tickerq.threads import DaemonPool, run_in_thread
from tickerq.validation import check_cron_lead

if TYPE_CHECKING:
    from tickerq.app import ExceptionHandler, TickerQ
    from tickerq.clock import Clock
    from tickerq.events import EventBus
    from tickerq.functions import TickerFunction
    from tickerq.stores.base import Store

__all__ = ["Engine", "EngineOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Tuning of the engine; the defaults suit most apps."""

    late_threshold: float = 1.0
    """A run that starts more than this many seconds after its time ends as DUE_DONE."""
    grace_period: float = 30.0
    """On stop, running jobs get this many seconds to finish before they are interrupted."""
    stop_margin: float = 2.0
    """After the grace period, interrupted jobs get this many seconds more to return;
    a sync job still in its thread then keeps its claim (see docs/stores.md), and
    stop returns: a stop takes at most grace_period + stop_margin (+ the last write)."""
    lease: float = 60.0
    """How long a claim holds without a heartbeat before another node may take it over."""
    heartbeat_interval: float = 10.0
    """How often a node on a shared store reports itself and extends its leases."""
    poll_interval: float | None = None
    """Look for due work at least this often (wake-ups from other nodes can be lost).
    None: the store's default (memory: never; SQLite: 0.5 s; PostgreSQL: 5 s)."""
    misfire_grace: float = 5.0
    """A cron fire later than this counts as missed (for the SKIP policy)."""
    cron_lead: float = 0.0
    """Make cron occurrences this many seconds before their fire (they wait, IDLE,
    for their time). With thousands of crons firing at the same instant, making
    them takes a while (about 0.5-1.5 s per 10,000 on PostgreSQL): a lead of a
    few seconds has them all ready, so their runs start on time. A cron changed
    or disabled within the lead loses the occurrences made ahead (they are made
    again from its new settings)."""
    retention: float | None = 7 * 24 * 3600.0
    """Ended tickers and occurrences older than this many seconds are deleted (None: keep)."""
    retention_batch: int = 500
    """Rows deleted per batch, so purging never holds long locks."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff used when a ticker has retries but no retry intervals."""
    max_stale_restarts: int = 3
    """Lost runs (the node died or froze while running it) after which a ticker ends
    FAILED instead of running again, for functions that set none."""

    def __post_init__(self) -> None:
        check_cron_lead(self.cron_lead)


# Enum members read in the per-job path, as module names: ``Status.FAILED`` goes
# through the enum metaclass's ``__getattr__`` on Python 3.11 (~200 instructions).
_CANCELLED, _FAILED = Status.CANCELLED, Status.FAILED
_LONG_RUNNING = Priority.LONG_RUNNING

_UNRESOLVED: Any = object()
"""A function whose chain the pipeline has not composed yet."""


class _Run:
    """A job running on this node."""

    __slots__ = (
        "abandoned",
        "claim",
        "ctx",
        "fn",
        "interrupted",
        "job",
        "started_at",
        "task",
        "thread",
        "timed_out",
        "timeout",
    )

    def __init__(self, job: Job, fn: TickerFunction[Any], ctx: TickerContext[Any], now: datetime):
        self.job = job
        self.claim = job.claim
        """The claim the run's result is written under (the job object may change)."""
        self.fn = fn
        self.ctx = ctx
        self.started_at = now
        self.task: asyncio.Task[None] | None = None
        self.thread: asyncio.Future[Any] | None = None
        self.timeout: float | None = None
        self.interrupted = False
        """Asked to stop (the node stops, or lost the row's claim): if it ends
        cancelled, the row is given back without using a retry."""
        self.timed_out = False
        self.abandoned = False
        """Left in its thread when the node stopped: its result is not written."""


class Engine:
    """Runs an app's due work on this node. Created and driven by :class:`TickerQ`.

    Built from its collaborators: the ``store``, the ``clock``, the registered
    ``functions`` (a live mapping: functions registered later count too) and the
    app's ``bus`` (it publishes its state there and hears other nodes' notices).
    ``app`` is only handed to each job's context (``ctx.app``, to schedule
    follow-up work); the engine itself reads nothing from it. To the managers and
    the contexts it is a :class:`tickerq.local.LocalEngine`.
    """

    _log_info = False
    """Whether INFO records are kept: looked up once per claimed batch, not per job."""
    # What the engine derives from the registered functions, looked at again when
    # their number changes (see _capacity).
    _known_functions = -1
    _long_running = False
    _gates: Gates | None = None

    paused = False
    """Paused on this node only (:meth:`pause`); the stored pauses, which every node
    obeys, are in :attr:`stored_pauses`."""

    stored_pauses: PauseView
    """The functions (or the whole cluster) paused in the store, as this node last
    read them (see :mod:`tickerq.pausing`)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        functions: Mapping[str, TickerFunction[Any]],
        bus: EventBus,
        options: EngineOptions,
        *,
        node_id: str,
        max_concurrency: int,
        exception_handler: ExceptionHandler | None = None,
        hooks: Hooks | None = None,
        pipeline: Pipeline | None = None,
        max_result_bytes: int = 0,
        named_limits: Mapping[str, RateLimit] | None = None,
        app_rate_limit: RateLimit | None = None,
        app: TickerQ,
    ) -> None:
        self.options = options
        self._cron_lead = timedelta(seconds=options.cron_lead)
        self.store = store
        self.clock = clock
        self.bus = bus
        self.node_id = node_id
        self.max_concurrency = max_concurrency
        self.hooks = hooks if hooks is not None else Hooks()
        """Called when a job fails or a ticker is cancelled (see tickerq.hooks)."""
        if exception_handler is not None:
            self.hooks.exception = exception_handler
        self.pipeline = pipeline if pipeline is not None else Pipeline()
        """The middleware each run goes through."""
        self.max_result_bytes = max_result_bytes
        """A job's return value larger than this as JSON fails its attempt (0: no limit)."""
        self._app = app
        self.stored_pauses = PauseView(store)
        self.started_at: datetime | None = None
        # When this node last reported itself to the store (clock time; None before start).
        self.last_heartbeat: datetime | None = None
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
        self._idle = asyncio.Event()
        self._pool: DaemonPool | None = None
        self._hurry = asyncio.Event()
        self._solo: UUID | None = None
        """A row on its last chance (lost as often as its limit allows) running alone."""
        self._drain = False
        """A last-chance row waits: claim nothing until this node's jobs have ended."""
        self._rng = random.Random()
        self._limited: list[TickerFunction[Any]] = []
        # The app's named rate limits (TickerQ(limits=...)) and its app-wide one.
        self.named_limits: dict[str, RateLimit] = dict(named_limits or {})
        self.app_rate_limit = app_rate_limit
        self._check_crons = True
        self._crons_checked_at = datetime.min.replace(tzinfo=UTC)
        self._cron_task: asyncio.Task[None] | None = None
        """Materializes due crons beside the claim loop (see :meth:`_cron_rounds`)."""
        self._crons_again = False
        self._crons_failed_at: datetime | None = None
        self._store_error_at = datetime.min.replace(tzinfo=UTC)
        self._functions = functions
        self._unsubscribe: Callable[[], None] | None = None

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
    def slots_in_use(self) -> int:
        """Slots of the pool taken (LONG_RUNNING jobs, which take none, aside)."""
        return self._active

    @property
    def heartbeat_period(self) -> float | None:
        """Seconds between two heartbeats while running (None: this node sends none)."""
        if not (self.store.shared or self.options.retention is not None):
            return None
        if self.store.shared:
            return self.options.heartbeat_interval
        # nothing to renew: only retention, now and then
        return max(60.0, min(3600.0, (self.options.retention or 36000.0) / 10))

    @property
    def background_tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The loop and heartbeat tasks: their clock sleeps are polls and heartbeats, not
        due work (``tickerq.testing.advance`` jumps over them)."""
        return tuple(t for t in (self._loop_task, self._heartbeat_task) if t is not None)

    async def start(self) -> None:
        """Start the loop (and heartbeats on a shared store)."""
        self._pool = DaemonPool(self.max_concurrency, "tickerq")
        self._stopping = False
        self._hurry = asyncio.Event()
        self.started_at = self.clock.now()
        # Rows held under this id belong to a predecessor that died: take them back.
        if reclaimed := await self.store.reclaim_expired(
            self.started_at, node=self.node_id, **self._reclaim_policies()
        ):
            self._log_reclaimed(reclaimed, "a dead run of this node held")
        await self.store.heartbeat(self._node(), [], self._lease_until(self.started_at))
        self.last_heartbeat = self.started_at
        await self.store.listen()
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe_notices(self._on_notice)
        self._loop_task = asyncio.create_task(self._main(), name="tickerq-engine")
        if self.heartbeat_period is not None:
            self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="tickerq-heartbeat")
        self._publish_state("running")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running jobs finish for ``grace`` seconds; interrupt the rest.

        Results that arrive meanwhile are written (warm shutdown). Interrupted
        async jobs are cancelled and their rows go back to IDLE without using a
        retry. A sync job cannot be killed: it is asked to cancel and gets
        ``stop_margin`` seconds more; if it returns, its result is written; if
        not, its row keeps this node's claim (it cannot run twice at once) and
        runs again once the lease runs out, or at once when a node starts under
        this node id. Stop returns within grace + stop_margin (+ the last write);
        its threads are daemon threads, so they never keep the process alive.
        """
        if self._loop_task is None:
            return
        self._stopping = True
        self.wake()
        await self._loop_task
        self._loop_task = None
        if self._cron_task is not None:  # it ends after its current batch
            await asyncio.gather(self._cron_task, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        grace = self.options.grace_period if grace is None else grace
        pending = await self._wait_runs(self._running.values(), grace)
        if pending:
            logger.warning(
                "stopping: %d job(s) still running after %.1f s; interrupting them",
                len(pending),
                grace,
            )
            for run in pending:
                self._interrupt(run)
            pending = await self._wait_runs(pending, self.options.stop_margin, hurry=False)
        for run in pending:
            self._abandon(run)
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self._flush()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        await self.store.remove_node(self.node_id)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._publish_state("stopped")

    def hurry(self) -> None:
        """Cut a stop's grace period short (a second SIGINT/SIGTERM): interrupt jobs now."""
        self._hurry.set()

    async def _wait_runs(
        self, runs: Iterable[_Run], timeout: float, *, hurry: bool = True
    ) -> list[_Run]:
        """Wait up to ``timeout`` seconds (or until hurried) for ``runs`` to end;
        return those still running."""
        waiting = {r.task: r for r in runs if r.task is not None and not r.task.done()}
        if not waiting or timeout <= 0:
            return list(waiting.values())
        watchers: set[asyncio.Future[Any]] = set(waiting)
        hurried = None
        if hurry:
            hurried = asyncio.ensure_future(self._hurry.wait())
            watchers.add(hurried)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while waiting:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(
                    watchers, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if hurried is not None and hurried in done:
                    break
                for task in done:
                    waiting.pop(task, None)  # type: ignore[call-overload]
                    watchers.discard(task)
        finally:
            if hurried is not None:
                hurried.cancel()
        return list(waiting.values())

    def _abandon(self, run: _Run) -> None:
        """Leave a sync job that did not return in its thread: its row keeps this
        node's claim; its result, should it come, is not written."""
        run.abandoned = True
        logger.error(
            "stopping: job %s (%s) did not return after it was asked to cancel; its thread "
            "is left running and its row keeps this node's claim: it runs again when its "
            "lease runs out, or at once when a node starts as %s",
            run.fn.name,
            run.job.id,
            self.node_id,
            extra=_joblog.job_fields("job_abandoned", run.job, self.node_id),
        )
        if run.task is not None:
            run.task.cancel()
        self._release_slot(run)

    def pause(self) -> None:
        """Stop claiming new work on this node (only); running jobs go on."""
        self.paused = True
        self._publish_state("paused")

    def resume(self) -> None:
        """Claim work again on this node (the stored pauses still hold)."""
        self.paused = False
        self._publish_state("running")
        self.wake()

    def pauses_changed(self) -> None:
        """The stored pauses changed: read them before the next claim, and look for
        work (a resume may have made some claimable)."""
        self.stored_pauses.changed()
        self.wake()

    def wake(self, due: datetime | None = None) -> None:
        """Look for work now; with ``due``, only if that is earlier than the planned wake-up
        (a cron fire at ``due`` is made ``cron_lead`` earlier)."""
        if due is not None:
            if self._deadline is not None and due >= self._deadline + self._cron_lead:
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

    def _on_notice(self, notice: Notice) -> None:
        """A notice from another node (see :mod:`tickerq.notices`)."""
        if isinstance(notice, WorkDue):
            self.wake(notice.at)
        elif isinstance(notice, CancelRequested):
            self.cancel_local(notice.ticker_id)
        elif isinstance(notice, Wake):
            self.pauses_changed()  # notices were lost: a pause's among them, maybe
        elif isinstance(notice, Changed):
            gates = self._gates
            if PAUSES in notice.topics:
                self.pauses_changed()
            elif gates is not None and gates.blocked and TICKERS in notice.topics:
                self.wake()  # a run that ended elsewhere may free a key held back here

    def is_running_elsewhere(self, ctx: TickerContext[Any]) -> bool:
        """Whether another run of the same cron ticker (or function) is in progress here."""
        for run in list(self._running.values()):
            other = run.ctx
            if other is ctx or other.function != ctx.function:
                continue
            if ctx.cron_ticker_id is None or other.cron_ticker_id == ctx.cron_ticker_id:
                return True
        return False

    def cancel_local(self, ticker_id: UUID) -> bool:
        """Cancel a job running on this node; True if it was here."""
        run = self._running.get(ticker_id)
        if run is None:
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
        clock = self.clock
        while not self._stopping:
            self._wakeup = loop.create_future()
            self._idle.clear()
            now = clock.now()
            try:
                free = self.max_concurrency - self._active
                if not self.paused:
                    self._start_cron_round(now)
                runnable = await self._runnable(now, free)
                if runnable:
                    if await self._claim(now, free, runnable):
                        continue  # more may be due; claim again before sleeping
                elif self._outcomes and self._flush_task is None:
                    await self._flush()
                # Full: a finishing job wakes the loop; asking for the next due time is moot.
                full = free <= 0 and not self._has_long_running()
                if self._check_crons and not self.paused:
                    continue  # crons are behind (or just woke us): no sleep, no past deadline
                # After a claim with room to spare, what is due now could not be
                # claimed here (its function is not on this node, or at its limit):
                # sleep until something later, not until an unrelated wake-up.
                after = now if self._may_claim() and free > 0 else None
                deadline = None if self.paused or full else await self._next_due(after)
                deadline = self._cron_retry(deadline)
                deadline = self._throttle_deadline(deadline)
            except Exception:
                self._store_error_at = now
                logger.exception("engine loop failed; retrying in 1 s")
                deadline = now + timedelta(seconds=1)
            if deadline is not None and deadline <= now:
                deadline = None  # due but no room: a finishing job wakes us
            if not (
                self._running
                or self._outcomes
                or self._maintaining
                or self._flush_task
                or self._cron_task
            ):
                self._idle.set()
            await self._sleep(now, deadline)
            if not self._wakeup.done():
                self._check_crons = True  # the deadline (or a poll) came
            self._deadline = None
        self._idle.set()

    def _throttle_deadline(self, deadline: datetime | None) -> datetime | None:
        """Wake up when a rate limit that held due work back lets it start."""
        gates = self._gates
        until = None if gates is None else gates.blocked_until
        if until is None or not self._may_claim():
            return deadline
        return until if deadline is None else min(deadline, until)

    async def _sleep(self, now: datetime, due: datetime | None) -> None:
        """Sleep until ``due``, a wake-up, or a poll that finds the store changed.

        Other processes' changes are looked for every poll interval; a poll that
        finds the store unchanged since the last one (on SQLite, the file's data
        version) sleeps on without a query, so an idle node costs nothing
        however big its tables are.
        """
        poll_interval = self.options.poll_interval or self.store.poll_interval
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            deadline = due
            if poll_interval:
                poll = now + timedelta(seconds=poll_interval)
                deadline = poll if deadline is None else min(deadline, poll)
            self._deadline = deadline
            await self.clock.sleep_until(deadline, wakeup)
            if wakeup.done() or self._stopping or not poll_interval:
                return
            now = self.clock.now()
            if due is not None and now >= due:
                return
            if await self.store.changed_elsewhere():
                self.stored_pauses.changed()  # a pause or resume, maybe
                return

    def _start_cron_round(self, now: datetime) -> None:
        """Materialize the due crons in a task of their own (or once more after the
        round under way): the claim loop goes on meanwhile.

        Crons are looked at when a deadline or a due-time wake-up brought the loop
        here, and at least every second: not on every batch of claims.
        """
        if not self._check_crons and (now - self._crons_checked_at).total_seconds() < 1.0:
            return
        self._check_crons = False
        self._crons_checked_at = now
        if self._cron_task is not None:
            self._crons_again = True
            return
        self._cron_task = asyncio.get_running_loop().create_task(
            self._cron_rounds(), name="tickerq-crons"
        )

    async def _cron_rounds(self) -> None:
        """Run cron rounds until no cron is behind, beside the claim loop.

        A round goes batch by batch (one store transaction each) and wakes the
        loop after each batch that made occurrences, so they are claimed while
        the next batch is made: 10,000 crons due at once never hold up the jobs
        due meanwhile.
        """
        try:
            while not (self._stopping or self.paused):
                self._crons_again = False
                fired = await fire_due_crons(
                    self.store,
                    self.clock.now(),
                    self._priority_of,
                    self.options.misfire_grace,
                    on_batch=self._crons_made,
                    lead=self.options.cron_lead,
                )
                self._crons_failed_at = None
                if fired.behind and self.paused:
                    self._check_crons = True  # go on when resumed
                if not (fired.behind or self._crons_again):
                    break
        except Exception:
            self._store_error_at = self._crons_failed_at = self.clock.now()
            logger.exception("materializing cron fires failed; retrying in 1 s")
        finally:
            self._cron_task = None
            self.wake()

    def _cron_retry(self, deadline: datetime | None) -> datetime | None:
        """``deadline``, or earlier if a failed cron round is to be tried again (in 1 s)."""
        if self._crons_failed_at is None:
            return deadline
        retry = self._crons_failed_at + timedelta(seconds=1)
        return retry if deadline is None else min(deadline, retry)

    def _crons_made(self, created: int) -> bool:
        """After a batch of cron fires: claim what it made; go on unless stopping or paused."""
        if created:
            self.wake()
        return not (self._stopping or self.paused)

    async def _runnable(self, now: datetime, free: int) -> Collection[str]:
        """The functions to claim now: none while this node may not claim or has no
        room, else those it runs that are not paused (the pauses read again when
        due, see :mod:`tickerq.pausing`)."""
        if not (self._may_claim() and (free > 0 or self._has_long_running())):
            return ()
        pauses = self.stored_pauses
        if pauses.due(now):
            await pauses.refresh(now)
        return pauses.runnable(self._functions.keys())

    async def _next_due(self, after: datetime | None) -> datetime | None:
        """When something this node may claim becomes due (the rows of paused
        functions left out: an idle node does not wake for them)."""
        hidden = self.stored_pauses.hidden
        if hidden:
            return await self.store.next_due_time(after, cron_lead=self._cron_lead, paused=hidden)
        return await self.store.next_due_time(after, cron_lead=self._cron_lead)

    async def _claim(self, now: datetime, free: int, functions: Collection[str]) -> bool:
        """Claim due work of ``functions`` up to the free slots and start it; True if
        more may be due.

        Results of the jobs that ended go in with the claim: one round trip for both.
        """
        finished, self._outcomes = self._outcomes, []
        capacity = self._capacity()
        gates = self._gates
        try:
            jobs = await self.store.claim(
                now,
                node=self.node_id,
                lease_until=self._lease_until(now),
                slots=max(free, 0),
                capacity=capacity,
                functions=functions,
                limits=self._limits(),
                finished=finished,
                gates=gates,
            )
        except BaseException:
            self._outcomes[:0] = finished
            raise
        # A claim that filled every free slot may have left due work behind, and one
        # that started chain parents may have made their IN_PROGRESS children due:
        # claim again at once. Otherwise it took all that was due (a second claim
        # would only cost a round trip).
        more = bool(jobs) and (
            sum(j.priority is not Priority.LONG_RUNNING for j in jobs) >= free
            or any(j.has_children for j in jobs)
        )
        if jobs:
            if any(j.stale_restarts for j in jobs):
                jobs = await self._isolate_last_chances(jobs)
            self._dispatch(jobs, now)
            if self._solo is not None and self._solo not in self._running:
                self._solo = None  # it did not start (cancelled, or not registered here)
        return more and self._may_claim()

    def _may_claim(self) -> bool:
        return not self.paused and self._solo is None and not (self._drain and self._running)

    async def _isolate_last_chances(self, jobs: list[Job]) -> list[Job]:
        """Run a row lost as often as its limit allows alone on this node.

        When a node dies, every job it ran is lost with it, the innocent with the
        one that killed it, and a restarted node takes them all back together.
        A row's last run therefore happens alone: it fails (or not) on its own.
        """
        policies, default = self._lost_run_policies()
        last = [
            j
            for j in jobs
            if j.stale_restarts
            and j.stale_restarts >= policies.get(j.function, default).max_stale_restarts
        ]
        if not last:
            return jobs
        if self._running:  # after what runs here now has ended
            await self.store.release(last)
            self._drain = True
            return [j for j in jobs if j not in last]
        solo = last[0]
        await self.store.release([j for j in jobs if j is not solo])
        logger.warning(
            "%s %s: lost %d time(s); its last chance runs alone on this node",
            solo.function,
            solo.id,
            solo.stale_restarts,
            extra=_joblog.job_fields("last_chance", solo, self.node_id),
        )
        self._solo, self._drain = solo.id, False
        return [solo]

    def _limits(self) -> dict[str, int]:
        """Each limited function's max_concurrency (enforced cluster-wide by shared stores)."""
        return {f.name: f.options.max_concurrency for f in self._limited}

    def gates(self) -> Gates | None:
        """The rate and per-key limits of the registered functions (None: none)."""
        self._capacity()  # refreshes the views of the registered functions
        return self._gates

    def _build_gates(self) -> Gates | None:
        """The cluster-wide rate and per-key limits of the registered functions."""
        gates = Gates()
        if self.app_rate_limit is not None:
            gates.buckets[APP_BUCKET] = self.app_rate_limit
            gates.app_wide = True
        for fn in self._functions.values():
            wanted = fn.options.rate_limit
            if isinstance(wanted, RateLimit):
                gates.buckets[function_bucket(fn.name)] = wanted
                gates.of_function[fn.name] = (function_bucket(fn.name),)
            elif wanted is not None and wanted in self.named_limits:
                gates.buckets[named_bucket(wanted)] = self.named_limits[wanted]
                gates.of_function[fn.name] = (named_bucket(wanted),)
            if fn.options.max_per_key:
                gates.per_key[fn.name] = fn.options.max_per_key
        return gates if gates.buckets or gates.per_key else None

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
            self._gates = self._build_gates()
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
        # looked up once per batch (a level changed at run time counts from the next)
        self._log_info = log_starts = logger.isEnabledFor(logging.INFO)
        for job in jobs:
            fn = self._functions.get(job.function)
            running = self._running.get(job.id)
            if running is not None:
                # Our own earlier run of this row lost its claim (this node froze past
                # its lease) and is still going: it carries on under the new claim
                # instead of a second run of the same ticker on this node.
                running.claim = job.claim
                logger.warning(
                    "%s %s: claimed again while its earlier run here goes on; "
                    "that run's result is kept",
                    job.function,
                    job.id,
                    extra=_joblog.job_fields("claimed_again", job, self.node_id),
                )
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
                app=self._app,
                engine=self,
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
                headers=job.headers,
                retries=job.retries,
            )
            run = _Run(job, fn, ctx, now)
            self._running[job.id] = run
            if job.priority is not Priority.LONG_RUNNING:
                self._active += 1
            if fn.options.max_concurrency:
                self._fn_active[fn.name] = self._fn_active.get(fn.name, 0) + 1
            if log_starts:
                _joblog.started(job, self.node_id)
            run.task = loop.create_task(self._execute(run))

    async def _execute(self, run: _Run) -> None:
        job, fn, ctx = run.job, run.fn, run.ctx
        status = Status.DUE_DONE if ctx.is_due else Status.DONE
        error: BaseException | None = None
        reason: str | None = None
        given_back = False
        timeout = job.timeout if job.timeout is not None else fn.options.timeout
        result: Any = None
        try:
            if fn.wants_context and job.request is not None:
                ctx._request = fn.decode_request(job.request)
            chain = self.pipeline.chains.get(fn.name, _UNRESOLVED)
            if chain is _UNRESOLVED:
                chain = self.pipeline.execute_chain(fn.name, self._end_of_chain)
            if chain is not None:
                run.timeout = timeout
                ctx._run = run  # cleared below once the run ended
                value = await chain(ctx)
            elif timeout is None and fn.is_async and job.priority is not _LONG_RUNNING:
                # the common case, awaited here: no coroutine of the engine's own per job
                value = await (fn.func(ctx) if fn.wants_context else fn.func())
            else:
                value = await self._call(run, timeout)
            if value is not None:
                result = fn.encode_result(value, self.max_result_bytes)
        except TerminateExecution as stop:
            status, reason = stop.status, stop.reason
            given_back = run.interrupted and status is Status.CANCELLED
        except BaseException as exc:
            error, given_back = self._failure(run, exc, timeout)
        ctx._run = None  # no ctx <-> run cycle left for the garbage collector
        if run.abandoned:
            return  # stop() gave up on it; its row keeps the claim
        try:
            if (
                error is None
                and not given_back
                and status is not _CANCELLED
                and not ctx._cancel_requested
            ):
                self._record(run, run.started_at, status, reason=reason, result=result)
            else:
                # it also waits for a thread still running (a run that ended well has none)
                await self._conclude(
                    run, status, error, reason, given_back=given_back, result=result
                )
        finally:
            self._release_slot(run)

    def _failure(
        self, run: _Run, exc: BaseException, timeout: float | None
    ) -> tuple[BaseException | None, bool]:
        """What a run that raised ``exc`` failed with (None: it was cancelled on
        request) and whether its row is given back; re-raises the cancellation of a
        run nobody asked to stop."""
        if isinstance(exc, asyncio.CancelledError):
            if run.abandoned or not (run.interrupted or run.ctx.cancelled):
                self._release_slot(run)
                raise exc
            return None, run.interrupted
        if isinstance(exc, TimeoutError) and run.timed_out:
            error = TimeoutError(f"timed out after {timeout:g} s")
            error.__traceback__ = exc.__traceback__
            return error, False
        # SystemExit, KeyboardInterrupt... raised by a job fail that job; the node
        # goes on.
        return exc, False

    async def _conclude(
        self,
        run: _Run,
        status: Status,
        error: BaseException | None,
        reason: str | None,
        *,
        given_back: bool,
        result: Any = None,
    ) -> None:
        """Record a run that did not simply end well (``_execute`` records those)."""
        ctx, started, job = run.ctx, run.started_at, run.job
        if given_back:
            self._record(run, started, Status.IDLE, counts_as_retry=False, error=_INTERRUPTED)
        elif (
            ctx.cancelled
            and not (run.timed_out or run.interrupted or error)
            and status is not Status.FAILED
        ) or (status is Status.CANCELLED and error is None):
            self._record(run, started, Status.CANCELLED, reason=reason)
            await self.hooks.cancelled(Cancellation(job.id, job.kind, job.function, True))
        elif error is not None:
            # a stored request that does not validate never will: no retry
            retry = not (isinstance(error, InvalidRequestError) and error.stored)
            left = max(job.retries - job.retry_count, 0) if retry else 0
            failure = Failure(final=left == 0, attempt=job.retry_count + 1, retries_left=left)
            handled = await self._on_error(ctx, error, failure)
            final = self._record(
                run, started, Status.FAILED, error=error, report=not handled, counts_as_retry=retry
            )
            if final:
                await self.hooks.failed_finally(ctx, error)
        else:
            self._record(run, started, status, reason=reason, result=result)
        if run.thread is not None and not run.thread.done() and not run.interrupted:
            # A thread cannot be killed: its slot stays taken until it returns.
            await asyncio.wait([run.thread])

    def _end_of_chain(self, ctx: TickerContext[Any]) -> Awaitable[Any]:
        """What the innermost middleware's ``call_next`` runs: the job of ``ctx``."""
        run: _Run = ctx._run
        return self._call(run, run.timeout)

    async def _call(self, run: _Run, timeout: float | None) -> Any:
        """Run the job (within its timeout); what it returns."""
        job, fn, ctx = run.job, run.fn, run.ctx
        if not fn.is_async or job.priority is Priority.LONG_RUNNING:
            return await self._in_thread(run, timeout)
        call = fn.func(ctx) if fn.wants_context else fn.func()
        if timeout is None:
            return await call
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await call
        finally:
            run.timed_out = limit.expired()

    async def _in_thread(self, run: _Run, timeout: float | None) -> Any:
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
        if run.job.priority is Priority.LONG_RUNNING or self._pool is None:
            future = run_in_thread(call, f"tickerq-{fn.name}")
        else:
            future = self._pool.run(call)
        run.thread = future
        if timeout is None:
            return await asyncio.shield(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            run.timed_out = True
            ctx._request_cancel()  # ask the thread to stop; the run counts as failed
            raise

    def _release_slot(self, run: _Run) -> None:
        job = run.job
        if self._running.pop(job.id, None) is None:
            return
        if self._solo == job.id:
            self._solo = None
        if job.priority is not Priority.LONG_RUNNING:
            self._active -= 1
        if run.fn.options.max_concurrency:
            self._fn_active[run.fn.name] -= 1
        self.wake()  # a slot is free

    def _interrupt(self, run: _Run) -> None:
        """Ask a run to stop. An async job is cancelled; a sync one only asked (its
        thread goes on, and its task waits for it, so a result that comes is kept)."""
        run.interrupted = True
        run.ctx._request_cancel()
        if run.task is not None and run.thread is None:
            run.task.cancel()

    @property
    def exception_handler(self) -> ExceptionHandler | None:
        """Called with the context and the error of every failed attempt."""
        return self.hooks.exception

    @exception_handler.setter
    def exception_handler(self, handler: ExceptionHandler | None) -> None:
        self.hooks.exception = handler

    async def _on_error(
        self, ctx: TickerContext[Any], error: BaseException, failure: Failure
    ) -> bool:
        """Call the exception handler; True if there was one (it reports the failure:
        the engine then logs none)."""
        return await self.hooks.failed(ctx, error, failure)

    # -- results ----------------------------------------------------------------------

    def _record(
        self,
        of: Job | _Run,
        started_at: datetime,
        status: Status,
        *,
        error: BaseException | None = None,
        reason: str | None = None,
        counts_as_retry: bool = True,
        result: Any = None,
        report: bool = True,
    ) -> bool:
        """Queue the outcome for the next write; True when it ends the ticker FAILED.

        Logs how the run ended (a failure only with ``report``)."""
        job, claim = (of.job, of.claim) if isinstance(of, _Run) else (of, of.claim)
        now = self.clock.now()
        outcome = Outcome(
            job=job,
            status=status,
            node=self.node_id,
            started_at=started_at,
            finished_at=now,
            counts_as_retry=counts_as_retry,
            skipped_reason=reason if status is Status.SKIPPED else None,
            claim=claim,
            result=result,
        )
        if reason and status is not Status.SKIPPED:
            outcome.error_message = reason
        if error is not None:
            outcome.error_type = type(error).__name__
            outcome.error_message = str(error) or type(error).__name__
            outcome.traceback = "".join(tb.format_exception(error))
            if counts_as_retry and job.retry_count < job.retries:
                delay = self.options.retry.delay(job.retry_count, job.retry_intervals, self._rng)
                try:
                    outcome.retry_at = now + timedelta(seconds=delay)
                    outcome.status = Status.IDLE
                except (OverflowError, ValueError):  # no date to retry at: it fails now
                    outcome.error_message += f" (no retry: a delay of {delay!r} s is out of range)"
        if error is not None or status is _FAILED or self._log_info:
            _joblog.ended(outcome, error, report_failure=report)
        self._outcomes.append(outcome)
        if not self._stopping and self.running:
            self.wake()  # the loop writes it with its next claim
        elif self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_soon())
        return outcome.status is _FAILED

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
        interval = self.heartbeat_period or self.options.heartbeat_interval
        while True:
            await self.clock.sleep(interval)
            now = self.clock.now()
            self._maintaining = True
            self._idle.clear()
            try:
                running = list(self._running)
                lost = await self.store.heartbeat(self._node(), running, self._lease_until(now))
                self.last_heartbeat = now
                self._lost(lost)
                for ticker_id in await self.store.cancel_requested(running):
                    self.cancel_local(ticker_id)
                # Right after the database was unreachable, every lease looks lapsed:
                # give live nodes one lease to renew before taking their jobs.
                if (now - self._store_error_at).total_seconds() > self.options.lease and (
                    reclaimed := await self.store.reclaim_expired(now, **self._reclaim_policies())
                ):
                    self._log_reclaimed(reclaimed, "whose node's lease ran out")
                    self.wake()
                await self._purge(now)
            except Exception:
                self._store_error_at = self.clock.now()
                logger.exception("heartbeat failed")
            finally:
                self._maintaining = False
                self.wake()  # the loop re-checks for work and idleness

    def _lost(self, ids: Iterable[UUID]) -> None:
        """Runs whose row this node no longer holds (its lease ran out while the node
        was frozen or cut off, and the row was taken back): stop them, since the row
        runs again (or already runs) elsewhere; their results will not be written."""
        for ticker_id in ids:
            run = self._running.get(ticker_id)
            if run is None or run.interrupted:
                continue
            logger.warning(
                "%s %s: this node lost its claim (its lease ran out); cancelling the run here",
                run.fn.name,
                ticker_id,
                extra=_joblog.job_fields("claim_lost", run.job, self.node_id),
            )
            self._interrupt(run)

    def _reclaim_policies(self) -> dict[str, Any]:
        """The policies and default arguments of Store.reclaim_expired."""
        policies, default = self._lost_run_policies()
        return {"policies": policies, "default": default}

    def _lost_run_policies(self) -> tuple[dict[str, LostRunPolicy], LostRunPolicy]:
        """What reclaiming does with each function's lost runs, and with the others'."""
        default = LostRunPolicy(max_stale_restarts=self.options.max_stale_restarts)
        policies = {
            fn.name: LostRunPolicy(
                max_stale_restarts=(
                    default.max_stale_restarts
                    if fn.options.max_stale_restarts is None
                    else fn.options.max_stale_restarts
                ),
                rerun=fn.options.rerun_lost,
            )
            for fn in self._functions.values()
        }
        return policies, default

    async def _purge(self, now: datetime) -> None:
        retention = self.options.retention
        if retention is None:
            return
        cutoff = now - timedelta(seconds=retention)
        batch = self.options.retention_batch
        # A store that purges on the loop's thread (memory) says how much is ~1 ms.
        batch = min(batch, getattr(self.store, "purge_step", None) or batch)
        total = 0
        while (count := await self.store.purge(cutoff, batch)) > 0:
            total += count
            if count < batch:
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

    def _log_reclaimed(self, count: int, whose: str) -> None:
        logger.info(
            "node %s took back %d job(s) %s (each runs again, or ends by its lost-run policy)",
            self.node_id,
            count,
            whose,
            extra={"action": "lease_reclaimed", "node": self.node_id, "count": count},
        )

    def _publish_state(self, state: str) -> None:
        bus = self.bus
        if bus.active:
            bus.publish(EngineStateChanged(self.clock.now(), self.node_id, state))


_INTERRUPTED = InterruptedError("the node stopped before the job finished; it runs again")

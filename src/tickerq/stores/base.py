"""The store contract: what the engine and the managers ask of persistence.

Every store (memory, SQLite, PostgreSQL) implements :class:`Store` and passes
the same contract test suite. A store keeps time tickers, cron tickers, their
occurrences, attempts and nodes, and does the few things that must be atomic
where several nodes share it: claiming due work with a lease, materializing a
cron fire exactly once, and taking over rows whose lease ran out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.enums import Priority, RunCondition, Status, TickerKind
from tickerq.errors import DuplicateJobError, TickerNotFoundError, TickerStateError
from tickerq.operations import CANCEL, RETRY, UPDATE, StateRule, kind_name

if TYPE_CHECKING:
    from datetime import timedelta

    from tickerq.events import EventBus
    from tickerq.limits import Gates
    from tickerq.models import Attempt, CronOccurrence, CronTicker, Node, Pause, TimeTicker
    from tickerq.stores.reads import (
        Census,
        ChangeMarker,
        DepthGroup,
        DueItem,
        NodeLocks,
        ThroughputBucket,
        TickerPage,
    )
    from tickerq.unique import KeyHeld, OnConflict

__all__ = [
    "CRON_BATCH_FIRES",
    "CRON_BATCH_SIZE",
    "DEFAULT_LOST_RUN",
    "LEASE_EXPIRED",
    "SEEDED_FIELDS",
    "CronBatch",
    "CronPlan",
    "CronPlanner",
    "Job",
    "LostRunPolicy",
    "Outcome",
    "SeedResult",
    "Store",
    "TickerQuery",
    "lost_run_end",
    "resolve_child",
]


_NO_HEADERS: dict[str, str] = {}
"""Shared by every job without headers (never changed in place: a change of a row's
headers replaces its dict), so a million waiting rows hold no empty dict each."""


class Job:
    """A claimed unit of work (a time ticker or a cron occurrence), read-only for the engine."""

    __slots__ = (
        "claim",
        "cron_ticker_id",
        "execution_time",
        "function",
        "has_children",
        "headers",
        "id",
        "kind",
        "parent_id",
        "priority",
        "request",
        "retries",
        "retry_count",
        "retry_intervals",
        "stale_restarts",
        "timeout",
    )

    def __init__(
        self,
        *,
        kind: TickerKind,
        id: UUID,
        function: str,
        priority: Priority,
        request: Any,
        execution_time: datetime | None,
        retries: int,
        retry_intervals: tuple[float, ...] | None,
        retry_count: int,
        timeout: float | None,
        cron_ticker_id: UUID | None = None,
        parent_id: UUID | None = None,
        has_children: bool = True,
        claim: int = 0,
        stale_restarts: int = 0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.id = id
        self.function = function
        self.priority = priority
        self.request = request
        self.execution_time = execution_time
        self.retries = retries
        self.retry_intervals = retry_intervals
        self.retry_count = retry_count
        self.timeout = timeout
        self.cron_ticker_id = cron_ticker_id
        self.parent_id = parent_id
        self.has_children = has_children
        """False only when the store knows no chain child hangs on this job (its
        results then skip the chain bookkeeping)."""
        self.claim = claim
        """Which claim of the row this is (the store counts them): a result is
        written only while the row is still under this claim."""
        self.stale_restarts = stale_restarts
        """Runs of the row lost so far (its node died or froze while running it)."""
        self.headers = _NO_HEADERS if headers is None else headers
        """The ticker's headers (``ctx.headers``); empty for cron occurrences."""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """The result of one attempt, handed to :meth:`Store.complete`."""

    job: Job
    status: Status
    """A final status, or IDLE when the job goes back to wait for a retry (or a restart)."""
    node: str
    started_at: datetime
    finished_at: datetime
    retry_at: datetime | None = None
    """With status IDLE: when to run again."""
    counts_as_retry: bool = True
    """False when the run was interrupted (shutdown), so it does not use up a retry."""
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    skipped_reason: str | None = None
    claim: int | None = None
    """The claim the run belongs to (default: the job's claim when the outcome is made)."""
    result: Any = None
    """What the job returned (already checked to be JSON within the size limit); stored
    on the attempt and on the row. None for anything but a success."""

    def __post_init__(self) -> None:
        if self.claim is None:
            self.claim = self.job.claim

    # What the outcome writes, the same on every store and path (the SQL paths
    # differ only in how they pass these values).

    @property
    def waits_again(self) -> bool:
        """The row goes back to IDLE (a retry, or a run interrupted by a stop)."""
        return self.status is Status.IDLE

    @property
    def attempt_status(self) -> Status:
        """The status recorded on the attempt: a run that goes back to wait (for a
        retry, or because it was interrupted) failed as an attempt."""
        return Status.FAILED if self.status is Status.IDLE else self.status

    @property
    def final_at(self) -> datetime | None:
        """The row's end time: None when it waits again."""
        return None if self.waits_again else self.finished_at

    @property
    def next_run_at(self) -> datetime | None:
        """The row's next execution time when it waits again (else None: unchanged)."""
        return (self.retry_at or self.finished_at) if self.waits_again else None

    @property
    def retry_increment(self) -> int:
        """What the row's retry count grows by: 1 for a retry that uses one up."""
        return 1 if self.waits_again and self.counts_as_retry else 0

    @property
    def elapsed_ms(self) -> float:
        """How long the attempt ran, in milliseconds."""
        return (self.finished_at - self.started_at).total_seconds() * 1000.0


@dataclass(frozen=True, slots=True)
class LostRunPolicy:
    """What a store does with a row whose run was lost (its node stopped heartbeating)."""

    max_stale_restarts: int = 3
    """Lost runs after which the row ends FAILED instead of running again."""
    rerun: bool = True
    """False: a lost run ends the row CANCELLED at once (for jobs that must not repeat)."""


DEFAULT_LOST_RUN = LostRunPolicy()
"""The policy of functions that set none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TickerQuery:
    """Filter and page for listing time tickers."""

    statuses: Sequence[Status] | None = None
    function: str | None = None
    text: str | None = None
    """Matched, case-insensitively, against function, description and id, as
    :mod:`tickerq.stores.reads` says (words among the latest tickers only)."""
    parent_id: UUID | None = None
    roots_only: bool = False
    """Only tickers without a parent (the tops of chains)."""
    limit: int = 100
    offset: int = 0


SEEDED_FIELDS = ("expression", "timezone", "request", "retries", "retry_intervals", "misfire")
"""The fields of a seeded cron ticker that the code owns (the decorator's options)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedResult:
    """What :meth:`Store.reconcile_seeded_crons` did, by function name."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    """Functions whose seeded cron changed (fields, or an older seed key folded in)."""
    removed: tuple[str, ...] = ()
    """Functions whose seeded cron tickers were deleted (one name per deleted ticker)."""
    crons: tuple[CronTicker, ...] = ()
    """The seeded cron tickers of the declared functions, as stored now."""


_NO_LEAD = timedelta(0)

CRON_BATCH_SIZE = 500
"""Due cron tickers one :meth:`Store.materialize_crons` call takes at most."""

CRON_BATCH_FIRES = 2000
"""Occurrences one :meth:`Store.materialize_crons` call plans at most (a RUN_ALL backlog
may bring up to 1,000 per cron): a batch never holds its locks for long."""


@dataclass(frozen=True, slots=True)
class CronPlan:
    """What a materialization does with one due cron ticker."""

    fires: Sequence[datetime]
    """The fire times to create occurrences for (each at most once, ever)."""
    new_next: datetime | None
    """The cron's cursor after this batch (its next fire not yet materialized)."""
    priority: Priority
    """The priority of the occurrences (their function's)."""


CronPlanner = Callable[["CronTicker"], CronPlan | None]
"""Plans a due cron ticker, as read in the materializing transaction; None leaves it
as it is. Pure and quick: it runs while the batch's crons are locked (on SQLite, on
the store's writer thread)."""


@dataclass(frozen=True, slots=True)
class CronBatch:
    """What one :meth:`Store.materialize_crons` call did."""

    created: Mapping[UUID, int]
    """Occurrences created, by cron ticker id, for each cron this call advanced."""
    last_id: UUID | None
    """The highest cron id this call looked at (the next call starts after it)."""
    exhausted: bool
    """No due cron with a higher id than ``last_id`` was left for this call
    (crons another node is materializing right now are not counted)."""


class Store(ABC):
    """Persistence of tickers; one implementation per backend."""

    shared: bool = False
    """True when other processes may use the same data (leases and heartbeats matter)."""

    events: EventBus | None = None

    poll_interval: float | None = None
    """How often an idle engine looks for work others added (None: only when woken)."""

    def bind_events(self, bus: EventBus) -> None:
        """Announce every change on ``bus`` (events), and publish there the notices
        other processes send (see :meth:`listen` and :meth:`watch`)."""
        self.events = bus

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; create or check the schema."""

    @property
    def is_open(self) -> bool:
        """Whether the store may be used (the managers refuse to use it otherwise)."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every connection."""

    async def listen(self) -> None:  # noqa: B027 - optional hook
        """From now until :meth:`close`, publish the notices other nodes send
        (:mod:`tickerq.notices`) on the bound bus. Several calls listen once.
        Stores without cross-node notices do nothing."""

    @property
    def listening(self) -> bool:
        """True while other nodes' notices arrive (see :meth:`listen`)."""
        return False

    def watch(self, interval: float) -> Callable[[], None]:
        """Publish :class:`tickerq.notices.Changed` on the bound bus for what other
        processes change, looking at least every ``interval`` seconds where notices
        do not say it, until the returned function is called. A store no other
        process changes (the default) does nothing: events say everything."""
        return _nothing

    # -- time tickers ------------------------------------------------------------------

    @abstractmethod
    async def add_time_tickers(self, tickers: Sequence[TimeTicker]) -> None:
        """Store new time tickers atomically (all or none). Parents come before children.

        A ticker with a unique key whose key another ticker holds raises
        DuplicateJobError; two of the batch with one function and key raise
        InvalidArgumentError (nothing is stored either way).
        """

    @abstractmethod
    async def add_unique(self, ticker: TimeTicker, on_conflict: OnConflict) -> TimeTicker:
        """Store ``ticker``, which has a unique key, unless a ticker of its function
        holds that key (waits or runs: see :mod:`tickerq.unique`); then, in the
        same transaction, what ``on_conflict`` says: ``"keep"`` stores nothing,
        ``"error"`` raises DuplicateJobError naming the holder, ``"replace"``
        changes a waiting (IDLE) holder in place (:data:`tickerq.unique.REPLACED_FIELDS`)
        or, when the holder has started, stores ``ticker`` as its chain child
        (:func:`tickerq.unique.successor`) and moves the key to it.

        Returns the ticker as stored, with ``enqueued`` saying which happened
        (ADDED, KEPT: the holder, REPLACED: the holder changed, CHAINED: the new
        child). Race-free across nodes: of two calls with one key, one adds and
        the other sees its ticker.
        """

    @abstractmethod
    async def get_time_ticker(self, ticker_id: UUID) -> TimeTicker | None:
        """One time ticker, or None."""

    @abstractmethod
    async def get_time_tickers(self, ids: Sequence[UUID]) -> dict[UUID, TimeTicker]:
        """The time tickers of ``ids`` that exist, by id (one read)."""

    async def update_time_ticker(
        self,
        ticker_id: UUID,
        changes: Mapping[str, Any],
        allowed: frozenset[Status] = UPDATE.allowed,
    ) -> TimeTicker:
        """Change fields of a ticker whose status is in ``allowed``.

        Raises TickerNotFoundError, TickerStateError naming the status, or
        DuplicateJobError when the change would give it a key another ticker holds.
        """
        held: dict[UUID, KeyHeld] = {}
        found = (await self.update_time_tickers({ticker_id: changes}, allowed, held_by=held)).get(
            ticker_id
        )
        rule = UPDATE if allowed == UPDATE.allowed else _rule("update", allowed)
        _one(rule, TickerKind.TIME, ticker_id, found)
        _not_held(held.get(ticker_id))
        ticker = await self.get_time_ticker(ticker_id)
        if ticker is None:  # deleted right after the change
            raise TickerNotFoundError("time ticker", ticker_id)
        return ticker

    @abstractmethod
    async def update_time_tickers(
        self,
        changes: Mapping[UUID, Mapping[str, Any]],
        allowed: frozenset[Status] = UPDATE.allowed,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Change several tickers in one transaction: each id whose status is in
        ``allowed`` gets its ``changes`` (one mapping object may serve many ids; the
        changes never include the status).

        A change that would make a row hold a unique key (``unique_key`` or
        ``function`` among the changes) another ticker holds, or one an earlier
        row of the call (in id order) takes, is not made: the row is left as it
        is and put in ``held_by`` with the key and its holder.

        Returns the status (before this call) and function of every id found; ids
        not found are left out.
        """

    @abstractmethod
    async def delete_time_tickers(self, ids: Sequence[UUID]) -> int:
        """Delete tickers (and their children) that are not running; returns how many."""

    @abstractmethod
    async def query_time_tickers(self, query: TickerQuery) -> list[TimeTicker]:
        """Tickers matching ``query``, newest execution time first."""

    @abstractmethod
    async def count_time_tickers(self, query: TickerQuery) -> int:
        """How many tickers match ``query`` (ignoring its page)."""

    # -- operations on both kinds -----------------------------------------------------

    async def cancel(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> Status:
        """Cancel a waiting ticker at once; flag a running one for its node.

        Returns the status it had. Raises TickerNotFoundError, or
        TickerStateError when it has already ended (see :data:`CANCEL`).
        """
        found = (await self.cancel_many(kind, [ticker_id], now)).get(ticker_id)
        return _one(CANCEL, kind, ticker_id, found)

    async def retry_now(self, kind: TickerKind, ticker_id: UUID, now: datetime) -> None:
        """Make an ended (or waiting) ticker due now again. Raises TickerNotFoundError,
        TickerStateError while it runs (see :data:`RETRY`), or DuplicateJobError when
        another ticker holds its unique key now."""
        held: dict[UUID, KeyHeld] = {}
        found = (await self.retry_many(kind, [ticker_id], now, held_by=held)).get(ticker_id)
        _one(RETRY, kind, ticker_id, found)
        _not_held(held.get(ticker_id))

    @abstractmethod
    async def cancel_many(
        self, kind: TickerKind, ids: Sequence[UUID], now: datetime
    ) -> dict[UUID, tuple[Status, str]]:
        """Cancel, in one transaction, each of ``ids`` whose status :data:`CANCEL`
        allows: a waiting row ends CANCELLED at once (its chain resolved, as when a
        run ends); a running one is flagged for its node, and other nodes are told
        when the transaction commits. Rows that have ended are left as they are.

        Returns the status (before this call) and function of every id found;
        ids not found (or of the other kind) are left out.
        """

    @abstractmethod
    async def retry_many(
        self,
        kind: TickerKind,
        ids: Sequence[UUID],
        now: datetime,
        *,
        held_by: dict[UUID, KeyHeld] | None = None,
    ) -> dict[UUID, tuple[Status, str]]:
        """Make each of ``ids`` whose status :data:`RETRY` allows (all but running
        ones) due now again, in one transaction: IDLE, its error, lock and cancel
        flag cleared, no longer waiting for a chain parent.

        An ended time ticker whose unique key another ticker holds now (or an
        earlier one of ``ids``, in id order, takes back) stays as it is and is put
        in ``held_by`` with the key and its holder: a key has one holder at a time.

        Returns the status (before this call) and function of every id found;
        ids not found (or of the other kind) are left out.
        """

    @abstractmethod
    async def attempts(self, kind: TickerKind, ticker_id: UUID) -> list[Attempt]:
        """Every attempt of a ticker, oldest first."""

    # -- cron tickers -----------------------------------------------------------------

    @abstractmethod
    async def add_cron_ticker(self, cron: CronTicker) -> CronTicker:
        """Store a new cron ticker."""

    @abstractmethod
    async def reconcile_seeded_crons(self, declared: Sequence[CronTicker]) -> SeedResult:
        """Make the seeded cron tickers (``seeded=True``) match ``declared``: the crons
        the code declares, at most one per function.

        Per declared function exactly one seeded cron ticker remains: a missing one
        is created; an existing one that differs in a field the code owns
        (:data:`SEEDED_FIELDS`) is updated in place, keeping its id, ``enabled``,
        ``description`` and its occurrences; a new expression or timezone also moves
        ``next_fire_at`` to the declared one. Other seeded crons of that function
        (older seed keys) and the seeded crons of every function not declared are
        deleted with their waiting occurrences; occurrences that are running or
        have ended stay. Crons not seeded (added at run time) are never touched.

        Atomic and serialized across nodes: several nodes reconciling at once end
        with one seeded cron per function and no doubled occurrence.
        """

    @abstractmethod
    async def get_cron_ticker(self, cron_id: UUID) -> CronTicker | None:
        """One cron ticker, or None."""

    @abstractmethod
    async def update_cron_ticker(
        self,
        cron_id: UUID,
        changes: Mapping[str, Any],
        *,
        take_back_after: datetime | None = None,
    ) -> CronTicker:
        """Change fields of a cron ticker. Raises TickerNotFoundError.

        With ``take_back_after``, in the same transaction: the occurrences made
        ahead of their fire (never claimed, IDLE, due later than that time; see
        ``EngineOptions.cron_lead``) are deleted, and unless ``changes`` set
        ``next_fire_at`` the cron's cursor goes back to the earliest of them, so
        they are made again from the changed cron.
        """

    @abstractmethod
    async def delete_cron_ticker(self, cron_id: UUID) -> None:
        """Delete a cron ticker and its waiting occurrences. Raises TickerNotFoundError."""

    @abstractmethod
    async def query_cron_tickers(self, function: str | None = None) -> list[CronTicker]:
        """Every cron ticker (of one function), oldest first."""

    @abstractmethod
    async def due_cron_tickers(self, now: datetime) -> list[CronTicker]:
        """Enabled cron tickers whose ``next_fire_at`` is at or before ``now``."""

    @abstractmethod
    async def advance_cron_ticker(
        self,
        cron_id: UUID,
        *,
        expected_next: datetime | None,
        new_next: datetime | None,
        fires: Sequence[datetime],
        priority: Priority,
        now: datetime,
    ) -> int:
        """Create occurrences for ``fires`` (each at most once, ever) and move the
        cron's cursor from ``expected_next`` to ``new_next`` if nobody moved it first.
        Returns how many occurrences this call created."""

    @abstractmethod
    async def materialize_crons(
        self,
        now: datetime,
        planner: CronPlanner,
        *,
        after: UUID | None = None,
        limit: int = CRON_BATCH_SIZE,
        max_fires: int = CRON_BATCH_FIRES,
        until: datetime | None = None,
    ) -> CronBatch:
        """Materialize a batch of due cron tickers in one transaction.

        Takes the enabled crons whose ``next_fire_at`` is at or before ``until``
        (default ``now``; later, fires are made ahead of their time) and
        whose id is greater than ``after``, in id order, at most ``limit`` of them,
        and hands each to ``planner``; it stops after the cron whose plan brings
        the planned fires to ``max_fires``. For every planned cron it creates the
        occurrences of its fires (each (cron, fire) at most once, ever) and moves
        its ``next_fire_at`` to the plan's ``new_next``.

        Several nodes may call this at once: a cron is planned and advanced by one
        of them only (a cron another node is materializing is passed over; one it
        has advanced since is no longer due), so no fire is ever doubled. On SQL
        stores a call costs a bounded number of statements, whatever the batch size.
        """

    @abstractmethod
    async def occurrences(
        self, cron_id: UUID, limit: int = 100, offset: int = 0
    ) -> list[CronOccurrence]:
        """Occurrences of a cron ticker, newest first."""

    @abstractmethod
    async def get_occurrence(self, occurrence_id: UUID) -> CronOccurrence | None:
        """One occurrence, or None."""

    # -- the engine's work ------------------------------------------------------------

    async def changed_elsewhere(self) -> bool:
        """Whether another process may have changed the store since the last call.

        An idle engine asks this on each poll and looks for due work only when it
        is True, so polling a big store costs nothing while nothing changes. The
        default, True, makes every poll look.
        """
        return True

    @abstractmethod
    async def next_due_time(
        self,
        after: datetime | None = None,
        *,
        cron_lead: timedelta = _NO_LEAD,
        paused: Collection[str] = (),
    ) -> datetime | None:
        """The earliest time at which something becomes due (claimable or a cron fire).

        With ``after``: the earliest such time later than ``after`` (the engine asks
        this when what is due already could not be claimed on its node). A cron
        counts as due ``cron_lead`` before its next fire (its fires are made ahead).
        Rows of the functions in ``paused`` do not count (none do when it holds
        :data:`tickerq.models.CLUSTER`); their crons still do (their fires are made
        while paused, and wait).
        """

    @abstractmethod
    async def claim(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        capacity: Mapping[str, int],
        functions: Collection[str],
        limits: Mapping[str, int] | None = None,
        finished: Sequence[Outcome] = (),
        gates: Gates | None = None,
    ) -> list[Job]:
        """Record ``finished`` (as :meth:`complete` would), then claim and start due work.

        Both happen in one transaction (one statement where the database allows),
        so a worker pays one round trip per batch: the results of the jobs that
        just ended and the claim of the next ones.

        Claimed jobs are IN_PROGRESS for ``node`` under a lease until
        ``lease_until``; their attempt is open, and their IN_PROGRESS chain
        children start. Highest priority first, then oldest; at most ``slots``
        jobs, not counting LONG_RUNNING ones (they run outside the pool); at most
        ``capacity[f]`` jobs of a function ``f`` that has a limit; only jobs of
        ``functions`` (those this node can run). ``limits`` gives each limited
        function's max_concurrency: a shared store enforces it across all nodes
        (counting their running jobs) instead of this node's ``capacity``.
        Functions paused in the store when the claim runs (:meth:`set_pause`;
        every function while the cluster is) are left out, whatever ``functions``
        says: the caller's view of the pauses may be a moment old.

        ``gates`` (see :mod:`tickerq.limits`): rate limits (no window of a limit's
        period holds more starts of its functions than its limit, counting every
        node's claims) and per-key concurrency (no more running rows of a
        function with one concurrency key than its ``max_per_key``). Rows held
        back stay IDLE, untouched; the claim sets ``gates.blocked_until`` (when a
        full rate limit lets one more start) and ``gates.blocked``.
        """

    @abstractmethod
    async def complete(self, outcomes: Sequence[Outcome]) -> None:
        """Record attempts' ends: final status or back to IDLE for a retry; resolve chains.

        Only rows still held by the outcome's node change (a row reclaimed after
        its lease ran out belongs to someone else).
        """

    @abstractmethod
    async def release(self, jobs: Sequence[Job]) -> None:
        """Give back claimed jobs that did not run (back to IDLE, no attempt counted)."""

    # -- pauses -----------------------------------------------------------------------

    @abstractmethod
    async def set_pause(self, pause: Pause) -> Pause:
        """Store ``pause`` unless its function (or the cluster, ``"*"``) is paused
        already; return the pause that holds now (the earlier one, if so).

        Other nodes hear of it at once where the store sends notices
        (:class:`tickerq.notices.Changed` with :data:`tickerq.notices.PAUSES`);
        this process's bus gets a :class:`tickerq.events.PausesChanged`.
        """

    @abstractmethod
    async def clear_pause(self, function: str, now: datetime) -> bool:
        """Resume ``function`` (``"*"``: the cluster) at ``now``; True if it was
        paused. Told like :meth:`set_pause`."""

    @abstractmethod
    async def pauses(self) -> dict[str, Pause]:
        """Every stored pause, by function (``"*"``: the cluster). A small read:
        every node makes it at least twice a second while it claims."""

    # -- nodes and leases -------------------------------------------------------------

    @abstractmethod
    async def heartbeat(
        self, node: Node, running: Sequence[UUID], lease_until: datetime
    ) -> list[UUID]:
        """Record that ``node`` is alive and extend the leases of ``running`` (only).

        Returns the ids of ``running`` that ``node`` no longer holds (their lease
        ran out and the row was taken back): their local runs are stale.
        """

    @abstractmethod
    async def reclaim_expired(
        self,
        now: datetime,
        node: str | None = None,
        *,
        policies: Mapping[str, LostRunPolicy] | None = None,
        default: LostRunPolicy = DEFAULT_LOST_RUN,
    ) -> int:
        """Take back rows whose lease ran out (their node died); returns how many.

        Each such run is recorded as a lost attempt and counted in the row's
        ``stale_restarts``. The row waits to run again (IDLE, due now) unless
        its function's policy (``policies[function]``, else ``default``) says it
        ends: CANCELLED when it must not run again, FAILED once it has been lost
        more than ``max_stale_restarts`` times (a job that kills or freezes
        every node that runs it must not go round forever).

        With ``node``: every row held under that node id, whatever its lease (a
        node starting under the id of one that died takes its rows back at once).
        """

    @abstractmethod
    async def nodes(self) -> list[Node]:
        """Every known node."""

    @abstractmethod
    async def remove_node(self, node_id: str) -> None:
        """Forget a node (on graceful stop)."""

    @abstractmethod
    async def purge(self, finished_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` ended rows (and their attempts) that finished before
        ``finished_before``, oldest first; waiting chain children keep their parent.
        Returns how many rows went."""

    @abstractmethod
    async def cancel_requested(self, ids: Sequence[UUID]) -> list[UUID]:
        """Which of these running ids were asked to cancel (from any node)."""

    # -- read side for dashboards -----------------------------------------------------
    # What a dashboard shows, as the named values of tickerq.stores.reads. Each store
    # answers from its own data (SQL stores with a few statements, each backed by an
    # index: see tickerq.stores.sql.reads), so a dashboard needs only this contract.

    @abstractmethod
    async def census(self) -> Census:
        """Rows of both kinds by kind, function, status and root-ness.

        Exact, except on a big SQL table, where a census is kept and refreshed now
        and then (it may lag by up to a couple of minutes).
        """

    @abstractmethod
    async def search_time_tickers(self, query: TickerQuery) -> TickerPage:
        """A page of time tickers matching ``query``, in the list order, with the total.

        The search semantics of :mod:`tickerq.stores.reads` (the same as
        :meth:`query_time_tickers`, which returns this page's items). The total
        of a query without text may come from the census (see :meth:`census`).
        """

    @abstractmethod
    async def children_of(
        self, parents: Sequence[UUID], limit: int = 200
    ) -> dict[UUID, list[TimeTicker]]:
        """The chain children of each of ``parents`` (at most ``limit`` each), oldest
        first (by ``created_at``, then id); unknown parents get an empty list."""

    @abstractmethod
    async def throughput(
        self, now: datetime, span: timedelta, bucket: timedelta
    ) -> list[ThroughputBucket]:
        """Rows (both kinds) whose ``finished_at`` falls in each bucket of the last
        ``span`` (:class:`~tickerq.stores.reads.BucketSpan`), by their status.

        SQL stores keep the counts of buckets that ended a while ago, so a deleted
        or retried row may stay counted until :meth:`forget_kept_reads`.
        """

    @abstractmethod
    async def locks_by_node(self) -> list[NodeLocks]:
        """How many rows each node holds locked (claimed or running), by node id."""

    @abstractmethod
    async def next_due(self, limit: int = 5) -> list[DueItem]:
        """The waiting rows (both kinds, with a time, not waiting for a chain parent)
        due soonest, soonest first."""

    @abstractmethod
    async def depth(self, now: datetime) -> list[DepthGroup]:
        """The rows (both kinds) waiting to run, IDLE and not waiting for a chain
        parent, by function and priority, and how many of them are due by ``now``
        (a row without an execution time counts as due). Groups without rows are
        left out. Exact, read from the waiting rows only (on SQL stores, the
        partial waiting index and the rows it points to): what metrics sample."""

    @abstractmethod
    async def rate_usage(self, periods: Mapping[str, timedelta], now: datetime) -> dict[str, int]:
        """Starts counted by each rate limit (bucket -> its period) within its period
        up to ``now``, across every node (see :mod:`tickerq.limits`): what the
        dashboard shows against the limit."""

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Return if the data can be read now; raise the driver's error if not.

        SQL stores run one small read (SQLite: on a new read-only connection to
        the file, so a file moved or deleted under a running node is noticed);
        the memory store is always there. Readiness probes call it under a
        short timeout.
        """

    async def change_marker(self) -> ChangeMarker | None:
        """A cheap value that changes whenever the stored data changes, to see
        changes made by other processes; None (the default) for a store that no
        other process changes (this process's changes come through the event bus)."""
        return None

    def forget_kept_reads(self, *, census: bool = False) -> None:  # noqa: B027
        """Drop the counts kept between reads (after an operation that deleted or re-ran
        rows); with ``census``, a kept census too (the next read counts again).
        Stores that keep nothing do nothing."""


def _nothing() -> None:
    return None


LEASE_EXPIRED = "its node stopped heartbeating; it runs again elsewhere"
"""Error message of an attempt whose node's lease ran out."""


def lost_run_end(policy: LostRunPolicy, stale_restarts: int) -> tuple[Status, str] | None:
    """How a row whose run was just lost ends (status, error message), or None when it
    runs again; ``stale_restarts`` counts the lost runs including this one."""
    if not policy.rerun:
        return Status.CANCELLED, (
            "its node stopped heartbeating while it ran; not run again (rerun_lost=False)"
        )
    if stale_restarts > policy.max_stale_restarts:
        return Status.FAILED, (
            f"its node stopped heartbeating while it ran, {stale_restarts} times "
            f"(max_stale_restarts={policy.max_stale_restarts}); not run again: a job that "
            "kills or freezes its node must not go round forever"
        )
    return None


def _one(
    rule: StateRule, kind: TickerKind, ticker_id: UUID, found: tuple[Status, str] | None
) -> Status:
    """The status a single operation found, or its error: not found, or refused by ``rule``."""
    if found is None:
        raise TickerNotFoundError(kind_name(kind), ticker_id)
    status = found[0]
    if not rule.allows(status):
        raise TickerStateError(rule.refusal(kind, ticker_id, status))
    return status


def _not_held(held: KeyHeld | None) -> None:
    """Raise DuplicateJobError when a single operation was refused for a held key."""
    if held is not None:
        raise DuplicateJobError(held.function, held.key, held.holder)


def _rule(name: str, allowed: frozenset[Status]) -> StateRule:
    """A rule allowing ``allowed`` (for a caller that passes its own statuses)."""
    names = " or ".join(sorted(s.name for s in allowed))
    return StateRule(name, allowed, f"it can be changed only when {names}", f"not {names}")


def resolve_child(condition: RunCondition | None, parent_status: Status) -> bool:
    """Whether a child with ``condition`` runs after its parent ended with ``parent_status``."""
    return (condition or RunCondition.ON_ANY_COMPLETED_STATUS).matches(parent_status)

"""Room a PostgreSQL node holds ahead, so that limits that do not bind cost nothing.

A claim under rate limits or per-key limits is exact: it takes the limits'
advisory locks and counts what is stored (the gated statement of
:mod:`tickerq.stores.sql.hot`). That costs a claim about a third more than a
plain one, on every claim, even when a limit is far from binding. So an exact
claim may also hand its node room ahead, and the node's next claims, while that
room covers everything they can take, are plain ones.

Rate limits: a **reserve**
    While a rate limit's window holds at most half its limit (counting this
    claim's starts) and the claim took as many rows as it had slots (there is a
    backlog), an exact claim stores up to ``n`` more starts of it at a slot a
    little ahead (``at``, see :meth:`~tickerq.limits.RateLimit.stored_at`), as
    if they had started, and the node may start that many jobs under it until
    ``at`` without counting. The window proof still holds: every exact claim
    counts the stored starts after its window's beginning, later ones included;
    take any window and, of the jobs started in it, the one decided last: every
    other one was decided before it and is stored at or after its own start, so
    inside that claim's window, and was counted by it. So no window holds more
    starts than the limit, since each of these jobs really starts after the
    claim that stored it and no later than ``at``. What a reserve did not use
    goes back (its stored count is lowered) at the node's next exact claim; until
    then it only takes room, never gives more.

Per-key limits: a **lease**
    An exact claim may lease its node ``room`` runs per key of a function, until
    ``until`` (a row of ``tickerq_key_leases``): while it holds, the node starts
    jobs of that function without counting, as long as its own running jobs of
    the function plus the claim's free slots stay within ``room`` (then no key
    can pass ``room`` on this node). Every other node's exact claim counts the
    room a lease has not used on a key (``room`` minus the lessee's running rows
    of that key) as running there. A lease is granted only while the leases of
    the function (this one included) hold at most half its ``max_per_key`` and,
    added to the busiest key's running rows, at most all of it: so for every key,
    the leased room plus what others run stays within the limit. A node renews
    its leases at an exact claim when half their time is gone; one that stops
    drops them (with its node row); one that dies leaves them to run out (others
    count them until then).

Both end at a moment; a plain claim enforces it itself: it claims nothing once
the database's clock has passed the deadline the node sends with it (a node
frozen between its check and the statement starts nothing on spent room). The
deadline is sent in the wall clock, so the app's clock may differ (tests).

A plain claim takes rows of any function it may run, up to its free slots plus
its LONG_RUNNING rows: it goes ahead only when the room covers all of them (the
LONG_RUNNING rows it may take are capped by what the room leaves).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from tickerq.limits import Gates

__all__ = ["Grant", "LeaseWish", "PlainClaim", "Prepaid"]

RESERVE_CLAIMS = 256
"""A reserve holds the starts of this many claims of the node's widest."""

RESERVE_AHEAD = timedelta(seconds=1)
"""A reserve lasts at most this long (and at most a quarter of its period, but at
least one slot)."""

LEASE_TIME = timedelta(seconds=10)
"""How long a lease of per-key room lasts; renewed when half of it is gone."""

PLAIN_MARGIN = timedelta(milliseconds=5)
"""Room that runs out sooner than this is not used: the claim would likely reach
the database too late (and claim nothing)."""

LONG_RUNNING_MOST = 1000
"""The most LONG_RUNNING rows a claim takes (the engine's own bound)."""


@dataclass(slots=True)
class _Reserve:
    since: datetime
    """When the claim that stored it was decided: no start from it before then."""
    at: datetime
    """The slot its starts are stored at: the last moment one may start."""
    left: int
    """Starts not used yet."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A reserve an exact claim asks for: up to ``n`` starts of ``bucket`` stored
    at ``at``, as many as keep the window at most at ``ceiling`` starts; none if
    that is fewer than ``least``."""

    bucket: str
    at: datetime
    n: int
    ceiling: int
    least: int


@dataclass(frozen=True, slots=True)
class LeaseWish:
    """A lease an exact claim asks for: ``room`` runs per key of ``function``."""

    function: str
    room: int


@dataclass(frozen=True, slots=True)
class PlainClaim:
    """A claim the node's room covers: sent as a plain one."""

    long_limit: int
    """The LONG_RUNNING rows it may take."""
    deadline: datetime
    """Wall-clock time after which the database must claim nothing."""
    buckets: Mapping[str, tuple[str, ...]]
    """The rate limits each function's starts spend (to count what it took)."""


class Prepaid:
    """One node's room ahead: reserves by rate limit, leases by function, and the
    jobs it runs of functions with a per-key limit (see the module)."""

    def __init__(self) -> None:
        self._reserves: dict[str, _Reserve] = {}
        self._leases: dict[tuple[str, str], tuple[int, datetime, datetime]] = {}
        """By (node, function): room, since, until."""
        self._running: dict[UUID, tuple[str, str, float]] = {}
        """Running jobs of functions with a per-key limit: (node, function, when
        counted: monotonic seconds)."""
        self._widest = 1
        """The most free slots a claim had: a reserve is sized by it."""

    # -- plain claims -------------------------------------------------------------------

    def plain(
        self, gates: Gates, functions: Collection[str], slots: int, now: datetime, node: str
    ) -> PlainClaim | None:
        """The plain claim the room of ``node`` covers for ``functions`` at ``now``
        (``slots`` free slots), or None: the claim must be exact. (A store serves
        one node; tests claim for several through one: leases are by node.)"""
        free = max(slots, 0)
        room = LONG_RUNNING_MOST + free
        until: datetime | None = None
        for bucket in gates.buckets_for(functions):
            reserve = self._reserves.get(bucket)
            if reserve is None or not reserve.since <= now < reserve.at:
                return None
            room = min(room, reserve.left)
            until = reserve.at if until is None else min(until, reserve.at)
        running = self.running_by_function(node)
        for function in functions:
            if function not in gates.per_key:
                continue
            lease = self._leases.get((node, function))
            if lease is None or not lease[1] <= now < lease[2]:
                return None
            room = min(room, lease[0] - running.get(function, 0))
            until = lease[2] if until is None else min(until, lease[2])
        if until is None or room < max(free, 1) or until - now < PLAIN_MARGIN:
            return None
        # The deadline in the wall clock: the app's clock may be another (tests).
        deadline = datetime.now(UTC) + (until - now)
        return PlainClaim(room - free, deadline, {f: gates.buckets_of(f) for f in functions})

    def spent(self, claim: PlainClaim, functions: Iterable[str]) -> None:
        """Count the starts of a plain claim (the functions of the jobs it took)."""
        for function in functions:
            for bucket in claim.buckets.get(function, ()):
                reserve = self._reserves.get(bucket)
                if reserve is not None:
                    reserve.left -= 1

    # -- this node's running jobs under per-key limits ----------------------------------

    def started(self, gates: Gates, jobs: Iterable[tuple[UUID, str]], node: str) -> None:
        """Count jobs (id, function) ``node`` claimed, by any path."""
        counted = time.monotonic()
        for ident, function in jobs:
            if function in gates.per_key:
                self._running[ident] = (node, function, counted)

    def ended(self, ids: Iterable[UUID]) -> None:
        """Forget jobs that ended here (or went back unrun)."""
        for ident in ids:
            self._running.pop(ident, None)

    def running_now(self, node: str, running: Collection[UUID]) -> None:
        """Forget the jobs of ``node`` counted a minute ago or more that it no
        longer runs (``running``: what its engine runs now, as its heartbeat says;
        a job claimed while that list was made is younger)."""
        old = time.monotonic() - 60
        still = set(running)
        for ident, (holder, _, counted) in list(self._running.items()):
            if holder == node and counted < old and ident not in still:
                del self._running[ident]

    def running_by_function(self, node: str) -> dict[str, int]:
        """The running jobs of ``node`` of functions with a per-key limit, by function."""
        out: dict[str, int] = {}
        for holder, function, _ in self._running.values():
            if holder == node:
                out[function] = out.get(function, 0) + 1
        return out

    # -- exact claims -------------------------------------------------------------------

    def requests(
        self, gates: Gates, buckets: Collection[str], now: datetime, slots: int
    ) -> tuple[list[Grant], list[tuple[str, datetime, int]]]:
        """For an exact claim at ``now`` of ``buckets`` (``slots`` free): the
        reserves to ask for, and the unused starts of reserves to give back
        (bucket, slot, count).

        A live reserve with room for this claim is kept. One without goes back (what
        it did not use) and a new one is asked for; or, when the new one would be
        stored at its slot, it is topped up. The statement writes a slot's row
        once: a reserve stored at the slot of the claim's own starts is kept as it
        is (given back by a later claim).
        """
        grants: list[Grant] = []
        returns: list[tuple[str, datetime, int]] = []
        least = max(slots, 1)
        self._widest = max(self._widest, least)
        for bucket in buckets:
            limit = gates.buckets[bucket]
            # At least one slot ahead: never the slot of the claim's own starts.
            ahead = max(min(RESERVE_AHEAD, limit.per / 4), limit.slot)
            at = limit.stored_at(now + ahead)
            reserve = self._reserves.get(bucket)
            if reserve is not None:
                live = reserve.since <= now < reserve.at
                if (live and reserve.left >= least) or reserve.at == limit.stored_at(now):
                    continue  # kept (given back by a later claim if need be)
                if not live or reserve.at != at:  # topped up otherwise (see granted)
                    del self._reserves[bucket]
                    # A reserve past its period no longer counts: nothing to give
                    # back; nor to the row the new one goes to (the clock went back).
                    if reserve.left > 0 and now - limit.per < reserve.at != at:
                        returns.append((bucket, reserve.at, reserve.left))
            size = self._widest * RESERVE_CLAIMS
            grants.append(Grant(bucket, at, size, limit.limit // 2, least))
        return grants, returns

    def lease_wishes(
        self, gates: Gates, functions: Collection[str], now: datetime, slots: int, node: str
    ) -> list[LeaseWish]:
        """The leases an exact claim of ``node`` at ``now`` (``slots`` free) asks
        for: of each function with a per-key limit, unless a lease with room for
        this claim has more than half its time left."""
        running = self.running_by_function(node)
        wishes = []
        for function in sorted(functions):
            if function not in gates.per_key:
                continue
            need = running.get(function, 0) + max(slots, 1)
            lease = self._leases.get((node, function))
            if (
                lease is not None
                and lease[0] >= need
                and lease[1] <= now
                and lease[2] - now > LEASE_TIME / 2
            ):
                continue
            room = max(need, 0 if lease is None else lease[0])
            wishes.append(LeaseWish(function, room))
        return wishes

    def leased(
        self,
        wishes: Iterable[LeaseWish],
        granted: Collection[str],
        node: str,
        now: datetime,
        until: datetime,
    ) -> None:
        """Keep the leases an exact claim of ``node`` at ``now`` was granted
        (``granted``: their functions); the others it asked for are gone (the
        claim dropped them)."""
        given = set(granted)
        for wish in wishes:
            if wish.function in given:
                self._leases[(node, wish.function)] = (wish.room, now, until)
            else:
                self._leases.pop((node, wish.function), None)

    def granted(self, grants: Iterable[Grant], counts: Mapping[str, int], now: datetime) -> None:
        """Keep the reserves an exact claim at ``now`` was granted (``counts``: by
        bucket)."""
        for grant in grants:
            n = counts.get(grant.bucket)
            if not n:
                continue
            kept = self._reserves.get(grant.bucket)
            if kept is not None and kept.at == grant.at:  # topped up: the same row
                kept.left += n
            else:
                self._reserves[grant.bucket] = _Reserve(now, grant.at, n)

    def held(self, bucket: str) -> int:
        """Starts of ``bucket`` stored ahead and not used (yet), live or spent."""
        reserve = self._reserves.get(bucket)
        return 0 if reserve is None else reserve.left

    def clear(self) -> None:
        """Forget every reserve and lease (after a failed claim: what it stored is
        unknown; stored room stays counted until it runs out: taken, never given)."""
        self._reserves.clear()
        self._leases.clear()

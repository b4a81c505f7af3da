"""A gated claim on a hot path: what it needs to know and what it reports back.

The general path opens a :class:`~tickerq.limits.Gate` and admits rows one by
one in Python. The hot paths keep the same rules in fewer steps: on SQLite the
transaction runs in one thread, so the same gate admits the picked rows
(:meth:`GatedClaim.admit`); on PostgreSQL one statement decides in SQL (after
the claim's advisory locks) and :meth:`GatedClaim.report` hands the outcome to
the gates. That statement is a little more careful than the gate where two
limits bind at once: a row a per-key limit holds back counts against no rate
limit, but a row one rate limit holds back still takes room in the function's
other rate limits for that claim (fewer starts, never more; the next claim
starts them).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tickerq.limits import Gate, Gates
from tickerq.stores.sql.prepaid import Grant, LeaseWish

__all__ = ["GatedClaim"]


class GatedClaim:
    """One claim's limits, for the functions it claims: the advisory ``locks``
    (PostgreSQL), each rate limit's window and limit, the functions with a per-key
    limit, the (function, bucket) pairs a start counts against, and the starts the
    claim may delete (``prune``: by bucket, up to when)."""

    __slots__ = (
        "gates",
        "granted",
        "grants",
        "lease_until",
        "leases",
        "limits",
        "locks",
        "members",
        "now",
        "per_key",
        "prune",
        "returns",
        "windows",
        "wishes",
    )

    def __init__(
        self,
        gates: Gates,
        now: datetime,
        functions: Collection[str],
        *,
        locks: list[int],
        prune: Mapping[str, datetime],
        grants: Sequence[Grant] = (),
        returns: Sequence[tuple[str, datetime, int]] = (),
        wishes: Sequence[LeaseWish] = (),
        lease_until: datetime | None = None,
    ) -> None:
        self.gates = gates
        self.now = now
        buckets = gates.buckets_for(functions)
        self.windows = {b: now - gates.buckets[b].per for b in buckets}
        """By bucket, the time after which its stored starts count."""
        self.limits = {b: gates.buckets[b].limit for b in buckets}
        self.per_key = {f: gates.per_key[f] for f in sorted(functions) if f in gates.per_key}
        self.members = [(f, b) for f in sorted(functions) for b in gates.buckets_of(f)]
        self.locks = locks
        self.prune = dict(prune)
        self.grants = list(grants)
        """Reserves to ask for (PostgreSQL; see :mod:`tickerq.stores.sql.prepaid`)."""
        self.returns = list(returns)
        """Unused starts of spent reserves to give back: (bucket, slot, count)."""
        self.granted: dict[str, int] = {}
        """The reserves granted, by bucket (set by :meth:`report`)."""
        self.wishes = list(wishes)
        """Leases of per-key room to ask for (PostgreSQL), until ``lease_until``."""
        self.lease_until = lease_until
        self.leases: list[str] = []
        """The functions whose lease was granted (set by :meth:`report`)."""

    def admit(
        self,
        picked: list[Any],
        starts: Iterable[tuple[str, datetime, int]],
        running: Mapping[tuple[str, str], int],
    ) -> tuple[list[Any], dict[str, int]]:
        """Of the picked rows (``id``, ``function``, ``concurrency_key``,
        ``priority``, ``execution_time``), the ids the gate lets start, best first,
        and the starts to store by bucket; the gates learn what was held back."""
        gate = Gate(self.gates, self.now, starts, running)
        gate.saturated_keys(self.per_key)  # the pick left their rows out: held back
        picked.sort(key=lambda r: (-r["priority"], r["execution_time"]))
        ids = [r["id"] for r in picked if gate.admit(r["function"], r["concurrency_key"])]
        taken = gate.taken()
        gate.close()
        return ids, taken

    def report(
        self,
        held: bool,
        starts: Iterable[tuple[str, datetime, int]],
        taken: Mapping[str, int],
        granted: Mapping[str, int] | None = None,
        leases: Iterable[str] = (),
    ) -> None:
        """What a claim decided in SQL: whether a limit held a row back, the stored
        starts of each rate limit it filled, the starts it made by bucket, the
        reserves it granted by bucket, the functions whose lease it granted."""
        self.granted = dict(granted or {})
        self.leases = list(leases)
        gate = Gate(self.gates, self.now, starts, {})
        gate.count(taken, held=held)
        gate.close()

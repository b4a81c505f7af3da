"""The engine's side of the SQL store: claims, results, leases and nodes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    union_all,
    update,
)

from tickerq.enums import Priority, Status, TickerKind
from tickerq.limits import Gate, Gates
from tickerq.models import CLUSTER, Node
from tickerq.pausing import unpaused
from tickerq.stores.base import (
    DEFAULT_LOST_RUN,
    LEASE_EXPIRED,
    Job,
    LostRunPolicy,
    Outcome,
    lost_run_end,
)
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import (
    CHANGED_NODES,
    CHANGED_WORK,
    IDLE,
    JOB_COLUMNS,
    RUNNING,
    SqlBase,
    T,
)
from tickerq.stores.sql.gating import GatedClaim
from tickerq.stores.sql.hot_sqlite import SqliteHotPath
from tickerq.stores.sql.prepaid import LEASE_TIME, Grant, LeaseWish, Prepaid
from tickerq.stores.sql.rows import (
    job_from_row,
    node_from_row,
    node_values,
)
from tickerq.stores.sql.schema import (
    KEYED_RUNNING_SQL,
    WAITING_PRIORITIES,
    NullableJSON,
    UTCDateTime,
    attempts,
    cron_tickers,
    key_leases,
    nodes,
    pauses,
    rate_starts,
    tickers,
    waiting,
)

if TYPE_CHECKING:
    from tickerq.stores.sql.hot import HotPath

__all__ = ["EngineWork"]

logger = logging.getLogger(__name__)

S = rate_starts.c

_PRUNE_EVERY = timedelta(seconds=1)
"""How often a node deletes the rate-limit starts no period needs any more (reads
skip them anyway: they only take room until then)."""


class EngineWork(SqlBase):
    """Claiming, starting and finishing jobs; heartbeats, leases and retention."""

    _rate_pruned_at: datetime | None = None

    # -- the engine's work -------------------------------------------------------------

    async def changed_elsewhere(self) -> bool:
        """On SQLite, whether the file's data version moved since the last call
        (PostgreSQL's nodes wake each other with NOTIFY: its polls always look)."""
        if isinstance(self.hot, SqliteHotPath):
            return self.hot.changed()
        return True

    async def next_due_time(
        self,
        after: datetime | None = None,
        *,
        cron_lead: timedelta = timedelta(0),
        paused: Collection[str] = (),
    ) -> datetime | None:
        """Earliest waiting row or cron fire (later than ``after``; a cron is due
        ``cron_lead`` before its fire; rows of ``paused`` functions left out), in one
        statement: one probe of the waiting index per priority, one of the crons'
        index. (A probe walks past the paused functions' rows it meets first.)"""
        probes: list[Any] = []
        for priority in () if CLUSTER in paused else WAITING_PRIORITIES:
            rows = select(func.min(T.execution_time)).where(
                waiting(self.dialect.name), T.priority == int(priority)
            )
            if after is not None:
                rows = rows.where(T.execution_time > after)
            if paused:
                rows = rows.where(T.function.not_in(list(paused)))
            probes.append(rows.scalar_subquery())
        crons = select(func.min(cron_tickers.c.next_fire_at)).where(
            cron_tickers.c.enabled.is_(True)
        )
        if after is not None:
            crons = crons.where(cron_tickers.c.next_fire_at > after + cron_lead)
        probes.append(crons.scalar_subquery())
        async with self.sa_engine.connect() as conn:
            *found, fire = (await conn.execute(select(*probes))).one()
        due = [t for t in found if t is not None]
        if fire is not None:
            due.append(fire - cron_lead)
        return dialects.as_utc(min(due)) if due else None

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
        """Write ``finished``, then claim and start due rows, in one transaction.

        Without concurrency limits or chain parents among the results, that is a
        single statement on PostgreSQL (:mod:`tickerq.stores.sql.hot`) and one
        trip to a thread of its own on SQLite (:mod:`tickerq.stores.sql.hot_sqlite`).
        """
        if self._unwritten:  # left over by an earlier claim whose follow-up failed
            finished, self._unwritten = [*self._unwritten, *finished], []
        self._prepaid.ended(o.job.id for o in finished)
        limited = bool(limits) and any(f in functions for f in limits or ())
        chains = any(_has_chain_work(o) for o in finished)
        gated = False
        if gates is not None:
            gates.blocked_until, gates.blocked = None, False
            gated = gates.applies_to(functions)
        if self.hot is not None and not (limited or capacity or chains):
            notice, mark = self._pace()
            jobs, left_over, sent = await self._hot_claim(
                now,
                node=node,
                lease_until=lease_until,
                slots=slots,
                functions=functions,
                finished=finished,
                notice=notice,
                gates=gates if gated else None,
            )
            self._paced(mark, sent=sent, changed=bool(finished or jobs))
            rest = [o for o in finished if o.job.id in left_over]
            try:
                await self._write_left_over(rest)
            except Exception as exc:  # the jobs are claimed: hand them over all the same
                logger.warning(
                    "could not write %d result(s) of chain parents (%s); "
                    "they go with the next claim",
                    len(rest),
                    exc,
                )
                self._unwritten.extend(rest)
        else:

            def tx(conn: Connection) -> tuple[list[Any], bool, int]:
                if finished:
                    self._write_outcomes(conn, finished)
                rows = self._claim_rows(
                    conn,
                    now,
                    node=node,
                    lease_until=lease_until,
                    slots=slots,
                    capacity=capacity,
                    functions=functions,
                    limits=limits if limited else None,
                    gates=gates if gated else None,
                )
                parents = [r.id for r in rows if r.has_children]
                if parents:
                    self._start_in_progress_children(conn, parents, now)
                sent, mark = self._notify_work(conn) if finished or rows else (False, 0)
                return rows, sent, mark

            rows, sent, mark = await self.write(tx)
            self._paced(mark, sent=sent, changed=bool(finished or rows))
            jobs = [job_from_row(r._mapping) for r in rows]
        if gates is not None:
            self._prepaid.started(gates, [(job.id, job.function) for job in jobs], node)
        self._announce_outcomes(finished)
        for job in jobs:
            self._announce(job.kind.value, job.id, job.function, RUNNING, now)
        return jobs

    async def _hot_claim(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        functions: Collection[str],
        finished: Sequence[Outcome],
        notice: str | None,
        gates: Gates | None,
    ) -> tuple[list[Job], set[UUID], bool]:
        """The hot path's claim: exact under limits (:meth:`_hot_gated`), unless the
        room this node holds ahead covers it (PostgreSQL: see
        :mod:`tickerq.stores.sql.prepaid`); plain without limits."""
        assert self.hot is not None
        plain = None
        if gates is not None and not isinstance(self.hot, SqliteHotPath):
            plain = self._prepaid.plain(gates, functions, slots, now, node)
        if gates is not None and plain is None:
            return await self._hot_gated(
                now,
                node=node,
                lease_until=lease_until,
                slots=slots,
                functions=functions,
                finished=finished,
                notice=notice,
                gates=gates,
            )
        if plain is None:
            return await self.hot.finish_and_claim(
                now,
                node=node,
                lease_until=lease_until,
                slots=slots,
                long_limit=1000,
                functions=functions,
                finished=finished,
                notice=notice,
            )
        hot = cast("HotPath", self.hot)  # PostgreSQL's (its module stays unloaded on SQLite)
        jobs, left_over, sent = await hot.finish_and_claim(
            now,
            node=node,
            lease_until=lease_until,
            slots=slots,
            long_limit=plain.long_limit,
            functions=functions,
            finished=finished,
            notice=notice,
            deadline=plain.deadline,
        )
        self._prepaid.spent(plain, [job.function for job in jobs])
        if len(jobs) < slots and datetime.now(UTC) >= plain.deadline:
            # The room ran out on the way (the statement claimed nothing): claim
            # exactly now, or the engine would wait for work that is there.
            assert gates is not None
            more, _, also = await self._hot_gated(
                now,
                node=node,
                lease_until=lease_until,
                slots=slots - len(jobs),
                functions=functions,
                finished=(),
                notice=notice,
                gates=gates,
            )
            jobs, sent = jobs + more, sent or also
        return jobs, left_over, sent

    async def _hot_gated(
        self,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        functions: Collection[str],
        finished: Sequence[Outcome],
        notice: str | None,
        gates: Gates,
    ) -> tuple[list[Job], set[UUID], bool]:
        """The hot path's claim under rate limits and per-key limits: the same
        advisory locks and rules as the general path (see
        :mod:`tickerq.stores.sql.gating`), in fewer steps."""
        assert self.hot is not None
        keyed = sorted(f for f in functions if f in gates.per_key)
        buckets = gates.buckets_for(functions)
        grants: list[Grant] = []
        returns: list[tuple[str, datetime, int]] = []
        wishes: list[LeaseWish] = []
        if not isinstance(self.hot, SqliteHotPath):  # room ahead: PostgreSQL's claims
            grants, returns = self._prepaid.requests(gates, buckets, now, slots)
            wishes = self._prepaid.lease_wishes(gates, functions, now, slots, node)
        leased_until = now + LEASE_TIME
        gated = GatedClaim(
            gates,
            now,
            functions,
            locks=_gate_locks(buckets, keyed),
            prune=self._prune_cutoffs(gates, now),
            grants=grants,
            returns=returns,
            wishes=wishes,
            lease_until=leased_until,
        )
        try:
            found = await self.hot.finish_and_claim_gated(
                now,
                node=node,
                lease_until=lease_until,
                slots=slots,
                long_limit=1000,
                functions=functions,
                finished=finished,
                notice=notice,
                gated=gated,
            )
        except BaseException:
            self._prepaid.clear()
            raise
        self._prepaid.granted(grants, gated.granted, now)
        self._prepaid.leased(wishes, gated.leases, node, now, leased_until)
        return found

    @property
    def _prepaid(self) -> Prepaid:
        """This node's room held ahead (see :mod:`tickerq.stores.sql.prepaid`)."""
        prepaid = self.__dict__.get("_prepaid_room")
        if prepaid is None:
            prepaid = self.__dict__["_prepaid_room"] = Prepaid()
        return prepaid

    def _prune_cutoffs(self, gates: Gates, now: datetime) -> dict[str, datetime]:
        """By bucket, the time up to which its stored starts may go (no window needs
        them): every bucket at most once per :data:`_PRUNE_EVERY`, else none."""
        pruned = self._rate_pruned_at
        if not gates.buckets or (pruned is not None and now - pruned < _PRUNE_EVERY):
            return {}
        self._rate_pruned_at = now
        return {b: now - rate.per for b, rate in gates.buckets.items()}

    def _claim_rows(
        self,
        conn: Connection,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        slots: int,
        capacity: Mapping[str, int],
        functions: Collection[str],
        limits: Mapping[str, int] | None,
        gates: Gates | None = None,
    ) -> list[Any]:
        claimed: list[Any] = []
        # The pauses as stored when the claim runs (the engine's view may be a
        # moment old): nothing paused before this transaction starts here.
        functions = unpaused(functions, set(conn.execute(select(pauses.c.function)).scalars()))
        left = dict(capacity)
        if limits:
            left = self._cluster_capacity(conn, limits, functions)
        gate = None if gates is None else self._open_gate(conn, now, gates, functions, node)
        # Best priority first (LONG_RUNNING, which runs outside the slots, leads).
        # A round that took LONG_RUNNING jobs, or more of a limited function than
        # it may (those go back), leaves slots free: another round fills them.
        free = slots
        long_only = slots <= 0
        for _ in range(4):
            limit = 1000 if long_only else free
            runnable = [
                f for f in functions if left.get(f, 1) > 0 and (gate is None or gate.may_start(f))
            ]
            if limit <= 0 or not runnable:
                break
            rows = self._lock_due(
                conn,
                now,
                node=node,
                lease_until=lease_until,
                runnable=runnable,
                long_only=long_only,
                limit=limit,
                skip_keys=None if gate is None else gate.saturated_keys(runnable),
            )
            kept, extra = _within_capacity(rows, left, gate)
            if extra:
                conn.execute(
                    update(tickers).where(T.id.in_([r.id for r in extra])).values(**_UNCLAIMED)
                )
            claimed.extend(kept)
            long_kept = sum(1 for r in kept if r.priority == int(Priority.LONG_RUNNING))
            free -= len(kept) - long_kept
            if long_only or len(rows) < limit or not (extra or long_kept):
                break
        if gate is not None:
            self._close_gate(conn, gate)
        claimed.sort(key=lambda r: (-r.priority, r.execution_time))
        return claimed

    def _open_gate(
        self, conn: Connection, now: datetime, gates: Gates, functions: Collection[str], node: str
    ) -> Gate:
        """Read what the limits of ``functions`` count, under their locks: the starts
        within each rate limit's period and the running rows of each key.

        On PostgreSQL the claim first takes a transaction lock per rate limit and per
        function with a per-key limit (in one order on every node), so two nodes
        cannot both count the same room; SQLite's claims run one at a time anyway.
        """
        buckets = gates.buckets_for(functions)
        keyed = sorted(f for f in functions if f in gates.per_key)
        for lock in _gate_locks(buckets, keyed):
            self.dialect.lock(conn, lock)
        starts: list[tuple[str, datetime, int]] = []
        if buckets:
            oldest = now - max(gates.buckets[b].per for b in buckets)
            starts = [
                (r[0], r[1], int(r[2]))
                for r in conn.execute(
                    select(S.bucket, S.started_at, S.count).where(
                        S.bucket.in_(buckets), S.started_at > oldest
                    )
                )
            ]
        running: dict[tuple[str, str], int] = {}
        spare: dict[str, int] = {}
        if keyed:
            # Other nodes' leases (PostgreSQL): the room they have not used on a
            # key counts as running there (see tickerq.stores.sql.prepaid).
            leases: dict[tuple[str, str], int] = {}
            if self.dialect.name == "postgresql":
                L = key_leases.c
                found = conn.execute(
                    select(L.function, L.node, L.room).where(
                        L.function.in_(keyed), L.node != node, L.until > now
                    )
                )
                leases = {(r[0], r[1]): int(r[2]) for r in found}
            for (function, _), room in leases.items():
                spare[function] = spare.get(function, 0) + room
            rows = conn.execute(
                select(T.function, T.concurrency_key, T.lock_holder, func.count())
                .where(text(KEYED_RUNNING_SQL), T.function.in_(keyed))
                .group_by(T.function, T.concurrency_key, T.lock_holder)
            )
            for function, key, holder, count in rows:
                unused_there = min(int(count), leases.get((function, holder), 0))
                running[(function, key)] = (
                    running.get((function, key), spare.get(function, 0)) + count - unused_there
                )
        return Gate(gates, now, starts, running, spare)

    async def rate_usage(self, periods: Mapping[str, timedelta], now: datetime) -> dict[str, int]:
        """Starts counted by each rate limit within its period (one read)."""
        out = dict.fromkeys(periods, 0)
        if not periods:
            return out
        oldest = now - max(periods.values())
        async with self.sa_engine.connect() as conn:
            rows = await conn.execute(
                select(S.bucket, S.started_at, S.count).where(
                    S.bucket.in_(list(periods)), S.started_at > oldest
                )
            )
            for bucket, at, count in rows:
                if at > now - periods[bucket]:
                    out[bucket] += int(count)
        return out

    def _close_gate(self, conn: Connection, gate: Gate) -> None:
        """Store the starts the claim counted; drop those no limit needs any more."""
        # One row per slot (the claim holds the bucket's lock: no other writer).
        for bucket, n in gate.taken().items():
            at = gate.gates.stored_at(bucket, gate.now)
            bumped = conn.execute(
                update(rate_starts)
                .where(S.bucket == bucket, S.started_at == at)
                .values(count=S.count + n)
            )
            if not bumped.rowcount:
                conn.execute(insert(rate_starts).values(bucket=bucket, started_at=at, count=n))
        # Rows past their limit's period: one delete per period.
        by_cutoff: dict[datetime, list[str]] = {}
        for b, cutoff in self._prune_cutoffs(gate.gates, gate.now).items():
            by_cutoff.setdefault(cutoff, []).append(b)
        for cutoff, names in by_cutoff.items():
            conn.execute(delete(rate_starts).where(S.bucket.in_(names), S.started_at <= cutoff))
        gate.close()

    def _cluster_capacity(
        self, conn: Connection, limits: Mapping[str, int], functions: Collection[str]
    ) -> dict[str, int]:
        """Room left for each limited function across every node.

        On PostgreSQL the claim first takes a transaction lock per limited function
        (in name order), so two nodes cannot both count the same free room; SQLite's
        claims run one at a time anyway.
        """
        limited = sorted(f for f in limits if f in functions)
        if not limited:
            return {}
        for name in limited:
            self.dialect.lock(conn, _lock_key(name))
        rows = conn.execute(
            select(T.function, func.count())
            .where(T.function.in_(limited), T.status == RUNNING)
            .group_by(T.function)
        )
        busy = {r[0]: int(r[1]) for r in rows}
        return {name: limits[name] - busy.get(name, 0) for name in limited}

    def _lock_due(
        self,
        conn: Connection,
        now: datetime,
        *,
        node: str,
        lease_until: datetime,
        runnable: list[str],
        long_only: bool,
        limit: int,
        skip_keys: Mapping[str, list[str]] | None = None,
    ) -> list[Any]:
        # One bounded range of the waiting index per priority, best first: the
        # claim reads the rows it takes, however many rows ended or wait for later.
        priorities = [Priority.LONG_RUNNING] if long_only else WAITING_PRIORITIES
        # Keys at their limit are left where they are: a backlog of one busy key
        # never stands in front of the others.
        skipped = [
            or_(T.function != f, T.concurrency_key.is_(None), T.concurrency_key.not_in(keys))
            for f, keys in (skip_keys or {}).items()
        ]
        ranges = [
            select(
                self.dialect.skip_locked(
                    select(T.id)
                    .where(
                        waiting(self.dialect.name),
                        T.priority == int(priority),
                        T.execution_time <= now,
                        T.function.in_(runnable),
                        *skipped,
                    )
                    .order_by(T.execution_time)
                    .limit(limit)
                )
                .subquery(f"p{int(priority)}")
                .c.id
            )
            for priority in priorities
        ]
        pick = ranges[0]
        if len(ranges) > 1:
            pick = select(union_all(*ranges).subquery("picked").c.id).limit(limit)
        result = conn.execute(
            update(tickers)
            .where(T.id.in_(pick.scalar_subquery()))
            .values(
                status=RUNNING,
                lock_holder=node,
                locked_at=now,
                lease_until=lease_until,
                executed_at=now,
                updated_at=now,
                claims=T.claims + 1,
            )
            .returning(*JOB_COLUMNS, T.concurrency_key)
        )
        return list(result)

    async def complete(self, outcomes: Sequence[Outcome]) -> None:
        """Write attempts' ends; retries go back to IDLE; finals resolve chains.

        One statement per table for the whole batch; only a row whose lock this
        node still holds is changed (and only then is its attempt recorded).
        """
        if not outcomes:
            return
        one_node = len({o.node for o in outcomes}) == 1
        if self.hot is not None and one_node and not any(_has_chain_work(o) for o in outcomes):
            notice, mark = self._pace()
            _, left_over, sent = await self.hot.finish_and_claim(
                outcomes[0].finished_at,
                node=outcomes[0].node,
                lease_until=outcomes[0].finished_at,
                slots=0,
                long_limit=0,
                functions=(),
                finished=outcomes,
                notice=notice,
            )
            self._paced(mark, sent=sent, changed=True)
            await self._write_left_over([o for o in outcomes if o.job.id in left_over])
        else:
            await self._write_left_over(outcomes)
        self._prepaid.ended(o.job.id for o in outcomes)
        self._announce_outcomes(outcomes)

    async def _write_left_over(self, rest: Sequence[Outcome]) -> None:
        """Write through the general path the final results the hot path left over
        (rows that got chain children after their claim, or are no longer ours),
        or any results (with the paced notice)."""
        if not rest:
            return

        def tx(conn: Connection) -> tuple[bool, int]:
            self._write_outcomes(conn, rest)
            return self._notify_work(conn)

        sent, mark = await self.write(tx)
        self._paced(mark, sent=sent, changed=True)

    def _write_outcomes(self, conn: Connection, outcomes: Sequence[Outcome]) -> None:
        # In id order: rows are locked in one order everywhere (no deadlocks).
        params = [_outcome_params(o) for o in sorted(outcomes, key=lambda o: o.job.id)]
        # The attempt first: it is recorded only while the row is still ours.
        conn.execute(_INSERT_ATTEMPT, params)
        conn.execute(_FINISH_TICKER, params)
        # Chains: read from the rows, not from the claim (a child may have been
        # added while the parent ran). Adding a child marks its parent's row in
        # its own transaction, so it either committed before this statement
        # (seen here) or waited for this transaction and saw the parent ended.
        ended = [o.job.id for o in outcomes if o.status.is_final and o.job.kind is TickerKind.TIME]
        if ended:
            rows = conn.execute(
                select(T.id, T.status, T.finished_at).where(
                    T.id.in_(ended), T.lock_holder.is_(None), T.has_children.is_(True)
                )
            )
            for row in list(rows):
                if Status(row.status).is_final:
                    self._resolve_children(conn, row.id, Status(row.status), row.finished_at)

    def _announce_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            self._announce(
                o.job.kind.value, o.job.id, o.job.function, o.status.value, o.finished_at
            )

    async def release(self, jobs: Sequence[Job]) -> None:
        """Give back claims that did not run."""
        if not jobs:
            return

        def tx(conn: Connection) -> tuple[bool, int]:
            conn.execute(
                update(tickers)
                .where(T.id.in_([j.id for j in jobs]), T.status == RUNNING)
                .values(**_UNCLAIMED)
            )
            return self._notify_work(conn)

        sent, mark = await self.write(tx)
        self._paced(mark, sent=sent, changed=True)
        self._prepaid.ended(j.id for j in jobs)

    # -- nodes and leases -------------------------------------------------------------

    async def heartbeat(
        self, node: Node, running: Sequence[UUID], lease_until: datetime
    ) -> list[UUID]:
        """Upsert the node row and extend the leases of the jobs it runs now; return
        the ids of ``running`` it no longer holds.

        Only ``running`` rows are renewed (rows held under this id by a dead
        predecessor must lapse), locked in id order, skipping rows a result write
        holds, so a heartbeat and the node's own writes never deadlock. Which rows
        are still held is read without locks (a row being finished reads as held).
        """

        def tx(conn: Connection) -> set[UUID]:
            conn.execute(self.dialect.upsert(nodes, node_values(node), key="id"))
            self._notify(conn, CHANGED_NODES)
            if not running:
                return set()
            held = set(
                (
                    conn.execute(select(T.id).where(T.id.in_(running), T.lock_holder == node.id))
                ).scalars()
            )
            if held:
                mine = self.dialect.skip_locked(
                    select(T.id)
                    .where(T.id.in_(sorted(held)), T.lock_holder == node.id)
                    .order_by(T.id)
                )
                conn.execute(
                    update(tickers)
                    .where(T.id.in_(mine.scalar_subquery()))
                    .values(lease_until=lease_until)
                )
            return held

        held = await self.write(tx)
        # Jobs of this node that no longer run here (ended unreported, taken over):
        # forget them, so they do not count against its room ahead for ever.
        self._prepaid.running_now(node.id, running)
        return [i for i in running if i not in held]

    async def reclaim_expired(
        self,
        now: datetime,
        node: str | None = None,
        *,
        policies: Mapping[str, LostRunPolicy] | None = None,
        default: LostRunPolicy = DEFAULT_LOST_RUN,
    ) -> int:
        """Rows whose lease ran out (or, with ``node``, every row held under that
        node id) go back to IDLE, or end as their policy says; their open attempt
        is marked lost."""

        def tx(conn: Connection) -> tuple[list[Any], dict[UUID, tuple[Status, str]]]:
            lapsed = T.lease_until < now if node is None else T.lock_holder == node
            rows = list(
                conn.execute(
                    self.dialect.skip_locked(
                        select(
                            T.id, T.kind, T.function, T.status, T.lock_holder,
                            T.executed_at, T.retry_count, T.stale_restarts,
                        )
                        .where(T.status == RUNNING, lapsed)
                        .order_by(T.id)
                        .limit(1000)
                    )
                )
            )  # fmt: skip
            if not rows:
                return [], {}
            self._notify(conn, CHANGED_WORK)  # rare: not paced
            lost = [r for r in rows if r.status == RUNNING and r.executed_at is not None]
            if lost:
                conn.execute(insert(attempts), [_lost_attempt(r, now) for r in lost])
            ends = {
                r.id: end
                for r in rows
                if (
                    end := lost_run_end(
                        (policies or {}).get(r.function, default), r.stale_restarts + 1
                    )
                )
                is not None
            }
            unlock: dict[str, Any] = {
                "lock_holder": None,
                "locked_at": None,
                "lease_until": None,
                "cancel_requested": False,
                "updated_at": now,
                "stale_restarts": T.stale_restarts + 1,
                "result": None,  # the lost run returned nothing
            }
            again = [r.id for r in rows if r.id not in ends]
            if again:
                conn.execute(
                    update(tickers)
                    .where(T.id.in_(again))
                    .values(status=IDLE, execution_time=now, **unlock)
                )
            for row_id, (status, message) in ends.items():
                conn.execute(
                    update(tickers)
                    .where(T.id == row_id)
                    .values(
                        status=status.value,
                        finished_at=now,
                        error_type="LeaseExpired",
                        error_message=message,
                        **unlock,
                    )
                )
                self._resolve_children(conn, row_id, status, now)
            return rows, ends

        rows, ends = await self.write(tx)
        for r in rows:
            end = ends.get(r.id)
            if end is None:
                logger.warning("reclaimed %s %s: its node's lease ran out", r.function, r.id)
            else:
                logger.error("%s %s ended %s: %s", r.function, r.id, end[0].name, end[1])
            self._announce(r.kind, r.id, r.function, IDLE if end is None else end[0].value, now)
        return len(rows)

    async def nodes(self) -> list[Node]:
        """Every node row."""
        async with self.sa_engine.connect() as conn:
            return [
                node_from_row(r) for r in await conn.execute(select(nodes).order_by(nodes.c.id))
            ]

    async def remove_node(self, node_id: str) -> None:
        """Delete a node row (rows it still runs are reclaimed when their leases lapse)."""

        def tx(conn: Connection) -> None:
            # its room held ahead under per-key limits goes with it
            conn.execute(delete(key_leases).where(key_leases.c.node == node_id))
            if conn.execute(delete(nodes).where(nodes.c.id == node_id)).rowcount:
                self._notify(conn, CHANGED_NODES)

        await self.write(tx)

    async def purge(self, finished_before: datetime, limit: int) -> int:
        """Delete a batch of old ended rows, leaves of chains first.

        A row with children stays until they are gone (ended and purged in their
        own turn): deleting it would take a descendant still waiting with it
        (ON DELETE CASCADE), however deep the chain is.
        """
        final = [s.value for s in Status if s.is_final]
        child = tickers.alias("child")
        has_child = select(child.c.id).where(child.c.parent_id == T.id).exists()

        def tx(conn: Connection) -> tuple[int, bool, int]:
            ids = list(
                (
                    conn.execute(
                        select(T.id)
                        .where(T.status.in_(final), T.finished_at < finished_before, ~has_child)
                        .order_by(T.finished_at)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not ids:
                return 0, False, 0
            conn.execute(delete(attempts).where(attempts.c.ticker_id.in_(ids)))
            result = conn.execute(delete(tickers).where(T.id.in_(ids)))
            return (max(int(result.rowcount), len(ids)), *self._notify_work(conn))

        count, sent, mark = await self.write(tx)
        self._paced(mark, sent=sent, changed=count > 0)
        return count

    async def cancel_requested(self, ids: Sequence[UUID]) -> list[UUID]:
        """Which running ids were flagged for cancellation."""
        if not ids:
            return []
        async with self.sa_engine.connect() as conn:
            rows = await conn.execute(
                select(T.id).where(T.id.in_(ids), T.cancel_requested.is_(True))
            )
            return list(rows.scalars())


_UNCLAIMED: dict[str, Any] = {
    "status": IDLE,
    "lock_holder": None,
    "locked_at": None,
    "lease_until": None,
    "executed_at": None,
}
"""A claimed row given back without having run."""

_INSERT_ATTEMPT = insert(attempts).from_select(
    [
        "ticker_id", "kind", "number", "node", "status", "started_at", "finished_at",
        "elapsed_ms", "error_type", "error_message", "traceback", "result",
    ],
    select(
        T.id,
        T.kind,
        bindparam("b_number", type_=Integer),
        bindparam("b_node", type_=String),
        bindparam("b_attempt_status", type_=String),
        bindparam("b_started_at", type_=UTCDateTime),
        bindparam("b_finished_at", type_=UTCDateTime),
        bindparam("b_elapsed", type_=Float),
        bindparam("b_error_type", type_=String),
        bindparam("b_error_message", type_=Text),
        bindparam("b_traceback", type_=Text),
        bindparam("b_result", type_=NullableJSON),
    ).where(
        T.id == bindparam("b_id"),
        T.lock_holder == bindparam("b_node"),
        T.claims == bindparam("b_claim"),
    ),
)  # fmt: skip


def _lost_attempt(r: Any, now: datetime) -> dict[str, Any]:
    """The attempt row of a run whose node's lease ran out."""
    return {
        "ticker_id": r.id,
        "kind": r.kind,
        "number": r.retry_count,
        "node": r.lock_holder or "?",
        "status": Status.FAILED.value,
        "started_at": r.executed_at,
        "finished_at": now,
        "error_type": "LeaseExpired",
        "error_message": LEASE_EXPIRED,
    }


def _has_chain_work(o: Outcome) -> bool:
    """A final time ticker that may have waiting children to resolve."""
    return o.job.has_children and o.status.is_final and o.job.kind is TickerKind.TIME


_FINISH_TICKER = (
    update(tickers)
    .where(
        T.id == bindparam("b_id"),
        T.lock_holder == bindparam("b_node"),
        T.claims == bindparam("b_claim", type_=Integer),
    )
    .values(
        status=bindparam("b_status"),
        execution_time=func.coalesce(bindparam("b_retry_at", type_=UTCDateTime), T.execution_time),
        retry_count=T.retry_count + bindparam("b_increment", type_=Integer),
        finished_at=bindparam("b_final_at", type_=UTCDateTime),
        skipped_reason=bindparam("b_skipped_reason"),
        elapsed_ms=bindparam("b_elapsed"),
        error_type=bindparam("b_error_type"),
        error_message=bindparam("b_error_message"),
        result=bindparam("b_result", type_=NullableJSON),
        lock_holder=None,
        locked_at=None,
        lease_until=None,
        cancel_requested=False,
        updated_at=bindparam("b_finished_at"),
    )
)


def _outcome_params(o: Outcome) -> dict[str, Any]:
    return {
        "b_id": o.job.id,
        "b_number": o.job.retry_count,
        "b_node": o.node,
        "b_claim": o.claim,
        "b_attempt_status": o.attempt_status.value,
        "b_status": o.status.value,
        "b_started_at": o.started_at,
        "b_finished_at": o.finished_at,
        "b_final_at": o.final_at,
        "b_retry_at": o.next_run_at,
        "b_increment": o.retry_increment,
        "b_skipped_reason": o.skipped_reason,
        "b_elapsed": o.elapsed_ms,
        "b_error_type": o.error_type,
        "b_error_message": o.error_message,
        "b_traceback": o.traceback,
        "b_result": o.result,
    }


def _gate_locks(buckets: Collection[str], keyed: Collection[str]) -> list[int]:
    """The advisory locks a gated claim takes, in the one order of every node: one
    per rate limit (bucket) and one per function with a per-key limit."""
    return sorted(
        [_lock_key("\x00rate:" + b) for b in buckets] + [_lock_key("\x00key:" + f) for f in keyed]
    )


def _lock_key(function: str) -> int:
    """A stable 63-bit advisory lock key for a function's concurrency limit."""
    digest = hashlib.sha256(f"tickerq-limit:{function}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x3FFF_FFFF_FFFF_FFFF


def _within_capacity(
    rows: list[Any], left: dict[str, int], gate: Gate | None = None
) -> tuple[list[Any], list[Any]]:
    """Split rows (best first) into those within each function's remaining capacity
    (and let through by ``gate``) and the extra ones; ``left`` is updated."""
    rows = sorted(rows, key=lambda r: (-r.priority, r.execution_time))
    kept, extra = [], []
    for row in rows:
        room = left.get(row.function)
        if (room is not None and room <= 0) or (
            gate is not None and not gate.admit(row.function, row.concurrency_key)
        ):
            extra.append(row)
            continue
        if room is not None:
            left[row.function] = room - 1
        kept.append(row)
    return kept, extra

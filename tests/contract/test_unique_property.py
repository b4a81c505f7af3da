"""Stateful property test of unique keys: random steps on every store at once.

A hypothesis ``RuleBasedStateMachine`` drives one app per store (memory, SQLite,
PostgreSQL when reachable), each with its own manual clock kept at the same time,
through the same random steps: enqueue with or without a key (two functions, a
few keys, every ``on_conflict``, now or later), claim what is due, end running
tickers (done, failed, back to wait for a retry), cancel, retry and re-key
tickers, and let time pass. The stores are driven directly (claims and results
as the engine makes them), so which row runs when is exactly the same on each.

After every step, on every store:

- at most one ticker per (function, key) holds the key (waits or runs);
- at most one ticker runs per (function, key it was enqueued with): a ticker
  chained behind a running one waits for it (the machine leaves chained
  tickers alone: cancelling one, re-keying it or running it now is a
  deliberate override, see docs/flow-control.md);
- every store returned the same outcome (ADDED, KEPT, REPLACED, CHAINED, the
  same error, the same bulk report with the same holder) and shows the same
  tickers (status, key, request, chain parent, time), ids mapped to the order
  they were made in.

Deterministic for CI (``derandomize``); ``TICKERQ_UNIQUE_RANDOM=1`` and
``TICKERQ_UNIQUE_EXAMPLES=N`` run new and more examples.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from contract.conftest import (
    QUIET,
    _admin_connection,
    _create_database,
    _drop_database,
    _server_dsn,
)
from support import START
from tickerq import (
    BulkResult,
    DuplicateJobError,
    EnqueueOutcome,
    Status,
    TickerContext,
    TickerQ,
    TickerQError,
    TimeTicker,
)
from tickerq.stores.base import Job, Outcome
from tickerq.testing import ManualClock
from tickerq.unique import HOLDING

EXAMPLES = int(os.environ.get("TICKERQ_UNIQUE_EXAMPLES", "6"))
STEPS = int(os.environ.get("TICKERQ_UNIQUE_STEPS", "30"))
RANDOM = os.environ.get("TICKERQ_UNIQUE_RANDOM") == "1"

FUNCTIONS = ("f", "g")
KEYS = ("a", "b", "c")
NODE = "node-a"


async def _noop(ctx: TickerContext) -> None:
    return None


@dataclass(eq=False)
class Side:
    """One app on one store, and the ids it gave to each logical ticker."""

    kind: str
    app: TickerQ
    clock: ManualClock
    ids: dict[int, UUID] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    """The claimed jobs of the running tickers, by logical key."""

    def key_of(self) -> dict[UUID, int]:
        return {v: k for k, v in self.ids.items()}


@dataclass
class Env:
    runner: asyncio.Runner
    tmp: Path
    admin: Any
    template: str | None


class UniqueMachine(RuleBasedStateMachine):
    """Same steps on every store; one holder per key and the same state everywhere."""

    def __init__(self, env: Env) -> None:
        super().__init__()
        self.env = env
        self.sides: list[Side] = []
        self.database: str | None = None
        self.count = 0
        self.enqueued_key: dict[int, tuple[str, str | None]] = {}
        """Each logical ticker's function and the key it was enqueued with."""
        self.trace: list[str] = []
        self.run(self._open())

    # -- plumbing ---------------------------------------------------------------------

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.env.runner.run(_as_coro(coro))

    async def _open(self) -> None:
        name = uuid.uuid4().hex[:12]
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{self.env.tmp / f'u-{name}.db'}"}
        if self.env.template is not None:
            self.database = f"tickerq_uq_{name}"
            await _create_database(self.env.admin, self.database, self.env.template)
            urls["postgresql"] = _server_dsn(self.database)
        for kind, url in urls.items():
            clock = ManualClock(START)
            app = TickerQ(url, clock=clock, node_id=NODE, options=QUIET)
            for function in FUNCTIONS:
                app.function(function)(_noop)
            await app.open()
            self.sides.append(Side(kind, app, clock))

    def teardown(self) -> None:
        async def close() -> None:
            for side in self.sides:
                await side.app.stop()
            if self.database is not None:
                await _drop_database(self.env.admin, self.database)

        self.run(close())

    def fail(self, message: str) -> None:
        steps = "\n".join(f"  {line}" for line in self.trace[-30:])
        raise AssertionError(f"{message}\n-- steps so far:\n{steps}")

    def each(self, label: str, call: Callable[[Side], Awaitable[Any]]) -> list[Any] | str:
        """``call`` on every store: all return (the values), or all raise one TickerQError
        (its type name)."""
        self.trace.append(label)

        async def go() -> list[tuple[bool, Any]]:
            out: list[tuple[bool, Any]] = []
            for side in self.sides:
                try:
                    out.append((True, await asyncio.wait_for(_as_coro(call(side)), 10)))
                except TickerQError as exc:
                    out.append((False, exc))
            return out

        got = self.run(go())
        if all(ok for ok, _ in got):
            return [value for _, value in got]
        kinds = {type(v).__name__ for ok, v in got if not ok}
        if any(ok for ok, _ in got) or len(kinds) != 1:
            shown = "; ".join(f"{s.kind}: {v!r}" for s, (_, v) in zip(self.sides, got, strict=True))
            self.fail(f"{label}: the stores disagree: {shown}")
        self.trace.append(f"  -> {kinds.pop()}")
        return type(got[0][1]).__name__

    def logical(self, side: Side, ticker_id: UUID | None) -> int | None:
        return None if ticker_id is None else side.key_of().get(ticker_id, -1)

    # -- steps ------------------------------------------------------------------------

    @rule(
        function=st.sampled_from(FUNCTIONS),
        key=st.sampled_from((None, *KEYS)),
        on_conflict=st.sampled_from(("keep", "replace", "error")),
        delay=st.sampled_from((0, 0, 30, 90)),
    )
    def enqueue(self, function: str, key: str | None, on_conflict: str, delay: int) -> None:
        request = self.count + 1000  # tells the requests of the calls apart
        label = f"enqueue({function}, key={key!r}, {on_conflict}, after={delay}) #{request}"
        got = self.each(
            label,
            lambda s: s.app.time_tickers.add(
                function,
                request=request,
                after=delay,
                unique_key=key,
                on_conflict=on_conflict,  # type: ignore[arg-type]
            ),
        )
        if isinstance(got, str):
            if got != DuplicateJobError.__name__ or on_conflict != "error":
                self.fail(f"{label} raised {got}")
            return
        outcomes = {t.enqueued for t in got}
        if len(outcomes) != 1:
            self.fail(f"{label}: outcomes differ: {[t.enqueued for t in got]}")
        (outcome,) = outcomes
        self.trace.append(f"  -> {outcome}")
        if outcome in (EnqueueOutcome.ADDED, EnqueueOutcome.CHAINED):
            self.count += 1
            for side, ticker in zip(self.sides, got, strict=True):
                side.ids[self.count] = ticker.id
            self.enqueued_key[self.count] = (function, key)
        else:
            which = {self.logical(s, t.id) for s, t in zip(self.sides, got, strict=True)}
            if len(which) != 1 or -1 in which:
                self.fail(f"{label}: {outcome} names different tickers: {which}")

    @rule()
    def claim(self) -> None:
        # Everything due: which of equally due rows a smaller claim takes is the
        # store's choice (not part of the contract).
        async def claim(side: Side) -> list[int]:
            now = side.clock.now()
            jobs = await side.app.store.claim(
                now,
                node=NODE,
                lease_until=now + timedelta(hours=1),
                slots=100,
                capacity={},
                functions=FUNCTIONS,
            )
            keys = side.key_of()
            for job in jobs:
                side.jobs[keys[job.id]] = job
            return sorted(keys[j.id] for j in jobs)

        got = self.each("claim()", claim)
        assert not isinstance(got, str)
        if any(g != got[0] for g in got):
            self.fail(f"claim() took different tickers: {got}")
        self.trace.append(f"  -> {got[0]}")

    @precondition(lambda self: bool(self.sides[0].jobs))
    @rule(
        data=st.data(),
        status=st.sampled_from((Status.DONE, Status.FAILED, Status.IDLE, Status.SKIPPED)),
    )
    def finish(self, data: st.DataObject, status: Status) -> None:
        which = data.draw(st.sampled_from(sorted(self.sides[0].jobs)))

        async def finish(side: Side) -> None:
            job = side.jobs.pop(which)
            now = side.clock.now()
            await side.app.store.complete(
                [
                    Outcome(
                        job=job,
                        status=status,
                        node=NODE,
                        started_at=now,
                        finished_at=now,
                        retry_at=now + timedelta(seconds=30) if status is Status.IDLE else None,
                    )
                ]
            )

        self.each(f"finish(t{which}, {status.name})", finish)

    @precondition(lambda self: self.count > 0)
    @rule(data=st.data(), action=st.sampled_from(("cancel", "retry", "unkey", "rekey")))
    def operate(self, data: st.DataObject, action: str) -> None:
        which = data.draw(st.integers(1, self.count))
        key = data.draw(st.sampled_from(KEYS))
        if self._waits_for_a_parent(which):
            # A chained ticker holds its key for the run before it: "run now",
            # cancelling it or taking its key away lets the next enqueue of that
            # key start beside that run (documented), so the machine does not.
            return

        def call(side: Side) -> Awaitable[BulkResult]:
            ops, ids = side.app.time_tickers, [side.ids[which]]
            if action == "cancel":
                return ops.cancel_many(ids)
            if action == "retry":
                return ops.retry_many(ids)
            return ops.update_many(ids, unique_key=None if action == "unkey" else key)

        label = f"{action}(t{which}{', ' + repr(key) if action == 'rekey' else ''})"
        got = self.each(label, call)
        assert not isinstance(got, str)
        views = [
            [(i.outcome, i.status, self.logical(s, i.held_by)) for i in r]
            for s, r in zip(self.sides, got, strict=True)
        ]
        if any(v != views[0] for v in views):
            self.fail(f"{label}: results differ: {views}")
        self.trace.append(f"  -> {views[0]}")
        if action == "rekey" and views[0][0][0].value == "done":
            self.enqueued_key[which] = (self.enqueued_key[which][0], key)
        elif action == "unkey" and views[0][0][0].value == "done":
            self.enqueued_key[which] = (self.enqueued_key[which][0], None)

    def _waits_for_a_parent(self, which: int) -> bool:
        side = self.sides[0]
        ticker = self.run(side.app.store.get_time_ticker(side.ids[which]))
        return ticker is not None and ticker.parent_id is not None and not ticker.status.is_final

    @rule(seconds=st.sampled_from((10, 40, 100)))
    def tick(self, seconds: int) -> None:
        self.trace.append(f"tick({seconds})")
        for side in self.sides:
            side.clock.tick(seconds)

    # -- checks -----------------------------------------------------------------------

    @invariant()
    def one_holder_per_key_and_the_same_everywhere(self) -> None:
        views = []
        for side in self.sides:
            tickers: list[TimeTicker] = self.run(side.app.time_tickers.query(limit=10_000))
            holders = Counter(
                (t.function, t.unique_key)
                for t in tickers
                if t.unique_key is not None and t.status in HOLDING
            )
            doubled = [pair for pair, n in holders.items() if n > 1]
            if doubled:
                self.fail(f"{side.kind}: two holders of {doubled}")
            keys = side.key_of()
            running = Counter(
                self.enqueued_key[keys[t.id]]
                for t in tickers
                if t.status is Status.IN_PROGRESS and self.enqueued_key[keys[t.id]][1]
            )
            overlapping = [pair for pair, n in running.items() if n > 1]
            if overlapping:
                self.fail(f"{side.kind}: two runs at once of {overlapping}")
            views.append(
                sorted(
                    (
                        keys.get(t.id, -1),
                        t.function,
                        t.status.name,
                        t.unique_key,
                        t.request,
                        self.logical(side, t.parent_id),
                        _instant(t.execution_time),
                    )
                    for t in tickers
                )
            )
        for side, view in zip(self.sides[1:], views[1:], strict=True):
            if view != views[0]:
                diff = sorted(set(view) ^ set(views[0]))
                self.fail(f"{side.kind} differs from {self.sides[0].kind}: {diff}")


def _instant(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def _as_coro(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    with asyncio.Runner() as runner:
        try:
            admin = runner.run(_admin_connection())
        except pytest.skip.Exception:
            admin = None
        template = request.getfixturevalue("pg_template") if admin is not None else None
        try:
            yield Env(runner, tmp_path, admin, template)
        finally:
            if admin is not None:
                runner.run(admin.close())


@pytest.mark.timeout(120)
def test_one_holder_per_key_on_every_store(env: Env) -> None:
    """The stateful property test (see the module docstring)."""
    run_state_machine_as_test(
        lambda: UniqueMachine(env),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=not RANDOM,
            database=None,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            phases=[Phase.explicit, Phase.generate],
        ),
    )

"""Store contract: cron tickers, their occurrences and their cursor."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest

from support import START
from tickerq import CronTicker, MisfirePolicy, Priority, Status, TickerNotFoundError, TickerQ
from tickerq.enums import TickerKind

if TYPE_CHECKING:
    from contract.conftest import Ops

MINUTE = timedelta(minutes=1)


# -- add / get / update / enable / disable / delete -------------------------------------


async def test_cron_ticker_round_trip(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add(
        "alpha",
        "*/5 * * * *",
        timezone="Europe/Berlin",
        request={"k": [1, 2]},
        retries=2,
        retry_intervals=[5, 10],
        misfire=MisfirePolicy.RUN_ALL,
        description="every five minutes",
    )
    assert cron.next_fire_at == START + 5 * MINUTE
    got = await app.cron_tickers.get(cron.id)
    assert got == cron
    assert got.retry_intervals == (5.0, 10.0) and got.misfire is MisfirePolicy.RUN_ALL
    assert got.enabled and not got.seeded
    assert await ops.store.get_cron_ticker(uuid4()) is None
    with pytest.raises(TickerNotFoundError):
        await app.cron_tickers.get(uuid4())


async def test_cron_ticker_query(app: TickerQ, ops: Ops) -> None:
    first = await app.cron_tickers.add("alpha", "*/5 * * * *")
    ops.clock.tick(1)
    second = await app.cron_tickers.add("beta", "0 * * * *")
    ops.clock.tick(1)
    third = await app.cron_tickers.add("alpha", "0 0 * * *")
    assert [c.id for c in await app.cron_tickers.query()] == [first.id, second.id, third.id]
    assert [c.id for c in await app.cron_tickers.query(function="alpha")] == [first.id, third.id]
    assert await app.cron_tickers.query(function="gamma") == []


async def test_cron_ticker_update(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    ops.clock.tick(60)
    updated = await app.cron_tickers.update(
        cron.id,
        expression="0 * * * *",
        request={"v": 2},
        retries=1,
        retry_intervals=[3],
        misfire=MisfirePolicy.SKIP,
        description="hourly",
    )
    got = await app.cron_tickers.get(cron.id)
    assert got == updated
    assert got.expression == "0 * * * *"
    assert got.next_fire_at == START + timedelta(hours=1)  # rescheduled
    assert (got.request, got.retries, got.retry_intervals) == ({"v": 2}, 1, (3.0,))
    assert (got.misfire, got.description) == (MisfirePolicy.SKIP, "hourly")
    assert got.updated_at == ops.now and got.created_at == cron.created_at
    with pytest.raises(TickerNotFoundError):
        await ops.store.update_cron_ticker(uuid4(), {"description": "x"})


async def test_cron_ticker_disable_and_enable(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "0 * * * *")  # next 10:00
    disabled = await app.cron_tickers.disable(cron.id)
    assert not disabled.enabled and not (await app.cron_tickers.get(cron.id)).enabled
    assert await ops.store.due_cron_tickers(START + timedelta(days=1)) == []
    assert await ops.store.next_due_time() is None
    ops.clock.tick(timedelta(hours=2, minutes=30))  # 11:30: the fires while disabled are gone
    enabled = await app.cron_tickers.enable(cron.id)
    assert enabled.enabled
    assert enabled.next_fire_at == START + timedelta(hours=3)  # 12:00
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == START + timedelta(hours=3)
    assert [c.id for c in await ops.store.due_cron_tickers(START + timedelta(hours=3))] == [cron.id]


async def test_cron_ticker_delete(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    keep = await app.cron_tickers.add("beta", "*/5 * * * *")
    fire = START + 5 * MINUTE
    await advance_cron(ops, cron.id, fire, fire + 5 * MINUTE, [fire])
    (waiting,) = await app.cron_tickers.occurrences(cron.id)
    await app.cron_tickers.delete(cron.id)
    with pytest.raises(TickerNotFoundError):
        await app.cron_tickers.get(cron.id)
    with pytest.raises(TickerNotFoundError):
        await app.cron_tickers.occurrences(cron.id)
    with pytest.raises(TickerNotFoundError):
        await app.cron_tickers.delete(cron.id)
    assert await ops.store.get_occurrence(waiting.id) is None  # its waiting occurrence went
    assert await ops.claim(fire) == []
    assert [c.id for c in await app.cron_tickers.query()] == [keep.id]


async def test_deleting_a_cron_keeps_its_running_occurrence(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    fire = START + 5 * MINUTE
    await advance_cron(ops, cron.id, fire, fire + 5 * MINUTE, [fire])
    (job,) = await ops.claim(fire)
    await app.cron_tickers.delete(cron.id)
    running = await ops.store.get_occurrence(job.id)
    assert running is not None and running.status is Status.IN_PROGRESS
    await ops.complete(job, Status.DONE, started_at=fire)  # its node can still report it
    done = await ops.store.get_occurrence(job.id)
    assert done is not None and done.status is Status.DONE


# -- due crons and the cursor ---------------------------------------------------------


async def advance_cron(
    ops: Ops, cron_id: UUID, expected: datetime, new: datetime, fires: list[datetime]
) -> int:
    """What the engine does for a due cron: make the fires, move the cursor."""
    return await ops.store.advance_cron_ticker(
        cron_id,
        expected_next=expected,
        new_next=new,
        fires=fires,
        priority=Priority.NORMAL,
        now=ops.now,
    )


async def test_due_cron_tickers(app: TickerQ, ops: Ops) -> None:
    five = await app.cron_tickers.add("alpha", "*/5 * * * *")  # 09:05
    hourly = await app.cron_tickers.add("beta", "0 * * * *")  # 10:00
    await app.cron_tickers.add("gamma", "*/5 * * * *", enabled=False)
    due = ops.store.due_cron_tickers
    assert await due(START + timedelta(minutes=4, seconds=59)) == []
    assert [c.id for c in await due(START + 5 * MINUTE)] == [five.id]
    assert {c.id for c in await due(START + timedelta(hours=1))} == {five.id, hourly.id}
    assert await ops.store.next_due_time() == START + 5 * MINUTE


async def test_advance_creates_each_fire_once(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    f1, f2, f3 = (START + n * 5 * MINUTE for n in (1, 2, 3))
    ops.clock.set(f1)
    assert await advance_cron(ops, cron.id, f1, f2, [f1]) == 1
    assert await advance_cron(ops, cron.id, f1, f2, [f1]) == 0  # the same call again
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == f2
    assert [o.execution_time for o in await app.cron_tickers.occurrences(cron.id)] == [f1]

    # a fire that exists already is not made twice, even with the right cursor
    ops.clock.set(f2)
    assert await advance_cron(ops, cron.id, f2, f3, [f1, f2]) == 1
    assert [o.execution_time for o in await app.cron_tickers.occurrences(cron.id)] == [f2, f1]

    # a stale cursor changes nothing
    assert await advance_cron(ops, cron.id, f2, f3 + 5 * MINUTE, [f3]) == 0
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == f3
    assert len(await app.cron_tickers.occurrences(cron.id)) == 2
    assert await advance_cron(ops, uuid4(), f1, f2, [f1]) == 0


async def test_advance_racing_callers_create_one_occurrence(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    f1, f2 = START + 5 * MINUTE, START + 10 * MINUTE
    ops.clock.set(f1)
    created = await asyncio.gather(*(advance_cron(ops, cron.id, f1, f2, [f1]) for _ in range(4)))
    assert sum(created) == 1
    assert len(await app.cron_tickers.occurrences(cron.id)) == 1
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == f2


async def test_occurrences_newest_first_and_paged(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *", request={"r": 1})
    fires = [START + n * 5 * MINUTE for n in (1, 2, 3, 4)]
    for fire, following in zip(fires, [*fires[1:], fires[-1] + 5 * MINUTE], strict=True):
        ops.clock.set(fire)
        assert await advance_cron(ops, cron.id, fire, following, [fire]) == 1
    listed = await app.cron_tickers.occurrences(cron.id)
    assert [o.execution_time for o in listed] == fires[::-1]
    page = await app.cron_tickers.occurrences(cron.id, limit=2, offset=1)
    assert [o.execution_time for o in page] == [fires[2], fires[1]]
    assert await app.cron_tickers.occurrences(cron.id, offset=4) == []

    newest = listed[0]
    assert newest.cron_ticker_id == cron.id and newest.function == "alpha"
    assert newest.status is Status.IDLE and newest.retry_count == 0
    assert newest.created_at == fires[-1]
    assert await app.cron_tickers.get_occurrence(newest.id) == newest
    assert await ops.store.get_occurrence(uuid4()) is None
    assert await ops.store.get_time_ticker(newest.id) is None  # an occurrence is no time ticker
    ticker = await ops.add("alpha")
    assert await ops.store.get_occurrence(ticker.id) is None
    assert await app.time_tickers.count() == 1  # occurrences are not listed as time tickers


async def test_run_now_adds_one_occurrence_due_now(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "0 * * * *")
    ops.clock.tick(90)
    occurrence = await app.cron_tickers.run_now(cron.id)
    assert occurrence.execution_time == ops.now
    assert occurrence.cron_ticker_id == cron.id and occurrence.status is Status.IDLE
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == START + timedelta(hours=1)
    again = await app.cron_tickers.run_now(cron.id)  # same instant: the same occurrence
    assert again.id == occurrence.id
    assert len(await app.cron_tickers.occurrences(cron.id)) == 1
    (job,) = await ops.claim()
    assert job.id == occurrence.id and job.kind is TickerKind.CRON_OCCURRENCE
    assert job.cron_ticker_id == cron.id and job.execution_time == ops.now


async def test_occurrence_runs_with_the_cron_plan(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add(
        "alpha", "*/5 * * * *", request={"r": 1}, retries=2, retry_intervals=[7]
    )
    fire = START + 5 * MINUTE
    ops.clock.set(fire)
    await advance_cron(ops, cron.id, fire, fire + 5 * MINUTE, [fire])
    (job,) = await ops.claim()
    assert (job.function, job.request, job.execution_time) == ("alpha", {"r": 1}, fire)
    assert (job.retries, job.retry_intervals, job.retry_count) == (2, (7.0,), 0)
    running = await app.cron_tickers.get_occurrence(job.id)
    assert running.status is Status.IN_PROGRESS and running.lock_holder == "node-a"

    await ops.complete(job, Status.IDLE, retry_at=ops.at(7), error_message="once")
    waiting = await app.cron_tickers.get_occurrence(job.id)
    assert waiting.status is Status.IDLE and waiting.retry_count == 1
    assert waiting.execution_time == fire  # the fire it belongs to does not move
    (again,) = await ops.claim(ops.at(7))
    assert again.id == job.id and again.retry_count == 1
    await ops.complete(again, Status.DONE, started_at=ops.at(7))
    done = await app.cron_tickers.get_occurrence(job.id)
    assert done.status is Status.DONE
    attempts = await app.cron_tickers.attempts(job.id)
    assert [(a.number, a.status, a.kind) for a in attempts] == [
        (0, Status.FAILED, TickerKind.CRON_OCCURRENCE),
        (1, Status.DONE, TickerKind.CRON_OCCURRENCE),
    ]
    with pytest.raises(TickerNotFoundError):
        await ops.store.attempts(TickerKind.TIME, job.id)


async def test_cancel_a_waiting_occurrence(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "*/5 * * * *")
    fire = START + 5 * MINUTE
    await advance_cron(ops, cron.id, fire, fire + 5 * MINUTE, [fire])
    (occurrence,) = await app.cron_tickers.occurrences(cron.id)
    cancelled = await app.cron_tickers.cancel_occurrence(occurrence.id)
    assert cancelled.status is Status.CANCELLED
    assert await ops.claim(fire) == []
    with pytest.raises(TickerNotFoundError):
        await app.cron_tickers.cancel_occurrence(uuid4())


# -- seeded crons: reconciled with the code ---------------------------------------------


def declared(app: TickerQ, function: str, expression: str, **options: Any) -> CronTicker:
    """A cron as ``@app.function(cron=expression, ...)`` declares it."""
    return app.cron_tickers.build(function, expression, seeded=True, **options)


async def test_reconcile_creates_one_seeded_cron_per_function(app: TickerQ, ops: Ops) -> None:
    def code() -> list[CronTicker]:
        return [declared(app, "alpha", "*/5 * * * *"), declared(app, "beta", "0 * * * *")]

    first = await ops.store.reconcile_seeded_crons(code())
    assert sorted(first.created) == ["alpha", "beta"]
    assert (first.updated, first.removed) == ((), ())
    stored = await app.cron_tickers.query()
    assert {(c.function, c.expression, c.seeded) for c in stored} == {
        ("alpha", "*/5 * * * *", True),
        ("beta", "0 * * * *", True),
    }
    assert {c.id for c in first.crons} == {c.id for c in stored}

    ops.clock.tick(60)
    again = await ops.store.reconcile_seeded_crons(code())  # a restart with the same code
    assert (again.created, again.updated, again.removed) == ((), (), ())
    assert sorted(again.crons, key=lambda c: c.function) == sorted(stored, key=lambda c: c.function)
    assert await app.cron_tickers.query() == stored  # not even updated_at moved


async def test_reconcile_updates_a_changed_expression_in_place(app: TickerQ, ops: Ops) -> None:
    (first,) = (
        await ops.store.reconcile_seeded_crons([declared(app, "alpha", "*/5 * * * *")])
    ).crons
    fire = START + 5 * MINUTE
    ops.clock.set(fire)
    await advance_cron(ops, first.id, fire, fire + 5 * MINUTE, [fire])
    ops.clock.tick(60)  # 09:06

    result = await ops.store.reconcile_seeded_crons([declared(app, "alpha", "0 * * * *")])

    assert (result.created, result.updated, result.removed) == ((), ("alpha",), ())
    (cron,) = await app.cron_tickers.query()
    assert result.crons == (cron,)
    assert cron.id == first.id and cron.expression == "0 * * * *"
    assert cron.next_fire_at == START + timedelta(hours=1)  # rescheduled by the new expression
    assert (cron.created_at, cron.updated_at) == (first.created_at, ops.now)
    assert [o.execution_time for o in await app.cron_tickers.occurrences(cron.id)] == [fire]
    assert await ops.store.due_cron_tickers(START + 10 * MINUTE) == []  # the old one is gone


async def test_reconcile_applies_a_changed_timezone(app: TickerQ, ops: Ops) -> None:
    noon = "0 12 * * *"
    (first,) = (await ops.store.reconcile_seeded_crons([declared(app, "alpha", noon)])).crons
    assert first.next_fire_at == START + timedelta(hours=3)  # 12:00 UTC

    tokyo = declared(app, "alpha", noon, timezone="Asia/Tokyo")
    result = await ops.store.reconcile_seeded_crons([tokyo])

    assert result.updated == ("alpha",)
    cron = await app.cron_tickers.get(first.id)
    assert cron.timezone == "Asia/Tokyo"
    assert cron.next_fire_at == START + timedelta(hours=18)  # 12:00 in Tokyo is 03:00 UTC


async def test_reconcile_keeps_the_cursor_when_only_the_run_plan_changed(
    app: TickerQ, ops: Ops
) -> None:
    (first,) = (
        await ops.store.reconcile_seeded_crons([declared(app, "alpha", "*/5 * * * *")])
    ).crons
    await app.cron_tickers.disable(first.id)
    await ops.store.update_cron_ticker(first.id, {"description": "an operator's note"})
    ops.clock.tick(timedelta(minutes=17))  # the 09:05, 09:10 and 09:15 fires are behind

    result = await ops.store.reconcile_seeded_crons(
        [
            declared(
                app,
                "alpha",
                "*/5 * * * *",
                retries=3,
                retry_intervals=[1, 2],
                misfire=MisfirePolicy.RUN_ALL,
            )
        ]
    )

    assert result.updated == ("alpha",)
    cron = await app.cron_tickers.get(first.id)
    assert (cron.retries, cron.retry_intervals, cron.misfire) == (
        3,
        (1.0, 2.0),
        MisfirePolicy.RUN_ALL,
    )
    assert cron.next_fire_at == START + 5 * MINUTE  # the missed fires still count
    assert not cron.enabled and cron.description == "an operator's note"  # not the code's


async def test_reconcile_removes_seeded_crons_no_longer_declared(app: TickerQ, ops: Ops) -> None:
    seeded = await ops.store.reconcile_seeded_crons(
        [declared(app, "alpha", "*/5 * * * *"), declared(app, "beta", "*/5 * * * *")]
    )
    by_function = {c.function: c for c in seeded.crons}
    gone, kept = by_function["alpha"], by_function["beta"]
    at_run_time = await app.cron_tickers.add("alpha", "*/5 * * * *")
    fires = [START + n * 5 * MINUTE for n in (1, 2, 3)]
    ops.clock.set(fires[-1])
    await advance_cron(ops, gone.id, fires[0], fires[-1] + 5 * MINUTE, fires)
    ended, running = await ops.claim(slots=2)
    await ops.complete(ended, Status.DONE)
    (waiting,) = [
        o for o in await app.cron_tickers.occurrences(gone.id) if o.execution_time == fires[2]
    ]

    result = await ops.store.reconcile_seeded_crons([declared(app, "beta", "*/5 * * * *")])

    assert (result.created, result.updated, result.removed) == ((), (), ("alpha",))
    assert {c.id for c in await app.cron_tickers.query()} == {kept.id, at_run_time.id}
    assert await ops.store.get_cron_ticker(gone.id) is None
    assert await ops.store.get_occurrence(waiting.id) is None  # waiting: gone with its cron
    assert await ops.claim() == []
    history = await ops.store.get_occurrence(ended.id)  # what ran stays
    assert history is not None and history.status is Status.DONE
    still = await ops.store.get_occurrence(running.id)
    assert still is not None and still.status is Status.IN_PROGRESS
    await ops.complete(running, Status.DONE)  # its node can still report it
    finished = await ops.store.get_occurrence(running.id)
    assert finished is not None and finished.status is Status.DONE


async def test_nodes_reconciling_at_once_end_with_one_cron_per_function(
    app: TickerQ, ops: Ops
) -> None:
    before = await ops.store.reconcile_seeded_crons(
        [declared(app, "alpha", "*/5 * * * *"), declared(app, "beta", "0 * * * *")]
    )
    alpha = next(c for c in before.crons if c.function == "alpha")
    ops.clock.tick(60)

    def new_code() -> list[CronTicker]:
        return [declared(app, "alpha", "*/10 * * * *"), declared(app, "gamma", "0 0 * * *")]

    results = await asyncio.gather(
        *(ops.store.reconcile_seeded_crons(new_code()) for _ in range(4))
    )

    assert sorted(f for r in results for f in r.updated) == ["alpha"]  # one of them did it
    assert sorted(f for r in results for f in r.created) == ["gamma"]
    assert sorted(f for r in results for f in r.removed) == ["beta"]
    stored = await app.cron_tickers.query()
    assert sorted((c.function, c.expression) for c in stored) == [
        ("alpha", "*/10 * * * *"),
        ("gamma", "0 0 * * *"),
    ]
    assert next(c for c in stored if c.function == "alpha").id == alpha.id
    for result in results:
        assert {c.id for c in result.crons} == {c.id for c in stored}

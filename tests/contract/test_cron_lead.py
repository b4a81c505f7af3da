"""Store contract, end to end: ``EngineOptions.cron_lead`` makes cron occurrences
ahead of their fire (so thousands of crons firing at once start on time), and a
cron changed or disabled within the lead never runs its old settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from support import START
from tickerq import EngineOptions, InvalidArgumentError, Status, TickerContext, TickerQ
from tickerq.testing import ManualClock, advance

MakeApp = Callable[..., TickerQ]
FIRE = START + timedelta(minutes=1)  # the first fire of "* * * * *" after START
LEAD = EngineOptions(cron_lead=5.0)


def _recorder(app: TickerQ) -> list[tuple[datetime, object]]:
    runs: list[tuple[datetime, object]] = []

    @app.function()
    async def tick(ctx: TickerContext[int]) -> None:
        runs.append((ctx.app.clock.now(), ctx.request))

    return runs


async def test_occurrences_are_made_ahead_and_run_at_their_fire(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(options=LEAD)
    runs = _recorder(app)
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *", request=1)
        await advance(app, FIRE - timedelta(seconds=2) - clock.now())
        made = await app.cron_tickers.occurrences(cron.id)
        assert [(o.status, o.execution_time) for o in made] == [(Status.IDLE, FIRE)]
        assert runs == []
        assert (await app.cron_tickers.get(cron.id)).next_fire_at == FIRE + timedelta(minutes=1)
        await advance(app, timedelta(seconds=2))
        assert runs == [(FIRE, 1)]  # at its fire, not when it was made
        await advance(app, timedelta(minutes=2))
        ended = await app.cron_tickers.occurrences(cron.id)
    assert [at for at, _ in runs] == [FIRE + timedelta(minutes=m) for m in range(3)]
    # none ran late; the next fire's occurrence is made (and waits) within the lead
    assert [o.status for o in ended] == [Status.DONE] * 3


async def test_a_cron_changed_within_the_lead_runs_its_new_settings_once(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(options=LEAD)
    runs = _recorder(app)
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *", request=1)
        await advance(app, FIRE - timedelta(seconds=2) - clock.now())
        (ahead,) = await app.cron_tickers.occurrences(cron.id)
        changed = await app.cron_tickers.update(cron.id, request=2)
        assert changed.next_fire_at == FIRE  # made again from the change
        await advance(app, timedelta(seconds=3))
        made = await app.cron_tickers.occurrences(cron.id)
    assert runs == [(FIRE, 2)]
    assert ahead.id not in {o.id for o in made}
    assert [o.execution_time for o in made] == [FIRE]


async def test_a_new_schedule_within_the_lead_drops_the_old_fire(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(options=LEAD)
    runs = _recorder(app)
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *", request=1)
        await advance(app, FIRE - timedelta(seconds=2) - clock.now())
        await app.cron_tickers.update(cron.id, expression="*/5 * * * *")
        await advance(app, timedelta(minutes=5))
    assert runs == [(START + timedelta(minutes=5), 1)]


async def test_a_cron_disabled_within_the_lead_does_not_fire(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(options=LEAD)
    runs = _recorder(app)
    async with app:
        cron = await app.cron_tickers.add("tick", "* * * * *", request=1)
        await advance(app, FIRE - timedelta(seconds=2) - clock.now())
        await app.cron_tickers.disable(cron.id)
        await advance(app, timedelta(seconds=30))
        assert runs == []
        assert await app.cron_tickers.occurrences(cron.id) == []
        await app.cron_tickers.enable(cron.id)  # from the next fire after now
        await advance(app, timedelta(minutes=1))
    assert runs == [(FIRE + timedelta(minutes=1), 1)]


async def test_a_redeploy_within_the_lead_runs_the_new_schedule_only(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(options=LEAD)
    runs: list[datetime] = []

    @app.function(cron="* * * * *")
    async def seeded(ctx: TickerContext) -> None:
        runs.append(ctx.app.clock.now())

    async with app:
        await advance(app, FIRE - timedelta(seconds=2) - clock.now())
        (cron,) = await app.cron_tickers.query()
        assert [o.execution_time for o in await app.cron_tickers.occurrences(cron.id)] == [FIRE]
        # another node starts with new code: the same function every 5 minutes
        redeployed = app.cron_tickers.build("seeded", "*/5 * * * *", seeded=True)
        result = await app.store.reconcile_seeded_crons([redeployed])
        assert result.updated == ("seeded",)
        await advance(app, timedelta(minutes=5))
        made = await app.cron_tickers.occurrences(cron.id)
    assert runs == [START + timedelta(minutes=5)]
    assert [o.execution_time for o in made] == [START + timedelta(minutes=5)]


async def test_a_change_keeps_an_occurrence_waiting_for_its_retry(
    make_app: MakeApp, clock: ManualClock
) -> None:
    # A failed occurrence waits IDLE for its retry, due later than now: it was
    # claimed, so it is not one made ahead, and a change of the cron leaves it.
    app = make_app()
    attempts: list[datetime] = []

    @app.function()
    async def flaky(ctx: TickerContext) -> None:
        attempts.append(ctx.app.clock.now())
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    async with app:
        cron = await app.cron_tickers.add("flaky", "0 * * * *", retries=1, retry_intervals=[30])
        await advance(app, timedelta(hours=1))
        (waiting,) = await app.cron_tickers.occurrences(cron.id)
        assert waiting.status is Status.IDLE and waiting.retry_count == 1
        await app.cron_tickers.update(cron.id, description="changed")
        await advance(app, timedelta(seconds=30))
        (occurrence,) = await app.cron_tickers.occurrences(cron.id)
    hour = START + timedelta(hours=1)
    assert attempts == [hour, hour + timedelta(seconds=30)]
    assert occurrence.id == waiting.id and occurrence.status is Status.DONE


@pytest.mark.parametrize("bad", [-1, 3601, float("nan"), "5", True])
def test_a_bad_cron_lead_is_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="cron_lead"):
        EngineOptions(cron_lead=bad)  # type: ignore[arg-type]

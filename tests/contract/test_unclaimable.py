"""A due row this node cannot run must not stall its timer.

Found by probing: with a due row of a function not registered on the node, the
store's next due time stayed in the past; the engine treated that as "due but
no room" and slept with no deadline, so later cron fires and tickers waited for an
unrelated wake-up (2 fires of an every-minute cron in 10 minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from support import START
from tickerq import Status, TickerQ
from tickerq.testing import advance

MakeApp = Callable[..., TickerQ]


async def test_a_due_row_this_node_cannot_run_does_not_stall_the_timer(
    make_app: MakeApp,
) -> None:
    app = make_app()
    fires: list[datetime] = []

    @app.function()
    async def ghost() -> None:
        raise AssertionError("not on this node")

    @app.function()
    async def tick() -> None:
        fires.append(app.clock.now())

    async with app:
        app.pause()
        stuck = await ghost.enqueue()
        del app._functions["ghost"]  # as on a node that does not have this function
        await app.cron_tickers.add("tick", "* * * * *")
        app.resume()
        await advance(app, timedelta(minutes=10))
        waiting = await app.time_tickers.get(stuck.id)
    assert fires == [START + timedelta(minutes=m) for m in range(1, 11)]
    assert waiting.status is Status.IDLE  # left for a node that has the function

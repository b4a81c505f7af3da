"""Store contract: the managers and functions not registered in this process.

A dashboard may serve a cluster whose job code runs elsewhere: with
``allow_unregistered=True`` the managers accept a function the cluster knows
(reported in a node's heartbeat, run by a cron ticker, or with time tickers),
storing its request as plain JSON within the usual bounds. Without it, and for
names nobody knows, they refuse as they always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest

from support import START
from tickerq import (
    FunctionNotFoundError,
    InvalidRequestError,
    Priority,
    Status,
    TickerContext,
    TickerQ,
    TimeTicker,
)
from tickerq.models import Node
from tickerq.stores.base import TickerQuery

if TYPE_CHECKING:
    from contract.conftest import Ops

REMOTE = "remote_job"
"""A function only another node has (it reports it in its heartbeat)."""


async def report(app: TickerQ, *functions: str) -> None:
    """Store the heartbeat of another node that runs ``functions``."""
    now = app.clock.now()
    node = Node(
        id="worker-1",
        started_at=START,
        last_heartbeat=now,
        version="9.9.9",
        max_concurrency=4,
        functions=functions,
    )
    await app.store.heartbeat(node, [], now + timedelta(minutes=1))


async def stored_count(app: TickerQ) -> int:
    return await app.store.count_time_tickers(TickerQuery())


# -- the default path is unchanged ---------------------------------------------------


async def test_without_opt_in_a_function_not_registered_here_is_refused(app: TickerQ) -> None:
    await report(app, REMOTE)
    with pytest.raises(FunctionNotFoundError, match=rf"'{REMOTE}' \(registered: alpha, beta"):
        await app.time_tickers.add(REMOTE, request={"a": 1})
    with pytest.raises(FunctionNotFoundError, match=REMOTE):
        await app.cron_tickers.add(REMOTE, "*/5 * * * *")
    assert await stored_count(app) == 0
    assert await app.cron_tickers.query() == []


@dataclass
class Order:
    n: int


async def test_opt_in_keeps_the_registered_path(app: TickerQ) -> None:
    @app.function("typed")
    async def typed(ctx: TickerContext[Order]) -> None:
        return None

    ticker = await app.time_tickers.add("high", allow_unregistered=True)
    assert ticker.priority is Priority.HIGH  # the registered function's options
    # validated and encoded by the registered request type, not as plain JSON
    ticker = await app.time_tickers.add("typed", request=Order(n=3), allow_unregistered=True)
    assert (await app.time_tickers.get(ticker.id)).request == {"n": 3}
    with pytest.raises(InvalidRequestError, match="typed"):
        await app.time_tickers.add("typed", request={"n": "three"}, allow_unregistered=True)
    with pytest.raises(InvalidRequestError, match="typed"):
        await app.cron_tickers.add("typed", "* * * * *", request={"m": 1}, allow_unregistered=True)
    cron = await app.cron_tickers.add(
        "typed", "* * * * *", request=Order(n=4), allow_unregistered=True
    )
    assert (await app.cron_tickers.get(cron.id)).request == {"n": 4}
    assert await stored_count(app) == 2


# -- which functions are known -------------------------------------------------------


async def test_opt_in_refuses_a_function_nobody_knows(app: TickerQ) -> None:
    await report(app, REMOTE)
    with pytest.raises(FunctionNotFoundError) as raised:
        await app.time_tickers.add("nobody_has_it", allow_unregistered=True)
    message = str(raised.value)
    assert "'nobody_has_it'" in message
    assert REMOTE in message and "alpha" in message  # the names it does know
    with pytest.raises(FunctionNotFoundError, match="nobody_has_it"):
        await app.cron_tickers.add("nobody_has_it", "* * * * *", allow_unregistered=True)
    assert await stored_count(app) == 0
    assert await app.cron_tickers.query() == []


async def test_known_from_a_heartbeat_a_cron_or_time_tickers(app: TickerQ, ops: Ops) -> None:
    await report(app, REMOTE)
    cron = app.cron_tickers.build("alpha", "0 * * * *").evolve(function="cron_only")
    await app.store.add_cron_ticker(cron)
    now = ops.now
    await app.store.add_time_tickers(
        [
            TimeTicker(
                id=uuid4(),
                function="ticker_only",
                execution_time=now,
                created_at=now,
                updated_at=now,
            )
        ]
    )
    for name in (REMOTE, "cron_only", "ticker_only"):
        added = await app.time_tickers.add(name, allow_unregistered=True)
        assert added.function == name
        assert (await app.time_tickers.get(added.id)).function == name


# -- time tickers of an unregistered function ----------------------------------------


async def test_request_stored_as_plain_json_with_default_options(app: TickerQ, ops: Ops) -> None:
    await report(app, REMOTE)
    added = await app.time_tickers.add(
        REMOTE,
        request={"ids": (1, 2), "to": "a@b.c", "deep": {"x": None}},
        description="from the dashboard",
        timeout=30,
        allow_unregistered=True,
    )
    got = await app.time_tickers.get(added.id)
    assert got == added
    assert got.request == {"ids": [1, 2], "to": "a@b.c", "deep": {"x": None}}
    assert got.priority is Priority.NORMAL
    assert got.retries == 0 and got.retry_intervals is None
    assert got.timeout == 30.0 and got.description == "from the dashboard"
    assert got.execution_time == ops.now and got.status is Status.IDLE

    later = START + timedelta(hours=2)
    given = await app.time_tickers.add(
        REMOTE,
        execution_time=later,
        retries=3,
        retry_intervals=[5, 60],
        allow_unregistered=True,
    )
    got = await app.time_tickers.get(given.id)
    assert got.execution_time == later
    assert got.retries == 3 and got.retry_intervals == (5.0, 60.0)
    assert got.request is None


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        ({"when": datetime(2026, 1, 1)}, "datetime"),
        ({1, 2}, "set"),
        ({"ratio": math.nan}, "nan"),
        ({"k\x00": 1}, "NUL"),
    ],
    ids=["datetime", "set", "nan", "nul-key"],
)
async def test_a_request_json_cannot_hold_is_refused_naming_it(
    app: TickerQ, request_: Any, needle: str
) -> None:
    await report(app, REMOTE)
    with pytest.raises(InvalidRequestError) as raised:
        await app.time_tickers.add(REMOTE, request=request_, allow_unregistered=True)
    message = str(raised.value)
    assert REMOTE in message and needle.lower() in message.lower(), message
    with pytest.raises(InvalidRequestError, match=REMOTE):
        await app.cron_tickers.add(REMOTE, "* * * * *", request=request_, allow_unregistered=True)
    assert await stored_count(app) == 0
    assert await app.cron_tickers.query() == []


async def test_the_payload_size_limit_applies(make_app: Callable[..., TickerQ]) -> None:
    app = make_app(max_payload_bytes=64)
    await app.open()
    await report(app, REMOTE)
    big = {"text": "x" * 100}
    with pytest.raises(InvalidRequestError, match=r"over the limit of 64") as raised:
        await app.time_tickers.add(REMOTE, request=big, allow_unregistered=True)
    assert REMOTE in str(raised.value)
    with pytest.raises(InvalidRequestError, match=r"over the limit of 64"):
        await app.cron_tickers.add(REMOTE, "* * * * *", request=big, allow_unregistered=True)
    assert await stored_count(app) == 0
    small = await app.time_tickers.add(REMOTE, request={"text": "x"}, allow_unregistered=True)
    with pytest.raises(InvalidRequestError, match=r"over the limit of 64"):
        await app.time_tickers.update(small.id, request=big, allow_unregistered=True)
    assert (await app.time_tickers.get(small.id)).request == {"text": "x"}


async def test_update_a_request_needs_the_opt_in(app: TickerQ) -> None:
    await report(app, REMOTE)
    ticker = await app.time_tickers.add(REMOTE, request={"n": 1}, allow_unregistered=True)
    with pytest.raises(FunctionNotFoundError, match=REMOTE):
        await app.time_tickers.update(ticker.id, request={"n": 2})
    # fields other than the request never needed the function
    changed = await app.time_tickers.update(ticker.id, description="kept")
    assert changed.description == "kept" and changed.request == {"n": 1}
    changed = await app.time_tickers.update(
        ticker.id, request={"n": (2, 3)}, retries=1, allow_unregistered=True
    )
    assert changed.request == {"n": [2, 3]} and changed.retries == 1
    assert await app.time_tickers.get(ticker.id) == changed
    with pytest.raises(InvalidRequestError, match=REMOTE):
        await app.time_tickers.update(ticker.id, request={"bad": {1}}, allow_unregistered=True)
    assert (await app.time_tickers.get(ticker.id)).request == {"n": [2, 3]}


# -- cron tickers of an unregistered function ----------------------------------------


async def test_cron_add_update_and_run_now(app: TickerQ, ops: Ops) -> None:
    await report(app, REMOTE)
    cron = await app.cron_tickers.add(
        REMOTE, "0  *  * * *", request={"batch": (1,)}, retries=2, allow_unregistered=True
    )
    got = await app.cron_tickers.get(cron.id)
    assert got == cron
    assert got.expression == "0 * * * *" and got.request == {"batch": [1]} and got.retries == 2
    assert got.next_fire_at == START + timedelta(hours=1)

    with pytest.raises(FunctionNotFoundError, match=REMOTE):
        await app.cron_tickers.update(cron.id, request={"batch": [2]})
    changed = await app.cron_tickers.update(
        cron.id, request={"batch": [2]}, expression="30 * * * *", allow_unregistered=True
    )
    assert changed.request == {"batch": [2]}
    assert changed.next_fire_at == START + timedelta(minutes=30)
    assert await app.cron_tickers.get(cron.id) == changed

    with pytest.raises(FunctionNotFoundError, match=REMOTE):
        await app.cron_tickers.run_now(cron.id)
    occurrence = await app.cron_tickers.run_now(cron.id, allow_unregistered=True)
    assert occurrence.cron_ticker_id == cron.id and occurrence.execution_time == ops.now
    assert [o.id for o in await app.cron_tickers.occurrences(cron.id)] == [occurrence.id]
    # the schedule itself is unchanged
    assert (await app.cron_tickers.get(cron.id)).next_fire_at == changed.next_fire_at


async def test_retry_occurrence(app: TickerQ, ops: Ops) -> None:
    cron = await app.cron_tickers.add("alpha", "0 * * * *")
    occurrence = await app.cron_tickers.run_now(cron.id)
    cancelled = await app.cron_tickers.cancel_occurrence(occurrence.id)
    assert cancelled.status is Status.CANCELLED
    ops.clock.tick(timedelta(minutes=3))
    again = await app.cron_tickers.retry_occurrence(occurrence.id)
    assert again.status is Status.IDLE and again.updated_at == ops.now
    assert await app.cron_tickers.get_occurrence(occurrence.id) == again

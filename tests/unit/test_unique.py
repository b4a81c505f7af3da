"""Unique keys in the app's own layers: middleware sees and may set a key (checked),
and the rule that decides which of several rows gets a key."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from tickerq import EnqueueOutcome, InvalidArgumentError, TickerContext, TickerQ, TimeTicker
from tickerq.middleware import EnqueueNext
from tickerq.unique import KeyHeld, check_on_conflict, claim_keys


class KeyFromHeader:
    """Gives each enqueue the key its ``dedupe`` header names."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    async def on_enqueue(self, ticker: TimeTicker, call_next: EnqueueNext) -> TimeTicker:
        self.seen.append(ticker.unique_key)
        key = ticker.headers.get("dedupe")
        return await call_next(ticker if key is None else ticker.evolve(unique_key=key))


async def test_middleware_sees_the_key_and_may_set_one() -> None:
    middleware = KeyFromHeader()
    app = TickerQ(middleware=[middleware])

    @app.function()
    async def job(ctx: TickerContext[Any]) -> None:
        return None

    await app.open()
    first = await job.enqueue(1, headers={"dedupe": "d1"})
    again = await job.enqueue(2, headers={"dedupe": "d1"})
    given = await job.enqueue(3, unique_key="own")
    assert first.unique_key == "d1" and again.enqueued is EnqueueOutcome.KEPT
    assert again.id == first.id and given.unique_key == "own"
    assert middleware.seen == [None, None, "own"]
    with pytest.raises(InvalidArgumentError, match="unique_key"):
        await job.enqueue(4, headers={"dedupe": ""})
    assert await app.time_tickers.count() == 2
    await app.stop()


def test_claim_keys_gives_each_key_to_the_first_row() -> None:
    a, b, c, holder = sorted(uuid4() for _ in range(4))
    refused = claim_keys(
        [(a, "f", "k"), (b, "f", "k"), (c, "g", "k")],
        holders=[(holder, "g", "k"), (a, "f", "k")],  # a holds its own key already
    )
    assert refused == {b: KeyHeld("f", "k", a), c: KeyHeld("g", "k", holder)}


@pytest.mark.parametrize("value", ["Keep", "", None, 1, "replace "])
def test_on_conflict_names_the_bad_value(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        check_on_conflict(value)
    assert repr(value) in str(excinfo.value) and "'keep', 'replace', 'error'" in str(excinfo.value)

"""Every JSON value round-trips on every store, on the hot path and the general path.

Found by probing: SQLite declared the request column ``JSON``, which has NUMERIC
affinity there, so a payload that is a bare number was stored as an INTEGER; the
hot path's ``json.loads`` then failed on it, and the whole claim batch stayed
IN_PROGRESS, claimed again and again, never run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from tickerq import Status, TickerContext, TickerQ
from tickerq.testing import run_until_idle

MakeApp = Callable[..., TickerQ]

PAYLOADS: list[Any] = [
    5,
    -7,
    0,
    2.5,
    1.0,
    -0.0,
    1e300,
    -1e-300,
    2**70,
    -(2**63),
    2**63,
    True,
    False,
    None,
    "5",
    "2.5",
    "",
    "null",
    "żółw 🐢 \u2028",
    [],
    {},
    [1, 1.0, "1", None, True],
    {"a": {"b": [2**70, 0.1, {"c": None}]}, "": ""},
]


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not 1.0, -0.0 keeps its sign)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "general-path"])
async def test_every_json_payload_runs_and_reads_back_exactly(
    make_app: MakeApp, store_kind: str, hot: bool
) -> None:
    app = make_app(max_concurrency=len(PAYLOADS))
    got: dict[str, Any] = {}

    @app.function()
    async def echo(ctx: TickerContext[Any]) -> None:
        got[str(ctx.id)] = ctx.request

    async with app:
        if not hot:
            store: Any = app.store
            if not hasattr(store, "hot"):
                pytest.skip("the memory store has one path")
            store.hot = None
        tickers = [await echo.enqueue(p) for p in PAYLOADS]  # one claim batch
        for ticker, payload in zip(tickers, PAYLOADS, strict=True):
            stored = await app.time_tickers.get(ticker.id)
            assert same(stored.request, payload), (store_kind, payload, stored.request)
        await run_until_idle(app)
        ended = [await app.time_tickers.get(t.id) for t in tickers]

    assert [t.status for t in ended] == [Status.DONE] * len(PAYLOADS)
    for ticker, payload in zip(tickers, PAYLOADS, strict=True):
        assert same(got[str(ticker.id)], payload), (store_kind, payload, got[str(ticker.id)])

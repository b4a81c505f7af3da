"""Rate and per-key limits on the dashboard: what each function's limits are, how
full their windows are, and the due jobs a full limit holds back (issue 12)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboard.conftest import ClientFactory
from tickerq import TickerContext, TickerQ


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_functions_show_their_limits_and_what_a_full_limit_holds_back(
    store: str, tmp_path: Path, client_for: ClientFactory
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/limits.db"
    app = TickerQ(url, limits={"smtp": "2/h"}, rate_limit="1000/m")

    @app.function(rate_limit="smtp")
    async def mail() -> None: ...

    @app.function(concurrency_key=lambda req: req["tenant"], max_per_key=3)
    async def report(ctx: TickerContext[dict[str, Any]]) -> None: ...

    @app.function()
    async def plain() -> None: ...

    await app.open()
    try:
        for _ in range(5):
            await mail.enqueue()
        gates = app.engine.gates()
        assert gates is not None
        now = app.clock.now()
        started = await app.store.claim(
            now,
            node="n1",
            lease_until=now + timedelta(minutes=5),
            slots=10,
            capacity={},
            functions=["mail"],
            gates=gates,
        )
        assert len(started) == 2
        async with client_for(app.dashboard()) as client:
            listed = {f["name"]: f for f in (await client.get("/api/functions")).json()}
            page = (await client.get("/functions")).text
    finally:
        await app.stop()
    assert [
        (r["name"], r["limit"], r["used"], r["full"]) for r in listed["mail"]["rate_limits"]
    ] == [
        ("smtp", "2/h", 2, True),
        ("app", "1000/m", 2, False),
    ]
    assert listed["mail"]["throttled_due"] == 3
    assert listed["report"]["max_per_key"] == 3 and listed["report"]["throttled_due"] == 0
    assert [r["name"] for r in listed["plain"]["rate_limits"]] == ["app"]
    assert listed["plain"]["max_per_key"] is None
    assert "smtp 2/2/h" in page and "3 (rate)" in page and "≤ 3" in page

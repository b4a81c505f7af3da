"""A standalone dashboard (no job code) refuses what the managers refuse.

Its service builds tickers of functions it does not have itself; found by
probing: those skipped the input bounds (NUL characters, deep payloads, dates
out of range), which every store must be spared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dashboard.conftest import ClientFactory, build_app
from tickerq import TickerQ

DEEP: Any = 0
for _ in range(100):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    "body",
    [
        {"description": "nul \x00 here"},
        {"request": DEEP},
        {"request": {"k\x00": 1}},
        {"execution_time": "0001-01-02T00:00:00+00:00"},
        {"timeout": 1e300},
    ],
    ids=["nul-description", "deep-payload", "nul-key", "year-1", "huge-timeout"],
)
async def test_standalone_dashboard_refuses_out_of_bounds_input(
    tmp_path: Path, client_for: ClientFactory, body: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    worker = build_app(url)  # knows "nightly" (its seeded cron makes it known)
    await worker.open()
    await worker._seed()
    standalone = TickerQ(url)
    await standalone.open()
    try:
        async with client_for(standalone.dashboard()) as client:
            r = await client.post("/api/time-tickers", json={"function": "nightly", **body})
            assert 400 <= r.status_code < 500, r.text
            ok = await client.post("/api/time-tickers", json={"function": "nightly"})
            assert ok.status_code in (200, 201), ok.text
        assert await standalone.time_tickers.count() == 1
    finally:
        await standalone.stop()
        await worker.stop()

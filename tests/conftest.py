"""Shared fixtures: an app on a manual clock, so tests never wait for real time."""

from __future__ import annotations

import pytest

from support import START
from tickerq import TickerQ
from tickerq.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def app(clock: ManualClock) -> TickerQ:
    return TickerQ(clock=clock, node_id="test-node", max_concurrency=4)

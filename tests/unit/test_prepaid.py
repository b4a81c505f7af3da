"""Room held ahead (tickerq.stores.sql.prepaid): the node-side bookkeeping."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tickerq import RateLimit
from tickerq.limits import Gates
from tickerq.stores.sql import prepaid
from tickerq.stores.sql.prepaid import LeaseWish, Prepaid

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def _gates(rate: str | None = "1000/s", per_key: int | None = None) -> Gates:
    gates = Gates()
    if rate:
        gates.buckets["r"] = RateLimit.parse(rate)
        gates.of_function["f"] = ("r",)
    if per_key:
        gates.per_key["f"] = per_key
    return gates


def _reserve(room: Prepaid, gates: Gates, now: datetime, slots: int, n: int) -> datetime:
    grants, returns = room.requests(gates, ["r"], now, slots)
    assert returns == [] and [g.bucket for g in grants] == ["r"]
    room.granted(grants, {"r": n}, now)
    return grants[0].at


def test_a_reserve_covers_plain_claims_until_it_runs_out_or_its_slot_passes() -> None:
    room, gates = Prepaid(), _gates()
    assert room.plain(gates, ["f"], 10, T0, "n") is None  # nothing held: exact
    at = _reserve(room, gates, T0, 10, 25)
    assert at == T0 + timedelta(milliseconds=250)  # a quarter of the period ahead
    claim = room.plain(gates, ["f"], 10, T0, "n")
    assert claim is not None and claim.long_limit == 15
    assert claim.deadline <= datetime.now(UTC) + (at - T0)
    room.spent(claim, ["f"] * 10)
    room.spent(claim, ["f"] * 10)
    assert room.held("r") == 5
    assert room.plain(gates, ["f"], 10, T0, "n") is None  # 5 left, 10 slots
    assert room.plain(gates, ["f"], 5, T0, "n") is not None
    assert room.plain(gates, ["f"], 5, at - MS, "n") is None  # too close to its end
    assert room.plain(gates, ["f"], 5, at, "n") is None  # its slot has passed
    assert room.plain(gates, ["f"], 5, T0 - MS, "n") is None  # before it was granted


def test_a_spent_reserve_goes_back_with_what_it_did_not_use() -> None:
    room, gates = Prepaid(), _gates()
    at = _reserve(room, gates, T0, 10, 25)
    # still live with room for the claim: kept, nothing asked for
    assert room.requests(gates, ["r"], T0 + MS, 10) == ([], [])
    later = at + 3 * MS
    grants, returns = room.requests(gates, ["r"], later, 10)
    assert returns == [("r", at, 25)] and len(grants) == 1
    assert grants[0].at > RateLimit.parse("1000/s").stored_at(later)  # never the claim's slot
    assert grants[0].ceiling == 500 and grants[0].least == 10
    assert room.held("r") == 0


def test_a_reserve_stored_at_the_claims_own_slot_is_kept_for_later() -> None:
    room, gates = Prepaid(), _gates()
    at = _reserve(room, gates, T0, 10, 25)
    assert room.requests(gates, ["r"], at, 10) == ([], [])  # its slot is the claim's
    grants, returns = room.requests(gates, ["r"], at + MS, 10)
    assert returns == [("r", at, 25)] and len(grants) == 1


def test_a_live_reserve_too_small_is_topped_up_at_its_own_slot() -> None:
    room, gates = Prepaid(), _gates()
    at = _reserve(room, gates, T0, 10, 12)
    claim = room.plain(gates, ["f"], 10, T0, "n")
    assert claim is not None
    room.spent(claim, ["f"] * 10)
    grants, returns = room.requests(gates, ["r"], T0, 10)  # 2 left: the same slot
    assert returns == [] and [g.at for g in grants] == [at]
    room.granted(grants, {"r": 30}, T0)
    assert room.held("r") == 32


def test_a_lease_covers_plain_claims_within_its_room() -> None:
    room, gates = Prepaid(), _gates(rate=None, per_key=20)
    wishes = room.lease_wishes(gates, ["f"], T0, 4, "n")
    assert wishes == [LeaseWish("f", 4)]
    room.leased(wishes, ["f"], "n", T0, T0 + prepaid.LEASE_TIME)
    assert room.plain(gates, ["f"], 4, T0, "other node") is None  # leases are by node
    claim = room.plain(gates, ["f"], 4, T0, "n")
    assert claim is not None and claim.long_limit == 0
    room.started(gates, [(uuid.uuid4(), "f") for _ in range(3)], "n")
    assert room.plain(gates, ["f"], 1, T0, "n") is not None  # 3 running + 1 free = 4
    assert room.plain(gates, ["f"], 2, T0, "n") is None
    # renewed once half its time is gone; refused: gone
    assert room.lease_wishes(gates, ["f"], T0 + timedelta(seconds=4), 1, "n") == []
    again = room.lease_wishes(gates, ["f"], T0 + timedelta(seconds=6), 1, "n")
    assert again == [LeaseWish("f", 4)]
    room.leased(again, [], "n", T0, T0)
    assert room.plain(gates, ["f"], 1, T0, "n") is None


def test_jobs_a_node_no_longer_runs_are_forgotten_after_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room, gates = Prepaid(), _gates(rate=None, per_key=20)
    old, young = uuid.uuid4(), uuid.uuid4()
    room.started(gates, [(old, "f")], "n")
    clock = time.monotonic() + 61
    monkeypatch.setattr(prepaid.time, "monotonic", lambda: clock)
    room.started(gates, [(young, "f")], "n")
    room.running_now("n", [])
    assert room.running_by_function("n") == {"f": 1}  # the young one stays
    room.ended([young])
    assert room.running_by_function("n") == {}

"""Notices between nodes: one wire form, typed on both ends; the bus that carries them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tickerq.enums import Status, TickerKind
from tickerq.events import EventBus, TickerChanged
from tickerq.notices import (
    CRONS,
    NODES,
    PAUSES,
    TICKERS,
    CancelRequested,
    Changed,
    Notice,
    Wake,
    WorkDue,
    decode,
    encode,
)
from tickerq.stores.sql.notify import Pacer

NOTICES: list[Notice] = [
    WorkDue(datetime(2030, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)),
    CancelRequested(uuid.UUID("0b6e1c52-3c54-4b1a-9f55-1d3c2a7e9b10")),
    Wake(),
    Changed(frozenset({TICKERS})),
    Changed(frozenset({TICKERS, CRONS})),
    Changed(frozenset({NODES, CRONS, TICKERS})),
    Changed(frozenset({PAUSES})),
]


@pytest.mark.parametrize("notice", NOTICES, ids=encode)
def test_every_notice_round_trips(notice: Notice) -> None:
    assert decode(encode(notice)) == notice


def test_the_wire_form_is_the_one_older_nodes_send_and_read() -> None:
    at = datetime(2030, 5, 17, 8, 30, tzinfo=UTC)
    ticker = uuid.uuid4()
    assert encode(WorkDue(at)) == f"due {at.isoformat()}"
    assert encode(CancelRequested(ticker)) == f"cancel {ticker}"
    assert encode(Wake()) == "wake"
    # equal notices are equal text (PostgreSQL folds them within a transaction)
    assert encode(Changed(frozenset({TICKERS, CRONS}))) == "changed crons tickers"
    assert encode(Changed(frozenset({CRONS, TICKERS}))) == "changed crons tickers"
    assert encode(Changed(frozenset({PAUSES}))) == "changed pauses"


def test_a_due_time_in_another_offset_is_read_as_utc() -> None:
    at = datetime(2030, 5, 17, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    notice = decode(f"due {at.isoformat()}")
    assert notice == WorkDue(at)
    assert isinstance(notice, WorkDue) and notice.at.tzinfo is UTC


@pytest.mark.parametrize(
    "payload",
    [
        "",
        " ",
        "due",
        "due tomorrow",
        "due 2030-05-17T08:30:00",  # no offset: which time would it be?
        "cancel",
        "cancel 42",
        "wake up",
        "changed",
        "changed tickers bananas",
        "frobnicate 1",
        "\x00\xff" * 50,
        "x" * 10_000,
    ],
)
def test_a_payload_that_is_no_notice_is_ignored_and_logged(
    payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tickerq.notices"):
        assert decode(payload) is None
    assert len(caplog.records) == 1
    assert "ignoring a notice" in caplog.records[0].getMessage()
    assert len(caplog.records[0].getMessage()) < 400  # a huge payload is not logged whole


def test_encode_refuses_what_is_no_notice() -> None:
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]


def test_the_bus_keeps_events_and_notices_apart() -> None:
    bus = EventBus()
    events: list[object] = []
    notices: list[Notice] = []
    stop_notices = bus.subscribe_notices(notices.append)
    assert not bus.active  # a notice subscriber does not make stores build events
    stop_events = bus.subscribe(events.append)
    assert bus.active
    event = TickerChanged(datetime.now(UTC), TickerKind.TIME, uuid.uuid4(), "f", Status.DONE)
    bus.publish(event)
    bus.publish_notice(Wake())
    assert events == [event] and notices == [Wake()]
    stop_notices()
    bus.publish_notice(Wake())
    assert notices == [Wake()]
    stop_events()
    assert not bus.active


def test_a_failing_notice_subscriber_is_logged_and_the_others_still_get_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    got: list[Notice] = []

    def broken(notice: Notice) -> None:
        raise RuntimeError("boom")

    bus.subscribe_notices(broken)
    bus.subscribe_notices(got.append)
    with caplog.at_level(logging.ERROR, logger="tickerq.events"):
        bus.publish_notice(Wake())
    assert got == [Wake()]
    assert "notice subscriber" in caplog.text


async def test_the_pacer_sends_once_per_interval_and_what_is_owed_after_its_end() -> None:
    sent: list[float] = []

    async def send() -> None:
        sent.append(time.monotonic())

    pacer = Pacer(0.2, send)
    try:
        assert pacer.may_send()
        started = time.monotonic()
        pacer.sent(pacer.mark())  # a write carried the notice
        assert not pacer.may_send()
        pacer.owe()  # two changes without one: one notice after the interval's end
        pacer.owe()
        await asyncio.sleep(0.2)
        assert sent == []  # a write may still carry it
        await asyncio.sleep(0.25)
        assert len(sent) == 1 and sent[0] - started >= 0.29
        await asyncio.sleep(0.4)
        assert len(sent) == 1  # nothing more was owed
    finally:
        await pacer.close()


async def test_a_notice_covers_only_what_was_owed_before_its_write_began() -> None:
    sent: list[float] = []

    async def send() -> None:
        sent.append(time.monotonic())

    pacer = Pacer(0.1, send)
    try:
        pacer.sent(pacer.mark())
        pacer.owe()  # owed, and covered by the next write's notice
        mark = pacer.mark()
        pacer.sent(mark)
        await asyncio.sleep(0.2)
        assert sent == []
        mark = pacer.mark()
        pacer.owe()  # committed while the write that sends was under way: still owed
        pacer.sent(mark)
        await asyncio.sleep(0.3)
        assert len(sent) == 1
    finally:
        await pacer.close()


async def test_a_failed_owed_notice_is_dropped_and_close_cancels_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        raise OSError("database down")

    pacer = Pacer(0.05, send)
    with caplog.at_level(logging.DEBUG, logger="tickerq.stores.sql.notify"):
        pacer.owe()
        await asyncio.sleep(0.3)
    assert calls == 1  # not retried: the dashboards' slow poll sees the change
    assert "database down" in caplog.text
    pacer.sent(pacer.mark())
    pacer.owe()
    await pacer.close()
    await asyncio.sleep(0.1)
    assert calls == 1

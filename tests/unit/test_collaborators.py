"""The engine and the managers are built from their collaborators, not from the app.

The managers get a store, a clock, a function registry and this process's engine
as a :class:`tickerq.local.LocalEngine`; here that is a recorder, so what the
managers ask of the engine is seen. The store is a real (memory) store.
"""

from __future__ import annotations

import ast
import contextlib
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support import START
from tickerq import EngineOptions, Status, TickerContext, TickerQ, TickerRouter
from tickerq.errors import FunctionNotFoundError, InvalidRequestError
from tickerq.events import EventBus
from tickerq.functions import FunctionRegistry, TickerFunction
from tickerq.managers import CronTickerManager, PauseManager, TimeTickerManager
from tickerq.stores import MemoryStore
from tickerq.testing import ManualClock

SRC = Path(__file__).resolve().parents[2] / "src" / "tickerq"


class Recorder:
    """A LocalEngine that records what it is asked."""

    def __init__(self) -> None:
        self.woken: list[datetime | None] = []
        self.cancelled: list[uuid.UUID] = []
        self.pauses_told = 0

    def wake(self, due: datetime | None = None) -> None:
        self.woken.append(due)

    def cancel_local(self, ticker_id: uuid.UUID) -> bool:
        self.cancelled.append(ticker_id)
        return False

    def is_running_elsewhere(self, ctx: TickerContext[Any]) -> bool:
        return False

    def pauses_changed(self) -> None:
        self.pauses_told += 1


async def _job(ctx: TickerContext[int]) -> None:
    return None


def _parts(max_payload_bytes: int = 1000) -> tuple[MemoryStore, ManualClock, FunctionRegistry]:
    store = MemoryStore()
    with contextlib.suppress(StopIteration):
        store.open().send(None)  # the managers use only an open store; this never suspends
    store.bind_events(EventBus())
    functions: dict[str, TickerFunction[Any]] = {"job": TickerRouter().function("job")(_job)}
    return (
        store,
        ManualClock(START),
        FunctionRegistry(functions, max_payload_bytes=max_payload_bytes),
    )


async def test_time_tickers_wake_the_engine_and_reach_a_local_run() -> None:
    store, clock, functions = _parts()
    engine = Recorder()
    tickers = TimeTickerManager(store, clock, functions, engine)
    later = START + timedelta(minutes=5)
    ticker = await tickers.add("job", request=1, execution_time=later)
    assert engine.woken == [later]
    await tickers.cancel(ticker.id)  # waiting: ended in the store, no run to reach
    assert engine.cancelled == []
    assert (await tickers.get(ticker.id)).status is Status.CANCELLED

    running = await tickers.add("job", request=2)
    [job] = await store.claim(
        clock.now(),
        node="n",
        lease_until=clock.now() + timedelta(minutes=1),
        slots=1,
        capacity={},
        functions=["job"],
    )
    assert job.id == running.id
    await tickers.cancel(running.id)
    assert engine.cancelled == [running.id]  # the run here is told at once


async def test_the_registry_checks_what_the_managers_store() -> None:
    store, clock, functions = _parts(max_payload_bytes=40)
    tickers = TimeTickerManager(store, clock, functions, Recorder())
    with pytest.raises(FunctionNotFoundError):
        await tickers.add("nope")
    with pytest.raises(InvalidRequestError):
        await tickers.add("job", request="not an int")
    with pytest.raises(InvalidRequestError, match="40"):
        await tickers.add("job", request=10**60)
    functions.max_payload_bytes = 0  # no limit
    await tickers.add("job", request=10**60)


async def test_cron_tickers_use_their_default_timezone_and_wake_the_engine() -> None:
    store, clock, functions = _parts()
    engine = Recorder()
    crons = CronTickerManager(store, clock, functions, engine, timezone="Asia/Tokyo")
    cron = await crons.add("job", "0 9 * * *", request=1)
    assert cron.timezone == "Asia/Tokyo"
    assert engine.woken == [cron.next_fire_at]
    await crons.run_now(cron.id)
    assert engine.woken[-1] == clock.now()


async def test_pauses_tell_the_engine_only_what_changed() -> None:
    store, clock, functions = _parts()
    engine = Recorder()
    pauses = PauseManager(store, clock, functions, engine, node_id="n1")
    pause = await pauses.pause("job")
    assert (pause.function, pause.paused_at, pause.paused_by) == ("job", START, "n1")
    assert engine.pauses_told == 1
    clock.tick(1)
    assert await pauses.pause("job") == pause  # paused already: nothing changed
    assert engine.pauses_told == 1
    assert await pauses.resume("job") is True
    assert await pauses.resume("job") is False  # nothing changed: the engine is not told
    assert engine.pauses_told == 2
    await pauses.pause_cluster(by="ops")
    assert await pauses.resume_cluster() is True
    assert engine.pauses_told == 4
    assert engine.woken == [] and engine.cancelled == []


def test_the_app_assembles_the_parts_and_keeps_its_settings_public() -> None:
    seen: list[BaseException] = []

    def handler(ctx: TickerContext[Any], error: BaseException) -> None:
        seen.append(error)

    app = TickerQ(max_payload_bytes=10, options=EngineOptions(lease=5))
    assert app.max_payload_bytes == 10
    app.max_payload_bytes = 20  # the managers check against the new limit
    assert app._registry.max_payload_bytes == 20
    assert app.exception_handler is None
    app.on_exception(handler)
    assert app.exception_handler is handler and app.engine.exception_handler is handler
    assert app.engine.store is app.store and app.engine.bus is app.events


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path",
    [*sorted((SRC / "managers").glob("*.py")), SRC / "local.py", SRC / "known_functions.py"],
    ids=lambda p: p.name,
)
def test_managers_do_not_know_the_app(path: Path) -> None:
    """Not even for type checking: what they use comes in as collaborators."""
    assert "tickerq.app" not in _imports(path)


def test_the_engine_and_the_context_reach_nothing_through_the_app() -> None:
    """They may name the app's type (ctx.app), never read its parts."""
    for name in ("engine.py", "context.py"):
        text = (SRC / name).read_text()
        for part in (".engine.", "app.store", "app.clock", "app.events", "app._functions"):
            assert part not in text, f"{name} reaches {part!r} through the app"

"""``TickerQ.configure``: store, node id and concurrency changed before the app opens
(what ``tickerq run --store/--node-id/--concurrency`` does to the app it loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tickerq import InvalidArgumentError, Status, TickerContext, TickerQ, TickerStateError
from tickerq.stores.base import Store
from tickerq.testing import run_until_idle


def _holders(root: object, target: object, depth: int = 4) -> list[str]:
    """Paths from ``root`` (attributes, dict values) to ``target`` within ``depth``
    steps: where a component still holds it."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(obj: object, path: str, left: int) -> None:
        if obj is target:
            found.append(path)
            return
        if left == 0 or id(obj) in seen or isinstance(obj, str | int | float | bytes | type):
            return
        seen.add(id(obj))
        items: list[tuple[str, Any]] = []
        if isinstance(obj, dict):
            items = [(f"[{k!r}]", v) for k, v in obj.items()]
        elif hasattr(obj, "__dict__"):
            items = [(f".{k}", v) for k, v in vars(obj).items()]
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                items.append((f".{name}", getattr(obj, name)))
        for name, value in items:
            walk(value, path + name, left - 1)

    walk(root, "app", depth)
    return found


async def test_configure_moves_everything_to_the_new_store(tmp_path: Path) -> None:
    app = TickerQ(node_id="code-id", max_concurrency=16)
    ran: list[str] = []

    @app.function()
    async def greet(ctx: TickerContext[str]) -> None:
        ran.append(ctx.request)

    old: Store = app.store
    app.configure(store=f"sqlite:///{tmp_path}/jobs.db", node_id="w-1", max_concurrency=3)
    assert _holders(app, old) == []  # no component kept the memory store
    assert (app.node_id, app.engine.node_id, app.max_concurrency) == ("w-1", "w-1", 3)
    assert app.store_url == f"sqlite:///{tmp_path}/jobs.db"
    async with app:
        ticker = await greet.enqueue("ops")
        await run_until_idle(app)
        assert (await app.time_tickers.get(ticker.id)).status is Status.DONE
        [attempt] = await app.time_tickers.attempts(ticker.id)
        assert attempt.node == "w-1"
        assert (await app.pauses.pause("greet")).paused_by == "w-1"
    assert ran == ["ops"]
    assert not old.is_open  # the memory store was never used


async def test_configure_checks_everything_before_changing_anything() -> None:
    app = TickerQ(node_id="code-id", max_concurrency=16)
    before = app.store
    for bad in (
        {"max_concurrency": 0},
        {"node_id": "x" * 300},
        {"store": "redis://nowhere"},
        {"store": "sqlite:///ok.db", "max_concurrency": -1},
    ):
        with pytest.raises(InvalidArgumentError):
            app.configure(**bad)
        assert (app.store, app.node_id, app.max_concurrency) == (before, "code-id", 16)


async def test_configure_is_refused_once_the_app_is_open() -> None:
    app = TickerQ()
    await app.open()
    try:
        with pytest.raises(TickerStateError, match="before it opens"):
            app.configure(max_concurrency=2)
    finally:
        await app.stop()

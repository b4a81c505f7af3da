"""`tickerq run` takes the store, the concurrency and the node id from its options or
from TICKERQ_* variables, replacing what the app's code sets; bad values are usage
errors naming the option. Runs the command as a subprocess on an app whose code
keeps its tickers in memory: only the override can make it work on the file."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from acceptance.test_cli_signals import Command
from tickerq import Status, TickerContext, TickerQ

APP = """
from tickerq import TickerContext, TickerQ

app = TickerQ()  # the code's own store: memory, which no other process sees


@app.function()
async def greet(ctx: TickerContext[str]) -> str:
    return "hello " + ctx.request
"""


async def _enqueue_and_wait(store: str) -> tuple[str, str | None]:
    """From another process's app: enqueue greet and wait for its run; its status and
    the node its attempt ran on."""
    app = TickerQ(store, node_id="producer")

    @app.function()
    async def greet(ctx: TickerContext[str]) -> None:  # the same name; only scheduled here
        return None

    await app.open()  # no engine: the worker runs it
    try:
        ticker = await app.time_tickers.add("greet", request="ops")
        for _ in range(400):
            row = await app.time_tickers.get(ticker.id)
            if row.status.is_final:
                break
            await asyncio.sleep(0.05)
        attempts = await app.time_tickers.attempts(ticker.id)
    finally:
        await app.stop()
    return row.status.value, attempts[0].node if attempts else None


async def _make_schema(store: str) -> None:
    app = TickerQ(store)
    await app.open()
    await app.stop()


@pytest.mark.parametrize("how", ["options", "environment"])
def test_run_takes_store_concurrency_and_node_id(tmp_path: Path, how: str) -> None:
    (tmp_path / "jobs.py").write_text(APP)
    store = f"sqlite:///{tmp_path}/jobs.db"
    asyncio.run(_make_schema(store))
    if how == "options":
        args = ["run", "jobs", "--store", store, "--concurrency", "3", "--node-id", "w-1"]
        env = {}
    else:
        args = ["run"]
        env = {
            "TICKERQ_APP": "jobs:app",
            "TICKERQ_STORE": store,
            "TICKERQ_CONCURRENCY": "3",
            "TICKERQ_NODE_ID": "w-1",
        }
    worker = Command(*args, cwd=tmp_path, **env)
    try:
        worker.wait_for_line(r"running jobs(:app)? as node w-1")
        status, node = asyncio.run(_enqueue_and_wait(store))
    finally:
        worker.proc.send_signal(signal.SIGTERM)
    code, _, err = worker.finish(30)
    assert (status, node) == (Status.DONE.value, "w-1")
    assert "max_concurrency=3" in err
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "redis://x"], "Invalid value for --store: unsupported store URL scheme"),
        (["--concurrency", "0"], "Invalid value for '--concurrency': 0 is not in the range"),
        (["--node-id", "x" * 300], "Invalid value for --node-id: node_id 'xxx"),
    ],
)
def test_bad_run_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "jobs.py").write_text(APP)
    done = subprocess.run(
        [sys.executable, "-m", "tickerq.cli", "run", "jobs", *args],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr

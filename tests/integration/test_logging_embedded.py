"""Embedded in an app, tickerq never configures logging: no handler, no level, anywhere.

Checked in a fresh interpreter (pytest configures logging of its own): it
imports tickerq, builds an app on a SQLite file (migrations run), runs jobs
that succeed, retry and fail, serves the dashboard for a moment, and then
compares every logger with what it was before the app. Records still reach
Python's last-resort handler, as for any library that logs and is not
configured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, json, logging, sys

def state():
    loggers = {
        name: logger
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    return {
        "root_handlers": [repr(h) for h in logging.root.handlers],
        "root_level": logging.getLevelName(logging.root.level),
        # (a library's own NullHandler, as Alembic's, is no configuration)
        "with_handlers": sorted(
            n
            for n, lg in loggers.items()
            if any(type(h) is not logging.NullHandler for h in lg.handlers)
            or (n.startswith("tickerq") and lg.handlers)
        ),
        "with_levels": sorted(n for n, lg in loggers.items() if lg.level and n.startswith("tickerq")),
        # (uvicorn mutes the access log the dashboard server turns off by cutting it off)
        "not_propagating": sorted(
            n for n, lg in loggers.items() if not lg.propagate and n != "uvicorn.access"
        ),
        "warnings_captured": logging.getLogger("py.warnings").handlers != [],
    }

before = state()
import tickerq
from tickerq import Status, TickerQ
from tickerq.dashboard.server import start_server
imported = state()


async def main(path):
    app = TickerQ(f"sqlite:///{path}", node_id="embedded")

    @app.function()
    async def fine() -> None:
        pass

    @app.function(retries=1, retry_intervals=[0.05])
    async def broken() -> None:
        raise ValueError("embedded failure")

    async with app:
        await fine.enqueue()
        ticker = await broken.enqueue()
        server = await start_server(app.dashboard(), "127.0.0.1", 0)
        await server.stop()
        for _ in range(200):
            if (await app.time_tickers.get(ticker.id)).status is Status.FAILED:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the broken job never ended")

asyncio.run(main(sys.argv[1]))
print(json.dumps({"before": before, "imported": imported, "after": state()}))
"""


def test_importing_and_running_tickerq_configures_no_logging(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "jobs.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    states = json.loads(result.stdout.splitlines()[-1])
    untouched = {
        "root_handlers": [],
        "root_level": "WARNING",
        "with_handlers": [],
        "with_levels": [],
        "not_propagating": [],
        "warnings_captured": False,
    }
    assert states["before"] == untouched
    assert states["imported"] == untouched
    assert states["after"] == untouched
    # Unconfigured, records at WARNING and above still reach stderr (logging's last resort).
    assert "attempt 1 of 2 failed" in result.stderr
    assert "failed for good" in result.stderr and "ValueError: embedded failure" in result.stderr
    assert "started" not in result.stderr  # INFO: dropped

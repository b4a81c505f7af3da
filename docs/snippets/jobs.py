"""jobs.py: the app a worker runs, with ``tickerq run jobs:app``."""

import logging
import os
from dataclasses import dataclass

from tickerq import EngineOptions, Priority, TickerContext, TickerQ

log = logging.getLogger(__name__)

app = TickerQ(
    os.environ.get("TICKERQ_STORE", "sqlite:///jobs.db"),  # tickerq run and tickerq db read it too
    max_concurrency=8,  # jobs at once on this node
    timezone="Europe/Berlin",  # for cron tickers that name none
    options=EngineOptions(grace_period=20),  # seconds running jobs get on SIGTERM
)


@dataclass
class Email:
    to: str
    subject: str


@app.function(retries=5, retry_intervals=[10, 60, 300], timeout=30)
def send_email(ctx: TickerContext[Email]) -> None:
    log.info("sending %r to %s", ctx.request.subject, ctx.request.to)


@app.function(cron="0 3 * * *", priority=Priority.LOW)  # 03:00 Berlin time, every day
async def nightly_cleanup() -> int:
    return 0  # rows removed: stored as the occurrence's result

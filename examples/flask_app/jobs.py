"""The background jobs of the Flask example, shared by the web app and the worker.

The web app imports this module to enqueue jobs; the worker runs them:
``tickerq run jobs:tq`` (from this directory). Both read the store's URL from
``TICKERQ_STORE``, so they share one database.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tickerq import TickerContext, TickerQ

tq = TickerQ(os.environ.get("TICKERQ_STORE", "sqlite:///example.db"))

REPORTS = Path(os.environ.get("REPORTS_DIR", "reports"))
"""Where the finished reports are written."""


class SalesReport(BaseModel):
    """Which report to build: validated by the view, and again when enqueued."""

    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-03"])
    region: Literal["north", "south", "east", "west"]


class ReportFile(BaseModel):
    """What the job returns: stored as the ticker's result."""

    file: str
    rows: int
    total: int


@tq.function(retries=2, retry_intervals=[30, 120], timeout=120)
def build_sales_report(ctx: TickerContext[SalesReport]) -> ReportFile:
    """Build a CSV report (here from made-up sales; a real app would query its database)."""
    report = ctx.request
    days = random.Random(f"{report.month}-{report.region}")  # the same numbers every time
    rows = [(f"{report.month}-{day:02d}", days.randint(0, 5000)) for day in range(1, 29)]
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"sales-{report.month}-{report.region}.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["day", "sales"])
        writer.writerows(rows)
    return ReportFile(file=str(path), rows=len(rows), total=sum(sales for _, sales in rows))

"""The background jobs of the FastAPI example, shared by the web app and the worker.

The web app imports this module to enqueue jobs; the worker runs them:
``tickerq run jobs:tq`` (from this directory). Both read the store's URL from
``TICKERQ_STORE``, so they share one database.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from tickerq import TickerContext, TickerQ

tq = TickerQ(os.environ.get("TICKERQ_STORE", "sqlite:///example.db"))

OUTBOX = Path(os.environ.get("OUTBOX_DIR", "outbox"))
"""Where the "sent" emails land (a real app would talk to its mail server)."""


class WelcomeEmail(BaseModel):
    """The request of a welcome email: validated by FastAPI, and again when enqueued."""

    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    name: str = Field(min_length=1, max_length=100)


class Delivery(BaseModel):
    """What the job returns: stored as the ticker's result."""

    file: str
    sent_at: datetime


@tq.function(retries=3, retry_intervals=[10, 60, 300], timeout=30)
def send_welcome_email(ctx: TickerContext[WelcomeEmail]) -> Delivery:
    """Send the email. A sync job runs in a thread, so a blocking SMTP client is fine here."""
    email = ctx.request
    OUTBOX.mkdir(parents=True, exist_ok=True)
    path = OUTBOX / f"{ctx.id}.eml"
    path.write_text(
        f"To: {email.to}\nSubject: Welcome, {email.name}!\n\nThanks for signing up.\n",
        encoding="utf-8",
    )
    return Delivery(file=str(path), sent_at=datetime.now(UTC))

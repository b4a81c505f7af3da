"""jobs.py: the tickerq app and its jobs, imported by the web app and by the worker."""

import os

from pydantic import BaseModel

from tickerq import TickerContext, TickerQ

tq = TickerQ(os.environ.get("TICKERQ_STORE", "sqlite:///jobs.db"))  # e.g. postgresql://app@db/app


class WelcomeEmail(BaseModel):
    to: str
    name: str


def send_mail(to: str, subject: str) -> str:
    """Stands in for your mail client (smtplib, an email API)."""
    return f"sent {subject!r} to {to}"


@tq.function(retries=3, retry_intervals=[10, 60, 300], timeout=30)
def send_welcome_email(ctx: TickerContext[WelcomeEmail]) -> str:
    return send_mail(ctx.request.to, f"Welcome, {ctx.request.name}!")

"""Typing sample: mypy --strict must REJECT the marked lines (tests/unit/test_typing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import uuid4

from tickerq import TickerContext, TickerQ

app = TickerQ()


@dataclass
class Email:
    to: str


@dataclass
class Sms:
    number: str


@app.function()
def send_email(ctx: TickerContext[Email]) -> None:
    print(ctx.request.to)


@app.function()
def no_request() -> None:
    pass


async def use() -> None:
    await send_email.enqueue(Sms(number="1"))  # error: wrong request type
    await send_email.schedule("not an email", after=5)  # error: wrong request type
    await no_request.enqueue(Email(to="x"))  # error: takes no request
    email = Email(to="x")
    await send_email.enqueue(email, unique_key="k", on_conflict="overwrite")  # error: no policy
    await send_email.enqueue(Email(to="x"), unique_key=42)  # error: keys are text
    await app.enqueue(send_email, Sms(number="1"))  # error: wrong request type
    await app.enqueue(42, {"to": "x"})  # error: a handle or a name


@app.function()
def reads_wrong_field(ctx: TickerContext[Email]) -> None:
    print(ctx.request.number)  # error: Email has no attribute number


def use_blocking() -> None:
    send_email.sync.enqueue(Sms(number="1"))  # error: wrong request type
    app.sync.enqueue(send_email, Sms(number="1"))  # error: wrong request type
    app.sync.schedule(send_email, Sms(number="1"), after=5)  # error: wrong request type
    no_request.sync.schedule(Email(to="x"), after=5)  # error: takes no request
    app.sync.time_tickers.get("not a uuid")  # error: ids are UUIDs
    app.sync.time_tickers.add("send_email", when=5)  # error: no such keyword
    count: str = app.sync.time_tickers.count()  # error: returns an int
    app.sync.cron_tickers.pause(uuid4())  # error: no such method
    print(count)


def use_django() -> None:
    from tickerq.contrib.django import enqueue_on_commit, job

    @job
    def notify(ctx: TickerContext[Email]) -> None:
        print(ctx.request.to)

    enqueue_on_commit(notify, Sms(number="1"))  # error: wrong request type
    notify.sync.enqueue(Sms(number="1"))  # error: wrong request type
    enqueue_on_commit(notify, Email(to="x"), after="soon")  # error: after is seconds

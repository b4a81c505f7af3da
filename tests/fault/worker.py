"""A tickerq node for the fault tests: one OS process running ``app.serve()``.

Run as ``python tests/fault/worker.py --store URL --node-id w1 --records DIR``.
Every execution of a job function appends lines to ``DIR/<node>.<pid>.log``
(one file per process, opened O_APPEND and written with one ``os.write`` per
line, so a ``kill -9`` loses nothing that was written)::

    start <ticker id> <retry_count> <node> <pid> <function> <scheduled_for>
    end   <ticker id> <retry_count> <node> <pid> <function> <scheduled_for> <ok|fail>

The test counts ``start`` lines per ticker to find double executions; a
``start`` without an ``end`` from a killed process is a job that was running
when the process died.

Functions:

* ``job`` (async) and ``job_sync`` (sync, runs in the thread pool): sleep
  ``request["sleep"]`` seconds; raise when ``request["fail"]`` (no retries,
  so those tickers end FAILED);
* ``job_sync`` with ``request["once"]`` (a file path) sleeps only in the first
  run ever (it creates the file), so a re-run after a stop is quick;
* ``poison``: ``os._exit(17)``: kills every node that runs it;
* ``tick_0`` .. ``tick_4``: for crons the test adds itself;
* with ``--decorated-crons N``: ``seeded_0`` .. ``seeded_{N-1}`` decorated
  with ``cron=...``, so every start seeds them;
* with ``--flow-rate RATE``: ``limited`` (``rate_limit=RATE``) and ``keyed``
  (at most ``--flow-per-key`` runs, default 1, per ``request["key"]``), both
  sleeping ``request["sleep"]``;
* ``uniq``: sleeps ``request["sleep"]``; with ``--unique-keys N`` the process
  also enqueues ``uniq`` jobs from the moment its engine runs, for
  ``--enqueue-seconds`` s: each with ``unique_key`` one of ``u0`` ..
  ``u{N-1}`` (also ``request["key"]``), ``on_conflict`` "keep" or "replace",
  due now or a moment later, three at once with one key. Each enqueue's outcome is one line of
  ``DIR/<node>.<pid>.enq``: ``<key> <on_conflict> <outcome> <ticker id>``
  (``<key> <on_conflict> ERROR <error>`` if it raised), then ``done`` when
  the loop ended.

When the engine runs, the process prints ``READY <node> <pid>`` on stdout.
It stops gracefully on SIGTERM/SIGINT (``TickerQ.serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from tickerq import EngineOptions, TickerContext, TickerQ
from tickerq.events import EngineStateChanged, Event

SEEDED_EXPRESSIONS = ("* * * * * *", "*/2 * * * * *", "0 * * * * *", "*/5 * * * *", "0 0 * * *")
"""Expressions of the decorated crons ``seeded_<i>`` (cycled)."""

TICK_FUNCTIONS = tuple(f"tick_{i}" for i in range(5))


class Recorder:
    """Appends one line per event to this process's own file."""

    def __init__(self, directory: str, node: str) -> None:
        self.node = node
        self.pid = os.getpid()
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{node}.{self.pid}.log")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, event: str, ctx: TickerContext[Any], extra: str = "") -> None:
        when = ctx.scheduled_for.isoformat() if ctx.scheduled_for is not None else "-"
        line = (
            f"{event} {ctx.id} {ctx.retry_count} {self.node} {self.pid} {ctx.function} {when}"
            f"{' ' + extra if extra else ''}\n"
        )
        os.write(self._fd, line.encode())


def _sleep(request: dict[str, Any]) -> None:
    """Sleep ``request["sleep"]`` s; with ``request["once"]`` (a marker file), only the
    first time ever."""
    once = request.get("once")
    if once is not None:
        if os.path.exists(once):
            return
        open(once, "w").close()
    time.sleep(float(request.get("sleep", 0)))


def _register_sync_jobs(app: TickerQ, record: Any) -> None:
    @app.function("job_sync")
    def job_sync(ctx: TickerContext[Any]) -> None:
        request = ctx.request or {}
        record("start", ctx)
        _sleep(request)
        if request.get("fail"):
            record("end", ctx, "fail")
            raise RuntimeError(f"deliberate failure of {ctx.id}")
        record("end", ctx, "ok")

    @app.function("poison")
    def poison(ctx: TickerContext[Any]) -> None:
        record("start", ctx)
        os._exit(17)  # kills the node that runs it, every time


def _register_flow_jobs(app: TickerQ, record: Any, rate: str, per_key: int = 1) -> None:
    async def flow_job(ctx: TickerContext[Any]) -> None:
        record("start", ctx)
        await asyncio.sleep(float((ctx.request or {}).get("sleep", 0)))
        record("end", ctx, "ok")

    app.function("limited", rate_limit=rate)(flow_job)
    app.function("keyed", concurrency_key=lambda request: request["key"], max_per_key=per_key)(
        flow_job
    )


def _register_unique_job(app: TickerQ, record: Any) -> None:
    @app.function("uniq")
    async def uniq(ctx: TickerContext[Any]) -> None:
        record("start", ctx)
        await asyncio.sleep(float((ctx.request or {}).get("sleep", 0)))
        record("end", ctx, "ok")


async def enqueue_unique(app: TickerQ, directory: str, keys: int, seconds: float) -> None:
    """Enqueue ``uniq`` jobs with random keys for ``seconds`` (see the module's doc)."""
    path = os.path.join(directory, f"{app.node_id}.{os.getpid()}.enq")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rng = random.Random(f"{app.node_id}-{os.getpid()}")
    handle = app.get_function("uniq")
    deadline = time.monotonic() + seconds
    n = 0

    async def one(key: str, policy: str, after: float) -> None:
        nonlocal n
        n += 1
        request = {"key": key, "sleep": 0.15, "by": app.node_id, "n": n}
        try:
            ticker = await handle.schedule(
                request,
                after=after,
                unique_key=key,
                on_conflict=policy,  # type: ignore[arg-type]
            )
        except Exception as exc:  # the test fails on it, with the reason
            line = f"{key} {policy} ERROR {type(exc).__name__}: {exc}".replace("\n", " ")
            os.write(fd, line.encode() + b"\n")
            return
        assert ticker.enqueued is not None
        os.write(fd, f"{key} {policy} {ticker.enqueued.value} {ticker.id}\n".encode())

    try:
        while time.monotonic() < deadline:
            # a burst of enqueues of one key at once (each on its own connection)
            key = f"u{rng.randrange(keys)}"
            after = rng.choice((0.0, 0.0, 0.1, 0.3))
            await asyncio.gather(
                *(one(key, rng.choice(("keep", "replace")), after) for _ in range(3))
            )
            await asyncio.sleep(rng.uniform(0.0, 0.03))
        os.write(fd, b"done\n")
    finally:
        os.close(fd)


def build_app(
    store: str,
    *,
    node_id: str,
    records: str | None,
    lease: float = 3.0,
    heartbeat: float = 1.0,
    poll: float = 0.5,
    concurrency: int = 32,
    decorated_crons: int = 0,
    grace: float = 3.0,
    max_stale_restarts: int = 3,
    flow_rate: str | None = None,
    flow_per_key: int = 1,
) -> TickerQ:
    """The fault-test app; the test process builds it too (without a recorder) to seed."""
    options = EngineOptions(
        lease=lease,
        heartbeat_interval=heartbeat,
        poll_interval=poll,
        grace_period=grace,
        stop_margin=1.0,
        retention=None,
        max_stale_restarts=max_stale_restarts,
    )
    app = TickerQ(store, node_id=node_id, max_concurrency=concurrency, options=options)
    recorder = Recorder(records, node_id) if records else None

    def record(event: str, ctx: TickerContext[Any], extra: str = "") -> None:
        if recorder is not None:
            recorder.write(event, ctx, extra)

    @app.function("job")
    async def job(ctx: TickerContext[Any]) -> None:
        request = ctx.request or {}
        record("start", ctx)
        await asyncio.sleep(float(request.get("sleep", 0)))
        if request.get("fail"):
            record("end", ctx, "fail")
            raise RuntimeError(f"deliberate failure of {ctx.id}")
        record("end", ctx, "ok")

    _register_sync_jobs(app, record)

    def make_tick(name: str) -> None:
        async def tick(ctx: TickerContext[Any]) -> None:
            record("start", ctx)
            await asyncio.sleep(0.01)
            record("end", ctx, "ok")

        app.function(name)(tick)

    for name in TICK_FUNCTIONS:
        make_tick(name)

    if flow_rate is not None:
        _register_flow_jobs(app, record, flow_rate, flow_per_key)
    _register_unique_job(app, record)

    for i in range(decorated_crons):
        expression = SEEDED_EXPRESSIONS[i % len(SEEDED_EXPRESSIONS)]

        async def seeded(ctx: TickerContext[Any]) -> None:
            record("start", ctx)
            record("end", ctx, "ok")

        app.function(f"seeded_{i}", cron=expression)(seeded)

    return app


def _announce_ready(app: TickerQ, then: Callable[[], object] | None = None) -> None:
    """Print READY once the engine runs (then stop listening: events cost a little),
    and call ``then``."""

    def on_event(event: Event) -> None:
        if isinstance(event, EngineStateChanged) and event.state == "running":
            unsubscribe()
            print(f"READY {app.node_id} {os.getpid()}", flush=True)
            if then is not None:
                then()

    unsubscribe = app.events.subscribe(on_event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--records", default=None, help="directory of the execution records")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--decorated-crons", type=int, default=0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--max-stale-restarts", type=int, default=3)
    parser.add_argument("--flow-rate", default=None, help="register limited and keyed")
    parser.add_argument("--flow-per-key", type=int, default=1, help="keyed's max_per_key")
    parser.add_argument("--unique-keys", type=int, default=0, help="enqueue uniq jobs")
    parser.add_argument("--enqueue-seconds", type=float, default=5.0)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--start-at", type=float, default=None, help="wall-clock time (epoch s) to start at"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s [{args.node_id}/%(process)d]: %(message)s",
    )
    app = build_app(
        args.store,
        node_id=args.node_id,
        records=args.records,
        lease=args.lease,
        heartbeat=args.heartbeat,
        poll=args.poll,
        concurrency=args.concurrency,
        decorated_crons=args.decorated_crons,
        grace=args.grace,
        max_stale_restarts=args.max_stale_restarts,
        flow_rate=args.flow_rate,
        flow_per_key=args.flow_per_key,
    )
    if args.start_at is not None:  # imports done: start together with the others
        time.sleep(max(0.0, args.start_at - time.time()))
    enqueuing: list[asyncio.Task[None]] = []

    def start_enqueuing() -> None:
        if args.unique_keys and args.records:
            task = asyncio.get_running_loop().create_task(
                enqueue_unique(app, args.records, args.unique_keys, args.enqueue_seconds)
            )
            enqueuing.append(task)  # keep a reference until it ends

    _announce_ready(app, start_enqueuing)
    app.run()
    print(f"STOPPED {args.node_id} {os.getpid()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One worker process of the PostgreSQL benchmark, started by ``bench/pg.py``.

Usage: ``python bench/pg_workers.py ROLE [options]``

ROLE is one of:

- ``tickerq``: a TickerQ app on ``--url`` with ``noop`` and ``probe`` registered
  and ``--concurrency`` slots. It opens the store, prints ``ready``, starts its
  engine when a ``go`` line arrives on stdin and stops at a ``stop`` line (or
  end of input). With ``--count-sql`` it counts the statements its store sends
  between ``go`` and ``stop``; with ``--out`` it writes the lateness each
  ``probe`` saw (JSON list of seconds) there on stop.
- ``procrastinate``: a Procrastinate worker on ``--url`` (libpq conninfo),
  same ready/go/stop protocol.
- ``sqlite-drain``: the whole SQLite drain in this one process (a temporary
  database, ``--n`` due no-op jobs, one engine), figures on stdout.

The last stdout line is a JSON object with this process's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tickerq import TickerContext, TickerQ, TimeTickerSpec

Result = dict[str, Any]


async def read_line() -> str:
    """The next stdin line without blocking the loop ('' at end of input)."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def wait_for(word: str) -> None:
    while True:
        line = await read_line()
        if not line or line.strip() == word:
            return


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class SqlCounter:
    """Counts what SQLAlchemy sends: cursor executes and statements (executemany rows)."""

    def __init__(self) -> None:
        self.active = False
        self.round_trips = 0
        self.statements = 0
        self.by_kind: dict[str, int] = {}

    def __call__(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if not self.active:
            return
        rows = len(parameters) if executemany and parameters is not None else 1
        self.round_trips += 1
        self.statements += rows
        flat = " ".join(statement.split())
        kind = " ".join(flat.split(None, 3)[:3])
        where = flat.find(" WHERE ")
        if where >= 0:
            kind += " ... WHERE " + flat[where + 7 : where + 67]
        key = f"{kind} (executemany)" if executemany else kind
        self.by_kind[key] = self.by_kind.get(key, 0) + rows


class WireCounter:
    """Counts, from asyncpg's query log, what SQLAlchemy's listener does not see:
    transaction control (BEGIN/COMMIT/ROLLBACK), pool pre-pings and the store's
    hot-path statement, which is sent on a raw asyncpg connection."""

    def __init__(self) -> None:
        self.active = False
        self.hot = 0
        self.control = 0
        self.pings = 0

    def __call__(self, record: Any) -> None:
        if not self.active:
            return
        query = record.query.strip().rstrip(";").upper()
        if query in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.control += 1
        elif query == "":
            self.pings += 1
        elif query.startswith(("WITH FIN AS", "SELECT * FROM PG_TEMP.TICKERQ_CLAIM_")):
            self.hot += 1  # the hot path's claim (under limits: a function of the session)
        elif query.startswith("BEGIN; SELECT PG_ADVISORY_XACT_LOCK"):
            self.hot += 1  # a gated claim's locks where it has no such function

    def install(self) -> None:
        """Log the queries of every asyncpg connection this process opens from now on."""
        import asyncpg

        connect = asyncpg.connect

        async def logged_connect(*args: Any, **kwargs: Any) -> Any:
            conn = await connect(*args, **kwargs)
            conn.add_query_logger(self)
            return conn

        asyncpg.connect = logged_connect


def build_tickerq(
    url: str,
    concurrency: int,
    out: list[float],
    rate: str = "",
    per_key: int = 0,
    request: bool = False,
) -> TickerQ:
    """The bench app; ``rate`` and ``per_key`` put limits on ``noop`` (bench/limits.py);
    ``request``: noop takes its request (as it does with a per-key limit) without one."""
    app = TickerQ(url, max_concurrency=concurrency)
    limits: dict[str, Any] = {}
    if rate:
        limits["rate_limit"] = rate
    if per_key:
        limits.update(concurrency_key=lambda request: request["k"], max_per_key=per_key)

    async def noop() -> None:
        return None

    async def keyed_noop(ctx: TickerContext[Any]) -> None:
        return None

    # the key is read from the request: only then does noop take one
    app.function("noop", **limits)(keyed_noop if per_key or request else noop)

    @app.function()
    async def probe(ctx: TickerContext[float]) -> None:
        out.append(time.time() - ctx.request)

    return app


async def tickerq_worker(args: argparse.Namespace) -> Result:
    from sqlalchemy import event

    lateness: list[float] = []
    wire = WireCounter()
    if args.count_sql:
        wire.install()
    app = build_tickerq(args.url, args.concurrency, lateness, args.rate, args.per_key, args.request)
    await app.open()
    counter = SqlCounter()
    if args.count_sql:
        event.listen(app.store.sa_engine.sync_engine, "before_cursor_execute", counter)  # type: ignore[attr-defined]
    say("ready")
    await wait_for("go")
    counter.active = wire.active = True
    await app.start()
    await wait_for("stop")
    counter.active = wire.active = False
    await app.stop(grace=5)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, json.dumps(lateness))
    return {
        "role": "tickerq",
        "ran": len(lateness),
        "round_trips": counter.round_trips + wire.hot + wire.control + wire.pings,
        "statements": counter.statements + wire.hot,
        "hot_statements": wire.hot,
        "transaction_control": wire.control,
        "pings": wire.pings,
        "by_kind": {**counter.by_kind, "hot path: finish + claim (one statement)": wire.hot},
    }


async def procrastinate_worker(args: argparse.Namespace) -> Result:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        say("ready")
        await wait_for("go")
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=args.concurrency, wait=True, install_signal_handlers=False
            )
        )
        await wait_for("stop")
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(worker, timeout=10)
    return {"role": "procrastinate"}


async def sqlite_drain(args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        app = build_tickerq(url, args.concurrency, [])
        await app.open()
        await app.time_tickers.add_many([TimeTickerSpec(function="noop") for _ in range(args.n)])
        t_start = time.perf_counter()
        await app.start()
        await app.engine.wait_idle()
        elapsed = time.perf_counter() - t_start
        finished = await app.time_tickers.count(status=["DONE", "DUE_DONE"])
        due_done = await app.time_tickers.count(status="DUE_DONE")
        await app.stop()
    if finished != args.n:
        raise SystemExit(f"sqlite drain: {finished} of {args.n} DONE/DUE_DONE")
    return {
        "role": "sqlite-drain",
        "n": args.n,
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "finished": finished,
        "due_done": due_done,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="One process of bench/pg.py.")
    parser.add_argument("role", choices=("tickerq", "procrastinate", "sqlite-drain"))
    parser.add_argument("--url", default="")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--count-sql", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--rate", default="", help="rate_limit of noop")
    parser.add_argument("--per-key", type=int, default=0, help="max_per_key of noop")
    parser.add_argument(
        "--request", action="store_true", help="noop takes its request (no limit needed)"
    )
    args = parser.parse_args(argv)
    runner = {
        "tickerq": tickerq_worker,
        "procrastinate": procrastinate_worker,
        "sqlite-drain": sqlite_drain,
    }[args.role]
    result = asyncio.run(runner(args))
    say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

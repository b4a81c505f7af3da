"""Readiness on PostgreSQL: a node whose database connection is cut is not ready
(503 "store unreachable") and ready again once the database is back.

The node reaches the server through a TCP proxy this test owns, so "the network
to the database is gone" is exact: the proxy stops listening and drops every
connection it carries (pool, LISTEN, hot path), then comes back on the same port.
Needs the server of ``$TICKERQ_TEST_POSTGRESQL``; skipped when it is unreachable,
unless ``CI`` is ``true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tickerq import EngineOptions, TickerQ
from tickerq.health import HealthChecks
from tickerq.stores.sql import SqlStore

SERVER_URL = make_url(
    os.environ.get("TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
).set(drivername="postgresql")


class Proxy:
    """Forwards 127.0.0.1:port to the PostgreSQL server; can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def cut(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport: Any = writer.transport
            transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    import asyncpg

    dsn = SERVER_URL.set(database="postgres").render_as_string(hide_password=False)
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL is unreachable: {exc!r}")
    name = f"tickerq_ready_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_node_cut_off_from_postgresql_is_not_ready_until_it_is_back(
    database: str,
) -> None:
    proxy = Proxy((SERVER_URL.host or "127.0.0.1", SERVER_URL.port or 5432))
    await proxy.start()
    url = SERVER_URL.set(host="127.0.0.1", port=proxy.port, database=database).render_as_string(
        hide_password=False
    )
    store = SqlStore(url)
    app = TickerQ(store, options=EngineOptions(heartbeat_interval=1.0))
    checks = HealthChecks(app, engine=True, store_timeout=2.0)
    await app.start()
    try:
        ready = await checks.ready()
        assert ready.ready, ready.body()
        assert ready.checks["heartbeat"] == "fresh"

        await proxy.cut()
        cut = await checks.ready()
        assert cut.status_code == 503
        assert cut.reason == "store unreachable", cut.body()

        await proxy.start()  # the same port again
        for _ in range(50):
            if (again := await checks.ready()).ready:
                break
            await asyncio.sleep(0.1)
        assert again.ready, again.body()
    finally:
        with contextlib.suppress(Exception):
            await app.stop(grace=0)
        await checks.close()
        await proxy.cut()

"""Schema migrations on SQLite and PostgreSQL: creation, checks, upgrades, the CLI.

PostgreSQL tests get a database of their own, created on the server of
``$TICKERQ_TEST_POSTGRESQL`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
as in the contract suite; only its server is used) and dropped afterwards. They are skipped if it cannot be reached, unless ``CI`` is
``true``: then they fail.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tickerq.enums import Status, TickerKind
from tickerq.errors import TickerStateError
from tickerq.stores.base import Outcome
from tickerq.stores.sql import SqlStore, migrate
from tickerq.stores.sql.dialects import for_url
from tickerq.stores.sql.schema import SCHEMA_VERSION, metadata, tables

SERVER_URL = make_url(
    os.environ.get("TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
).set(drivername="postgresql")
IN_CI = os.environ.get("CI") == "true"


# -- databases ------------------------------------------------------------------------


async def _admin() -> Any:
    import asyncpg

    dsn = SERVER_URL.set(database="postgres").render_as_string(hide_password=False)
    return await asyncpg.connect(dsn, timeout=5)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    import asyncpg

    try:
        admin = await _admin()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = SERVER_URL.set(database="postgres").render_as_string(hide_password=True)
        if IN_CI:
            pytest.fail(f"PostgreSQL at {where} is unreachable in CI: {exc!r}")
        pytest.skip(f"PostgreSQL at {where} is unreachable: {exc!r}")
    name = f"tickerq_mig_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield SERVER_URL.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'tickerq.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    """Each test once per database family."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """A bare engine on the test's database (nothing created yet)."""
    created = for_url(url).create_engine(5)
    yield created
    await created.dispose()


async def _sync(engine: AsyncEngine, fn: Any, *args: Any) -> Any:
    async with engine.begin() as conn:
        return await conn.run_sync(fn, *args)


def _layout(conn: Connection) -> dict[str, Any]:
    """Tables (without the version table), their columns, indexes, uniques and FKs."""
    inspector = sa.inspect(conn)
    found: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table == migrate.VERSION_TABLE:
            continue
        found[table] = {
            "columns": {c["name"] for c in inspector.get_columns(table)},
            "indexes": {
                i["name"]
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")
            },
            "unique": {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)},
            "foreign_keys": {
                (tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                for f in inspector.get_foreign_keys(table)
            },
        }
    return found


def _expected_layout() -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for name, table in tables.items():
        expected[name] = {
            "columns": {c.name for c in table.columns},
            "indexes": {i.name for i in table.indexes},
            "unique": {
                tuple(c.name for c in u.columns)
                for u in table.constraints
                if isinstance(u, sa.UniqueConstraint)
            }
            | {(c.name,) for c in table.columns if c.unique},
            "foreign_keys": {
                ((f.parent.name,), f.column.table.name, f.ondelete) for f in table.foreign_keys
            },
        }
    return expected


def _diff(conn: Connection) -> list[Any]:
    """What Alembic's autogenerate sees between the database and schema.py."""
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "include_name": lambda name, kind, _parent: (
                kind != "table" or name != migrate.VERSION_TABLE
            ),
        },
    )
    return list(compare_metadata(context, metadata))


def _version_rows(conn: Connection) -> list[str]:
    rows = conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}"))
    return [r[0] for r in rows]


def _make_behind(conn: Connection) -> None:
    """The state of a stamp to base: an empty version table and no tickerq tables."""
    metadata.drop_all(conn)
    conn.execute(sa.text(f"DELETE FROM {migrate.VERSION_TABLE}"))


def _has_table(conn: Connection, name: str) -> bool:
    return sa.inspect(conn).has_table(name)


# -- the schema ----------------------------------------------------------------------


def test_head_is_schema_version() -> None:
    assert migrate.head_revision() == SCHEMA_VERSION == "0008"


async def test_fresh_database_gets_exactly_the_schema(url: str) -> None:
    store = SqlStore(url)
    await store.open()
    try:
        layout = await _sync(store.sa_engine, _layout)
        assert layout == _expected_layout()
        assert await _sync(store.sa_engine, _diff) == []
        assert await migrate.current_revision(store.sa_engine) == SCHEMA_VERSION
        await migrate.check(store.sa_engine)
    finally:
        await store.close()


async def test_upgrade_creates_the_schema_and_a_second_upgrade_does_nothing(
    engine: AsyncEngine,
) -> None:
    assert await migrate.current_revision(engine) is None
    assert (await migrate.status(engine)).state == "fresh"
    with pytest.raises(TickerStateError, match="no tickerq tables"):
        await migrate.check(engine)

    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == SCHEMA_VERSION
    assert set((await _sync(engine, _layout)).keys()) == set(tables)

    assert await migrate.upgrade_from_to(engine) == (SCHEMA_VERSION, SCHEMA_VERSION)
    await migrate.upgrade(engine, SCHEMA_VERSION)
    assert await _sync(engine, _version_rows) == [SCHEMA_VERSION]
    assert await _sync(engine, _diff) == []


async def test_unknown_target_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(TickerStateError, match="unknown tickerq schema revision '0042'"):
        await migrate.upgrade(engine, "0042")
    assert not await _sync(engine, _has_table, migrate.VERSION_TABLE)


# -- opening a store -----------------------------------------------------------------


async def test_a_database_behind_is_refused_without_auto_upgrade(
    url: str, engine: AsyncEngine
) -> None:
    await migrate.upgrade(engine)
    await _sync(engine, _make_behind)
    assert (await migrate.status(engine)).state == "behind"

    store = SqlStore(url)
    with pytest.raises(TickerStateError) as caught:
        await store.open()
    message = str(caught.value)
    assert for_url(url).safe_url in message
    assert f"has no tickerq tables, but this tickerq needs {SCHEMA_VERSION}" in message
    assert "tickerq db upgrade --store URL" in message
    assert "auto_upgrade=True" in message
    with pytest.raises(TickerStateError, match="not open"):
        _ = store.sa_engine  # a failed open leaves nothing behind
    with pytest.raises(TickerStateError, match="has no tickerq tables"):
        await migrate.check(engine)
    assert not await _sync(engine, _has_table, "tickerq_tickers")

    upgrading = SqlStore(url, auto_upgrade=True)
    await upgrading.open()
    try:
        assert await migrate.current_revision(upgrading.sa_engine) == SCHEMA_VERSION
        assert await _sync(upgrading.sa_engine, _layout) == _expected_layout()
    finally:
        await upgrading.close()
    store = SqlStore(url)  # now current: opens without auto_upgrade
    await store.open()
    await store.close()


async def test_a_revision_from_a_newer_tickerq_is_refused(url: str, engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    for auto_upgrade in (False, True):
        store = SqlStore(url, auto_upgrade=auto_upgrade)
        with pytest.raises(TickerStateError, match="schema 0099, which this tickerq does not know"):
            await store.open()
    with pytest.raises(TickerStateError, match="0099"):
        await migrate.upgrade(engine)


async def test_tables_from_before_migrations_are_stamped(url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)  # what tickerq did before migrations
    state = await migrate.status(engine)
    assert (state.state, state.revision, state.effective_revision, state.up_to_date) == (
        "unversioned",
        None,
        "0001",
        False,
    )

    # they are 0001, behind: refused without auto_upgrade (and left as they were) ...
    with pytest.raises(TickerStateError, match="has tickerq schema 0001, but this tickerq needs"):
        await SqlStore(url).open()
    assert await migrate.current_revision(engine) is None
    # ... and upgraded with it (the latest indexes already exist here: created if missing)
    store = SqlStore(url, auto_upgrade=True)
    await store.open()
    await store.close()
    assert await migrate.current_revision(engine) == SCHEMA_VERSION
    assert await _sync(engine, _diff) == []

    # the version row deleted by hand, the tables still there: stamped again, upgraded
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"DELETE FROM {migrate.VERSION_TABLE}"))
    await migrate.upgrade(engine)
    assert await _sync(engine, _version_rows) == [SCHEMA_VERSION]


async def test_partial_tickerq_tables_are_refused(url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(
            metadata.create_all, [tables["tickerq_cron_tickers"], tables["tickerq_tickers"]]
        )
    with pytest.raises(
        TickerStateError, match="not tickerq_attempts, tickerq_key_leases, tickerq_nodes"
    ):
        await SqlStore(url).open()


async def _switch_sqlite_to_wal(url: str) -> None:
    """Connect once, so the file is in WAL mode before the concurrent connects.

    Several first connections to a new SQLite file race to switch it to WAL, and
    ``PRAGMA journal_mode=WAL`` can fail at once with "database is locked" (SQLite
    does not wait on the busy timeout there): a problem of dialects' connect
    settings, not of migrations, which these tests are about.
    """
    if url.startswith("sqlite"):
        engine = for_url(url).create_engine(1)
        async with engine.connect():
            pass
        await engine.dispose()


async def test_concurrent_upgrades_upgrade_once(url: str) -> None:
    await _switch_sqlite_to_wal(url)
    engines = [for_url(url).create_engine(1) for _ in range(5)]
    try:
        await asyncio.gather(*(migrate.upgrade(e) for e in engines))
        assert await _sync(engines[0], _version_rows) == [SCHEMA_VERSION]
        assert await _sync(engines[0], _diff) == []
    finally:
        for e in engines:
            await e.dispose()


async def test_concurrent_opens_create_once(url: str) -> None:
    await _switch_sqlite_to_wal(url)
    stores = [SqlStore(url, pool_size=1) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert await _sync(stores[0].sa_engine, _version_rows) == [SCHEMA_VERSION]
    finally:
        for s in stores:
            await s.close()


# -- the CLI -------------------------------------------------------------------------


async def tickerq(*args: str, **env: str) -> tuple[int, str, str]:
    """Run ``tickerq`` as a user would; exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickerq.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if k != "TICKERQ_STORE"}, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=25)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_current_and_upgrade(url: str) -> None:
    safe = for_url(url).safe_url
    code, out, _ = await tickerq("db", "current", "--store", url)
    assert code == 1
    assert out.startswith(f"{safe}: none (")

    code, out, err = await tickerq("db", "upgrade", "--store", url)
    assert (code, out) == (0, f"{safe}: upgraded none -> {SCHEMA_VERSION}\n"), err
    code, out, _ = await tickerq("db", "upgrade", "--store", url)
    assert (code, out) == (0, f"{safe}: already at {SCHEMA_VERSION} (up to date)\n")

    code, out, _ = await tickerq("db", "current", TICKERQ_STORE=url)
    assert (code, out) == (0, f"{safe}: {SCHEMA_VERSION} (up to date)\n")


async def test_cli_current_behind_and_unversioned(url: str, engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    await _sync(engine, _make_behind)
    code, out, _ = await tickerq("db", "current", "--store", url)
    assert code == 1
    assert f"none (behind: this tickerq needs {SCHEMA_VERSION}; run `tickerq db upgrade`)" in out

    async with engine.begin() as conn:
        await conn.execute(sa.text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        await conn.run_sync(metadata.create_all)
    code, out, _ = await tickerq("db", "current", "--store", url)
    assert code == 1
    assert (
        "none (tables from before versioned migrations, equal to 0001; "
        f"this tickerq needs {SCHEMA_VERSION}" in out
    )

    code, out, _ = await tickerq("db", "upgrade", "--store", url)
    assert code == 0
    assert await migrate.current_revision(engine) == SCHEMA_VERSION


async def test_cli_never_prints_the_password(pg_url: str) -> None:
    secret = make_url(pg_url).set(password="secret").render_as_string(hide_password=False)
    assert "secret" in secret
    runs = [
        ("db", "current", "--store", secret),
        ("db", "upgrade", "--store", secret),
        ("db", "current", "--store", secret),
        ("db", "current", "--store", secret + "_missing"),  # no such database
        ("db", "current", "--store", "postgresql://postgres:secret@127.0.0.1:1/x"),  # refused
        ("db", "current", "--store", "postgresql://postgres:secret@127.0.0.1:port/x"),  # bad URL
        ("db", "current", "--store", "mysql://postgres:secret@127.0.0.1/x"),  # unsupported
    ]
    codes = []
    for args in runs:
        code, out, err = await tickerq(*args)
        assert "secret" not in out + err, (args, out, err)
        codes.append(code)
        if code != 0:
            assert "Traceback" not in err
    assert codes == [1, 0, 0, 1, 1, 2, 2]


async def test_cli_usage_errors() -> None:
    code, _, err = await tickerq("db", "current")
    assert code == 2
    assert "give --store URL or set TICKERQ_STORE" in err
    code, _, err = await tickerq("db", "upgrade", "--store", "memory://")
    assert code == 2
    assert "memory:// keeps no schema" in err


async def test_cli_current_does_not_create_a_sqlite_file(tmp_path: Any) -> None:
    path = tmp_path / "missing.db"
    code, out, _ = await tickerq("db", "current", "--store", f"sqlite:///{path}")
    assert code == 1
    assert "none (the file does not exist)" in out
    assert not path.exists()


async def test_upgrade_to_0003_turns_sqlite_numbers_back_into_json_text(sqlite_url: str) -> None:
    """Before 0003 the request column had NUMERIC affinity on SQLite: a payload that was a
    bare number was stored as an INTEGER or REAL. The upgrade rewrites those as JSON text,
    and every payload then reads back with its type."""
    engine = for_url(sqlite_url).create_engine(1)
    try:
        await _upgrade_with_numbers(sqlite_url, engine)
    finally:
        await engine.dispose()


async def _upgrade_with_numbers(sqlite_url: str, engine: AsyncEngine) -> None:
    await migrate.upgrade(engine, "0002")
    payloads = {"5": 5, "2.5": 2.5, '"7"': "7", '{"a": [1, 2.5]}': {"a": [1, 2.5]}, "null": None}
    ids = {}
    async with engine.begin() as conn:
        for text in payloads:
            ids[text] = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO tickerq_tickers (id, kind, function, status, priority, request,"
                    " retries, retry_count, description, awaiting_parent, cancel_requested,"
                    " created_at, updated_at) VALUES (:id, 'TIME', 'f', 'IDLE', 1, :request,"
                    " 0, 0, '', 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"id": ids[text].hex, "request": text},
            )
        stored = set(
            (await conn.execute(sa.text("SELECT typeof(request) FROM tickerq_tickers"))).scalars()
        )
    assert "integer" in stored  # the affinity bug, before 0003

    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        kinds = set(
            (await conn.execute(sa.text("SELECT typeof(request) FROM tickerq_tickers"))).scalars()
        )
    assert kinds == {"text"}
    store = SqlStore(sqlite_url)
    await store.open()
    try:
        for text, value in payloads.items():
            ticker = await store.get_time_ticker(ids[text])
            assert ticker is not None
            assert ticker.request == value and type(ticker.request) is type(value), text
    finally:
        await store.close()


async def test_upgrade_to_0005_marks_the_parents_that_have_children(
    url: str, engine: AsyncEngine
) -> None:
    """0005 keeps "has children" on the row; parents stored before it get it set, so
    their runs' ends still resolve their waiting children."""
    await migrate.upgrade(engine, "0004")
    parent, child, alone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    insert = sa.text(
        "INSERT INTO tickerq_tickers (id, kind, function, status, priority, retries,"
        " retry_count, description, parent_id, awaiting_parent, cancel_requested,"
        " created_at, updated_at) VALUES (:id, 'TIME', 'f', 'IDLE', 1, 0, 0, '', :parent,"
        " :waits, false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    hexed = url.startswith("sqlite")  # SQLAlchemy keeps uuids as 32 hex digits there

    def key(value: uuid.UUID | None) -> Any:
        return value.hex if hexed and value is not None else value

    async with engine.begin() as conn:
        for row, parent_id in ((parent, None), (child, parent), (alone, None)):
            await conn.execute(
                insert, {"id": key(row), "parent": key(parent_id), "waits": parent_id is not None}
            )
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        marked = {
            (uuid.UUID(hex=r[0]) if hexed else r[0]): bool(r[1])
            for r in await conn.execute(sa.text("SELECT id, has_children FROM tickerq_tickers"))
        }
    assert marked == {parent: True, child: False, alone: False}


async def test_upgrade_to_0006_adds_headers_and_results(url: str, engine: AsyncEngine) -> None:
    """0006 adds a time ticker's headers and the results of rows and attempts: rows
    stored before it read as having no headers and no result, and new ones keep
    theirs exactly (a bare number stays a number of its type on SQLite too)."""
    await migrate.upgrade(engine, "0005")
    old, attempt_of = uuid.uuid4(), uuid.uuid4()
    hexed = url.startswith("sqlite")
    insert = sa.text(
        "INSERT INTO tickerq_tickers (id, kind, function, status, priority, retries,"
        " retry_count, description, awaiting_parent, cancel_requested, created_at,"
        " updated_at) VALUES (:id, 'TIME', 'f', :status, 1, 0, 0, '', false, false,"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    async with engine.begin() as conn:
        for row, status in ((old, "IDLE"), (attempt_of, "DONE")):
            await conn.execute(insert, {"id": row.hex if hexed else row, "status": status})
        await conn.execute(
            sa.text(
                "INSERT INTO tickerq_attempts (ticker_id, kind, number, node, status,"
                " started_at) VALUES (:id, 'TIME', 0, 'n', 'DONE', '2026-01-01 00:00:00')"
            ),
            {"id": attempt_of.hex if hexed else attempt_of},
        )
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == SCHEMA_VERSION
    layout = await _sync(engine, _layout)
    assert {"headers", "result"} <= layout["tickerq_tickers"]["columns"]
    assert "result" in layout["tickerq_attempts"]["columns"]
    assert await _sync(engine, _diff) == []

    store = SqlStore(url)
    await store.open()
    try:
        before = await store.get_time_ticker(old)
        assert before is not None and (before.headers, before.result) == ({}, None)
        ended = await store.get_time_ticker(attempt_of)
        assert ended is not None and ended.result is None
        (attempt,) = await store.attempts(TickerKind.TIME, attempt_of)
        assert attempt.result is None
        new = before.evolve(
            id=uuid.uuid4(), headers={"tenant": "ż"}, execution_time=before.created_at
        )
        await store.add_time_tickers([new])
        (job,) = await store.claim(
            new.created_at,
            node="n",
            lease_until=new.created_at + timedelta(minutes=1),
            slots=5,
            capacity={},
            functions=["f"],
        )
        assert (job.id, job.headers) == (new.id, {"tenant": "ż"})
        done = Outcome(
            job=job,
            status=Status.DONE,
            node="n",
            started_at=new.created_at,
            finished_at=new.created_at,
            result=1.0,
        )
        await store.complete([done])
        after = await store.get_time_ticker(job.id)
        assert after is not None and after.result == 1.0 and type(after.result) is float
    finally:
        await store.close()

"""Schema migrations for the SQL store, run programmatically with Alembic.

The revision scripts live in :mod:`tickerq.migrations`; the database records
its revision in ``tickerq_alembic_version``. Every change runs in one
transaction that, on PostgreSQL, holds an advisory lock (the same key for
every tickerq process), and on SQLite starts with ``BEGIN IMMEDIATE``: nodes
that start together upgrade the schema once, the others wait and find it done.

States of a database:

* **fresh**: no tickerq tables and no version table: created at once on open;
* **unversioned**: tickerq tables made by ``create_all`` before migrations
  existed, no revision recorded: stamped as ``0001`` (what they are);
* **behind**: an older revision (or a version table but no tables): upgraded
  by ``tickerq db upgrade`` or ``SqlStore(url, auto_upgrade=True)``, refused
  otherwise with an error that says so;
* **unknown**: a revision this tickerq does not have (a newer tickerq wrote
  it): always refused.

Opening a store whose schema is current reads the version table with a plain
query and compares it with :data:`~tickerq.stores.sql.schema.SCHEMA_VERSION`:
Alembic (and Mako, which it loads) is imported only when the schema has to
change or a revision has to be looked up, so a worker does not carry it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tickerq.errors import TickerStateError
from tickerq.stores.sql.schema import SCHEMA_VERSION, metadata, tables
from tickerq.urls import mask_url

if TYPE_CHECKING:  # Alembic is imported only to change a schema (see module doc)
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext, RevisionStep
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from tickerq.stores.sql.threaded import ThreadedConnection, ThreadedEngine

__all__ = [
    "LOCK_KEY",
    "VERSION_TABLE",
    "SchemaStatus",
    "check",
    "config",
    "current_revision",
    "ensure",
    "head_revision",
    "status",
    "upgrade",
    "upgrade_from_to",
]

logger = logging.getLogger(__name__)

VERSION_TABLE = "tickerq_alembic_version"
"""Where the database records its revision (not ``alembic_version``, the application's)."""

LOCK_KEY = int.from_bytes(hashlib.sha256(b"tickerq-schema").digest()[:7], "big")
"""The PostgreSQL advisory lock held while the schema is inspected or changed."""

UNVERSIONED_REVISION = "0001"
"""What the tables of a tickerq from before migrations are (``metadata.create_all`` of 0001)."""

_MARKER_TABLE = "tickerq_tickers"


def config() -> Config:
    """An Alembic config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    import tickerq.migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(tickerq.migrations.__file__).parent))
    return cfg


@cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def head_revision() -> str:
    """The newest revision shipped (equal to ``schema.SCHEMA_VERSION``)."""
    head = _script().get_current_head()
    assert head is not None, "tickerq ships no migrations"
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}


@dataclass(frozen=True)
class SchemaStatus:
    """What a database holds, as far as tickerq's schema goes."""

    revision: str | None
    """The recorded revision (None: no version table, or no row in it)."""
    head: str
    """The revision this tickerq needs."""
    has_version_table: bool
    has_tables: bool
    """Whether ``tickerq_tickers`` exists."""

    @property
    def state(self) -> str:
        """``current``, ``fresh``, ``unversioned``, ``behind`` or ``unknown``."""
        if self.revision is None:
            if self.has_tables:
                return "unversioned"
            return "behind" if self.has_version_table else "fresh"
        if self.revision == self.head:
            return "current"
        return "behind" if self.revision in _known_revisions() else "unknown"

    @property
    def effective_revision(self) -> str | None:
        """The revision the tables are at (unversioned tables count as 0001)."""
        if self.revision is None and self.has_tables:
            return UNVERSIONED_REVISION
        return self.revision

    @property
    def up_to_date(self) -> bool:
        """Whether the tables are what this tickerq needs."""
        return self.effective_revision == self.head

    def problem(self, url: str) -> str:
        """Why a store at ``url`` cannot be used as it is, with what to do."""
        if self.state == "unknown":
            return (
                f"the database at {url} has tickerq schema {self.revision}, which this "
                f"tickerq does not know (it needs {self.head}); a newer tickerq has upgraded "
                "it: upgrade tickerq on this node too"
            )
        has = (
            f"has tickerq schema {self.effective_revision}"
            if self.effective_revision is not None
            else "has no tickerq tables"
        )
        return (
            f"the database at {url} {has}, but this tickerq needs {self.head}: "
            "run `tickerq db upgrade --store URL` or open the store with auto_upgrade=True"
        )


def _migration_context(conn: Connection) -> MigrationContext:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


_version = sa.Table(VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32)))


def _recorded_revision(conn: Connection) -> str | None:
    # A plain query: configuring a MigrationContext would log at INFO on every open.
    rows = list(conn.execute(sa.select(_version.c.version_num)).scalars())
    if len(rows) > 1:
        raise TickerStateError(
            f"{VERSION_TABLE} holds several revisions ({', '.join(sorted(rows))}); "
            "tickerq's migrations have no branches: repair it"
        )
    return rows[0] if rows else None


def _status(conn: Connection) -> SchemaStatus:
    inspector = sa.inspect(conn)
    has_version_table = inspector.has_table(VERSION_TABLE)
    revision = _recorded_revision(conn) if has_version_table else None
    return SchemaStatus(
        revision=revision,
        head=SCHEMA_VERSION,  # what head_revision() says, without loading Alembic
        has_version_table=has_version_table,
        has_tables=inspector.has_table(_MARKER_TABLE),
    )


def _stamp_unversioned(conn: Connection) -> None:
    names = set(sa.inspect(conn).get_table_names())
    missing = sorted(set(tables) - names)
    if missing:
        raise TickerStateError(
            f"the database has {_MARKER_TABLE} but not {', '.join(missing)}, and no "
            "tickerq schema revision: it was not created by tickerq, or only partly; "
            "repair it or use another database"
        )
    _migration_context(conn).stamp(_script(), UNVERSIONED_REVISION)
    logger.info("stamped existing tickerq tables as schema %s", UNVERSIONED_REVISION)


def _upgrade(conn: Connection, target: str, url: str | None) -> tuple[str | None, str | None]:
    """Upgrade inside the caller's transaction; the revision before and after."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.util import CommandError

    url = url or _safe(conn)
    before = _status(conn)
    if before.state == "unknown":
        raise TickerStateError(before.problem(url))
    if before.state == "unversioned":
        _stamp_unversioned(conn)
    script = _script()

    def steps(heads: Sequence[str], _context: MigrationContext) -> list[RevisionStep]:
        return script._upgrade_revs(target, heads)  # type: ignore[arg-type]

    try:
        with EnvironmentContext(config(), script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn, target_metadata=metadata, version_table=VERSION_TABLE)
            with env.begin_transaction():
                env.run_migrations()
    except CommandError as exc:
        raise TickerStateError(
            f"cannot upgrade the tickerq schema at {url} from "
            f"{before.effective_revision or 'none'} to {target}: {exc}"
        ) from None
    after = _recorded_revision(conn)
    if after != before.revision:
        logger.info(
            "upgraded the tickerq schema at %s from %s to %s",
            url,
            before.revision or "none",
            after,
        )
    return before.revision, after


def _ensure(conn: Connection, auto_upgrade: bool, url: str | None) -> None:
    current = _status(conn)
    if current.state == "current":
        return
    if current.state == "unversioned":
        _stamp_unversioned(conn)
        current = _status(conn)
        if current.state == "current":
            return
    if current.state == "fresh" or (auto_upgrade and current.state == "behind"):
        _upgrade(conn, "head", url)
        return
    raise TickerStateError(current.problem(url or _safe(conn)))


def _safe(conn: Connection) -> str:
    return mask_url(conn.engine.url.render_as_string(hide_password=False))


@asynccontextmanager
async def _locked(
    engine: AsyncEngine | ThreadedEngine,
) -> AsyncIterator[AsyncConnection | ThreadedConnection]:
    """A transaction that no other tickerq process changes the schema in meanwhile."""
    async with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (see dialects)
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"))
        yield conn


async def status(engine: AsyncEngine | ThreadedEngine) -> SchemaStatus:
    """The database's schema state (reads only)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_status)


async def current_revision(engine: AsyncEngine | ThreadedEngine) -> str | None:
    """The revision recorded in the database, or None if there is none."""
    return (await status(engine)).revision


async def upgrade(
    engine: AsyncEngine | ThreadedEngine, target: str = "head", *, url: str | None = None
) -> None:
    """Upgrade the schema to ``target`` (a revision id or ``head``); no-op if it is there.

    Unversioned tables from before migrations are stamped 0001 first. Downgrades
    are not supported: a target older than the database raises TickerStateError.
    """
    await upgrade_from_to(engine, target, url=url)


async def upgrade_from_to(
    engine: AsyncEngine | ThreadedEngine, target: str = "head", *, url: str | None = None
) -> tuple[str | None, str]:
    """:func:`upgrade`, returning the revision before (None: none) and after.

    ``url`` (without password) names the database in logs and errors.
    """
    if target not in ("head", "heads") and target not in _known_revisions():
        raise TickerStateError(
            f"unknown tickerq schema revision {target!r}; "
            f"known: {', '.join(sorted(_known_revisions()))} (or head)"
        )
    async with _locked(engine) as conn:
        before, after = await conn.run_sync(_upgrade, target, url)
    assert after is not None
    return before, after


async def ensure(
    engine: AsyncEngine | ThreadedEngine, *, auto_upgrade: bool, url: str | None = None
) -> None:
    """Make the database usable by this tickerq, or raise TickerStateError saying why not.

    Fresh databases are created; unversioned tables are stamped; a database
    behind is upgraded only with ``auto_upgrade``. ``url`` (without password)
    names the database in errors.
    """
    async with _locked(engine) as conn:
        await conn.run_sync(_ensure, auto_upgrade, url)


async def check(engine: AsyncEngine | ThreadedEngine, *, url: str | None = None) -> None:
    """Raise TickerStateError unless the schema is exactly what this tickerq needs."""
    current = await status(engine)
    if not current.up_to_date:
        raise TickerStateError(
            current.problem(url or engine.url.render_as_string(hide_password=True))
        )

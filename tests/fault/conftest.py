"""Fixtures of the fault tests: real worker processes on real databases.

PostgreSQL is reached at ``$TICKERQ_TEST_POSTGRESQL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a fresh database
``tickerq_fault_<random>``, dropped afterwards. When the server cannot be
reached the PostgreSQL tests are skipped, unless ``CI=true`` (then they fail).

Run only these tests with ``pytest tests/fault`` or ``pytest -m fault``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault.harness import (
    PrivateServer,
    create_database,
    drop_database,
    postgres_reachable_or_skip,
    server_dsn,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fault: fault-injection tests with real worker processes and databases "
        "(kill -9, database outage, concurrent start); slow",
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, dropped afterwards."""
    postgres_reachable_or_skip()
    admin = server_dsn("postgres")
    name = create_database(admin)
    try:
        yield server_dsn(name)
    finally:
        drop_database(admin, name)


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, a free port).

    Not under pytest's tmp_path: pytest makes its base folder private (0700) at the
    start of every session, which would lock the ``postgres`` user out of a running
    server's data folder whenever another pytest starts meanwhile.
    """
    root = Path(tempfile.mkdtemp(prefix="tickerq-fault-pg-"))
    server = PrivateServer(root / "pg")
    server.root.mkdir()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)

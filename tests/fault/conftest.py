"""Fixtures of the fault tests: real worker processes on real databases.

PostgreSQL is reached at ``$TICKERQ_TEST_POSTGRESQL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a fresh database
``tickerq_fault_<random>``, dropped afterwards. When the server cannot be
reached the PostgreSQL tests are skipped, unless ``CI=true`` (then they fail).

Run only these tests with ``pytest tests/fault`` or ``pytest -m fault``.
"""

from __future__ import annotations

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
def private_pg(tmp_path: Path) -> Iterator[PrivateServer]:
    """A PostgreSQL server of the test's own (initdb in tmp_path, a free port)."""
    server = PrivateServer(tmp_path / "pg")
    server.root.mkdir()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")

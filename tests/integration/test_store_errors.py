"""Opening a store that cannot be reached says where, never the password."""

from __future__ import annotations

import pytest

from tickerq import TickerQ
from tickerq.errors import InvalidArgumentError, StoreConnectionError


async def test_unreachable_postgresql_names_host_and_port_not_password() -> None:
    app = TickerQ("postgresql://bob:hunter2@127.0.0.1:1/jobs")
    with pytest.raises(StoreConnectionError) as excinfo:
        await app.open()
    message = str(excinfo.value)
    assert "127.0.0.1:1/jobs" in message
    assert "hunter2" not in message
    assert isinstance(excinfo.value, ConnectionError)


async def test_unopenable_sqlite_file_names_the_file() -> None:
    app = TickerQ("sqlite:////nonexistent-dir/tickerq.db")
    with pytest.raises(StoreConnectionError, match=r"/nonexistent-dir/tickerq\.db"):
        await app.open()


def test_wrong_scheme_is_refused_without_the_password() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        TickerQ("mysql://bob:hunter2@db/jobs")
    assert "mysql" in str(excinfo.value)
    assert "hunter2" not in str(excinfo.value)

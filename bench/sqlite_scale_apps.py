"""The worker apps of ``bench/sqlite_scale.py``: one noop job each, on a SQLite file.

Kept apart from the bench so that a worker process imports only its own
library. The file is ``$SQLITE_SCALE_DB``.
"""

from __future__ import annotations

import os
from typing import Any

DB = os.environ.get("SQLITE_SCALE_DB", "/tmp/sqlite-scale.db")


def tickerq_app() -> Any:
    """A tickerq app with one ``async def`` job."""
    from tickerq import TickerQ

    app = TickerQ(f"sqlite:///{DB}")

    @app.function()
    async def noop() -> None:
        return None

    return app


def huey_app(synchronous: str | None = None) -> Any:
    """SqliteHuey (its defaults) with one task; ``synchronous`` sets that pragma."""
    from huey import SqliteHuey

    class Huey(SqliteHuey):  # type: ignore[misc]
        def create_storage(self) -> Any:
            storage = super().create_storage()
            if synchronous is not None:
                make = storage._create_connection

                def connect() -> Any:
                    conn = make()
                    conn.execute(f"PRAGMA synchronous={synchronous}")
                    return conn

                storage._create_connection = connect
            return storage

    huey = Huey("bench", filename=DB, results=False)

    @huey.task()
    def noop() -> None:
        return None

    huey.noop = noop
    return huey


def aps_scheduler(blocking: bool) -> Any:
    """APScheduler 3 with a SQLAlchemyJobStore on the file."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
    from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]

    kind = BlockingScheduler if blocking else BackgroundScheduler
    return kind(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{DB}")})


def aps_noop() -> None:
    """The APScheduler job."""
    return None


# The apps the worker commands load (`tickerq run sqlite_scale_apps:app`, huey_consumer).
app = tickerq_app() if os.environ.get("SQLITE_SCALE_IMPL") == "tickerq" else None
huey = huey_app() if os.environ.get("SQLITE_SCALE_IMPL") == "huey" else None

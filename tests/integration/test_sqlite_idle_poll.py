"""An idle node on SQLite polls without querying while nothing changes.

Found measuring issue 9: an idle node on SQLite looked for due work on every
poll (twice a second): a claim, the next due time and the due crons, 20% of a
core with a million waiting rows. A poll now reads the file's data version
(``PRAGMA data_version``) and queries only when another connection committed;
work added by another process is still found on the next poll.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from tickerq import EngineOptions, TickerQ
from tickerq.models import TimeTicker
from tickerq.stores.sql import SqlStore

POLL = 0.05


async def test_idle_polls_do_not_query_and_others_work_is_still_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    app = TickerQ(store=url, options=EngineOptions(poll_interval=POLL, heartbeat_interval=60))
    ran = asyncio.Event()

    @app.function()
    async def job() -> None:
        ran.set()

    looks = 0
    async with app:
        store = app.store
        assert isinstance(store, SqlStore)
        next_due_time = store.next_due_time

        async def counted(after: datetime | None = None, **kwargs: Any) -> datetime | None:
            nonlocal looks
            looks += 1
            return await next_due_time(after, **kwargs)

        store.next_due_time = counted  # type: ignore[method-assign]
        await asyncio.sleep(20 * POLL)  # settle: the first polls look once
        looks = 0
        await asyncio.sleep(40 * POLL)
        idle_looks = looks

        # Another process (here: another connection to the file) adds due work.
        other = SqlStore(url)
        await other.open()
        try:
            now = datetime.now(UTC)
            added = time.monotonic()
            await other.add_time_tickers(
                [
                    TimeTicker(
                        id=uuid4(),
                        function="job",
                        execution_time=now,
                        created_at=now,
                        updated_at=now,
                    )
                ]
            )
            await asyncio.wait_for(ran.wait(), 5)
            found_after = time.monotonic() - added
        finally:
            await other.close()
    assert idle_looks <= 2, f"{idle_looks} queries in 40 idle polls"
    assert found_after < 1.0, f"work added elsewhere found after {found_after:.2f} s"

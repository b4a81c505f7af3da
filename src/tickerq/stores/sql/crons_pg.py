"""PostgreSQL's cron batch write (see :mod:`tickerq.stores.sql.crons`), in a module of its
own: it imports SQLAlchemy's PostgreSQL dialect, which a SQLite process never loads."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Connection,
    Integer,
    Uuid,
    bindparam,
    column,
    false,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY

from tickerq.models import CronTicker
from tickerq.stores.base import CronPlan
from tickerq.stores.sql import dialects
from tickerq.stores.sql.connection import IDLE, OCCURRENCE, T
from tickerq.stores.sql.schema import UTCDateTime, cron_tickers, tickers

__all__ = ["write_batch_postgresql"]

C = cron_tickers.c

# The crons were read and locked in the same transaction, so the cursor guard
# (next_fire_at still as read) holds; it stays as the compare-and-set the
# contract promises.


def write_batch_postgresql(
    conn: Connection, planned: list[tuple[CronTicker, CronPlan]], now: datetime
) -> list[tuple[UUID, UUID, str]]:
    """Two statements whatever the batch size, each with a few array parameters:
    UPDATE ... FROM unnest(...) for the cursors, INSERT ... SELECT FROM unnest(...)
    JOIN the crons for the occurrences (their request and retries are copied in
    the database, never round-tripped through Python)."""
    conn.execute(
        _MOVE_CURSORS,
        {
            "cron_ids": [cron.id for cron, _ in planned],
            "expected": [cron.next_fire_at for cron, _ in planned],
            "new_next": [plan.new_next for _, plan in planned],
        },
    )
    fires = [(cron.id, plan.priority, fire) for cron, plan in planned for fire in plan.fires]
    if not fires:
        return []
    result = conn.execute(
        _INSERT_OCCURRENCES,
        {
            "ids": [dialects.new_id() for _ in fires],
            "crons": [cron_id for cron_id, _, _ in fires],
            "priorities": [int(priority) for _, priority, _ in fires],
            "fires": [fire for _, _, fire in fires],
            "now": now,
        },
    )
    return [(r.id, r.cron_ticker_id, r.function) for r in result]


_TIMES = ARRAY(postgresql.TIMESTAMP(timezone=True))

_cursors = (
    func.unnest(
        bindparam("cron_ids", type_=ARRAY(Uuid)),
        bindparam("expected", type_=_TIMES),
        bindparam("new_next", type_=_TIMES),
    )
    .table_valued(
        column("cron_id", Uuid),
        column("expected", postgresql.TIMESTAMP(timezone=True)),
        column("new_next", postgresql.TIMESTAMP(timezone=True)),
    )
    .render_derived(name="v")
)
_MOVE_CURSORS = (
    update(cron_tickers)
    .where(C.id == _cursors.c.cron_id, C.next_fire_at == _cursors.c.expected)
    .values(next_fire_at=_cursors.c.new_next)
)

_fires = (
    func.unnest(
        bindparam("ids", type_=ARRAY(Uuid)),
        bindparam("crons", type_=ARRAY(Uuid)),
        bindparam("priorities", type_=ARRAY(Integer)),
        bindparam("fires", type_=_TIMES),
    )
    .table_valued(
        column("id", Uuid),
        column("cron_id", Uuid),
        column("priority", Integer),
        column("fire", postgresql.TIMESTAMP(timezone=True)),
    )
    .render_derived(name="f")
)
_now = bindparam("now", type_=UTCDateTime)
_OCCURRENCE_COLUMNS = {
    "id": _fires.c.id,
    "kind": literal(OCCURRENCE),
    "function": C.function,
    "status": literal(IDLE),
    "priority": _fires.c.priority,
    "execution_time": _fires.c.fire,
    "fire_time": _fires.c.fire,
    "request": C.request,
    "retries": C.retries,
    "retry_intervals": C.retry_intervals,
    "retry_count": literal(0),
    "description": literal(""),
    "awaiting_parent": false(),
    "cancel_requested": false(),
    "cron_ticker_id": C.id,
    "created_at": _now,
    "updated_at": _now,
}
_INSERT_OCCURRENCES = (
    postgresql.insert(tickers)
    .from_select(
        list(_OCCURRENCE_COLUMNS),
        select(*_OCCURRENCE_COLUMNS.values()).join_from(
            _fires, cron_tickers, C.id == _fires.c.cron_id
        ),
    )
    .on_conflict_do_nothing()
    .returning(T.id, T.cron_ticker_id, T.function)
)

"""A claim whose cost does not grow with the table: the waiting index.

Revision ID: 0004
Revises: 0003

* ``ix_tickerq_tickers_waiting`` on ``(priority, execution_time)``, partial:
  only rows waiting to run (status IDLE, not waiting for a chain parent) have
  an entry. The claim reads one range per priority (the due rows of that
  priority, oldest first) and stops at the rows it takes, so rows that ended,
  rows due later and chain children waiting for their parent cost it nothing.
* ``ix_tickerq_tickers_claim`` goes: it led with ``status`` and ordered by
  ``priority DESC, execution_time``, so a claim of LOW rows walked every
  waiting NORMAL row due later, and every finished row paid for an entry.
* ``ix_tickerq_tickers_due`` ``(status, execution_time)`` becomes
  ``ix_tickerq_tickers_status`` ``(status, lease_until)``: the planner took the
  old one for a claim of one priority when its statistics misled it, walking
  the due rows of every priority; what else read it (running rows whose lease
  lapsed, counts by status) reads the new one as well or better.

On a big PostgreSQL table CREATE INDEX holds off writes while it builds
(seconds per million rows); stop the nodes or upgrade at a quiet time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# As in tickerq.stores.sql.schema.WAITING_SQL at this revision (a migration keeps
# its own copy: the schema module moves on, the migration must not).
_WAITING = {
    "postgresql": "status = 'IDLE' AND NOT awaiting_parent",
    "sqlite": "status = 'IDLE' AND awaiting_parent = 0",
}


def upgrade() -> None:
    """Create the waiting index; drop the claim index it replaces."""
    dialect = op.get_bind().dialect.name
    where = sa.text(_WAITING.get(dialect, _WAITING["postgresql"]))
    op.create_index(
        "ix_tickerq_tickers_waiting",
        "tickerq_tickers",
        ["priority", "execution_time"],
        postgresql_where=where,
        sqlite_where=where,
        if_not_exists=True,
    )
    op.create_index(
        "ix_tickerq_tickers_status",
        "tickerq_tickers",
        ["status", "lease_until"],
        if_not_exists=True,
    )
    op.drop_index("ix_tickerq_tickers_claim", table_name="tickerq_tickers", if_exists=True)
    op.drop_index("ix_tickerq_tickers_due", table_name="tickerq_tickers", if_exists=True)


def downgrade() -> None:
    """Back to 0003's indexes."""
    op.create_index("ix_tickerq_tickers_due", "tickerq_tickers", ["status", "execution_time"])
    op.create_index(
        "ix_tickerq_tickers_claim",
        "tickerq_tickers",
        ["status", sa.text("priority DESC"), "execution_time"],
    )
    op.drop_index("ix_tickerq_tickers_status", table_name="tickerq_tickers")
    op.drop_index("ix_tickerq_tickers_waiting", table_name="tickerq_tickers")

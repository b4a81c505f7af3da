"""Indexes for the dashboard on big tables: the time ticker list and ended rows by time.

Revision ID: 0002
Revises: 0001

* ``ix_tickerq_tickers_list``: the dashboard's list of time tickers (latest
  execution time first) reads a page from it without sorting the table; on
  PostgreSQL it carries status, function and parent_id (INCLUDE), so filters and
  deep pages are answered from the index alone.
* ``ix_tickerq_tickers_finished``: rows that ended, by ``finished_at`` (partial:
  written only when a row ends), for the throughput chart.
* ``ix_tickerq_tickers_function`` and ``ix_tickerq_tickers_lease`` go: every
  status change writes an entry in every index of the table, and their queries
  are answered as fast by others (function filters by the list index's INCLUDE
  columns; leases and locks held by the claim index, whose leading ``status``
  picks the few running rows).

``if_not_exists``: tables made by ``metadata.create_all`` of a later tickerq and
then stamped 0001 (see ``migrate``) may have them already. On a big PostgreSQL
table each CREATE INDEX holds off writes while it builds (seconds per million
rows).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the two indexes; drop the two the engine paid for in vain."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    # SQLite has no NULLS LAST in CREATE INDEX; its DESC puts NULLs last anyway.
    nulls_last = " NULLS LAST" if postgresql else ""
    op.create_index(
        "ix_tickerq_tickers_list",
        "tickerq_tickers",
        [
            "kind",
            sa.text(f"execution_time DESC{nulls_last}"),
            sa.text("created_at DESC"),
            sa.text("id DESC"),
        ],
        postgresql_include=["status", "function", "parent_id"],
        if_not_exists=True,
    )
    op.create_index(
        "ix_tickerq_tickers_finished",
        "tickerq_tickers",
        ["finished_at"],
        postgresql_include=["status"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        if_not_exists=True,
    )
    op.drop_index("ix_tickerq_tickers_function", table_name="tickerq_tickers", if_exists=True)
    op.drop_index("ix_tickerq_tickers_lease", table_name="tickerq_tickers", if_exists=True)


def downgrade() -> None:
    """Back to 0001's indexes."""
    op.create_index("ix_tickerq_tickers_function", "tickerq_tickers", ["function", "status"])
    op.create_index("ix_tickerq_tickers_lease", "tickerq_tickers", ["lock_holder", "lease_until"])
    op.drop_index("ix_tickerq_tickers_finished", table_name="tickerq_tickers")
    op.drop_index("ix_tickerq_tickers_list", table_name="tickerq_tickers")

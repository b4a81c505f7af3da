"""Flow control: unique keys, per-key concurrency, pauses and rate-limit starts.

Revision ID: 0007
Revises: 0006

* ``tickerq_tickers.unique_key``: a time ticker's unique key, NULL when it has
  none. ``uq_tickerq_tickers_unique`` on ``(function, unique_key)``, partial
  (a key is held only while its row waits or runs: status IDLE, QUEUED or
  IN_PROGRESS), makes two enqueues with one key race-free across nodes.
* ``tickerq_tickers.concurrency_key``: the key a per-key concurrency limit
  counts the row under (computed at enqueue), NULL when it has none.
  ``ix_tickerq_tickers_key_running`` on ``(function, concurrency_key)``,
  partial (running rows with a key): a claim counts the running rows of a key
  from it, however many rows ended.
* ``tickerq_pauses``: one row per paused function (``*``: the whole cluster),
  read by every node's claims.
* ``tickerq_rate_starts``: starts counted by rate limits, one row per limit and
  claim (``count`` jobs started at ``started_at``); rows older than their
  limit's period are deleted by later claims, so it holds at most one period
  of starts per limit.

The new columns are nullable without a default: adding them rewrites no row.
The indexes only hold rows that have a key (none, right after the upgrade), so
they are built at once even on a big table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# As in tickerq.stores.sql.schema at this revision (a migration keeps its own
# copy: the schema module moves on, the migration must not).
_HELD = "unique_key IS NOT NULL AND status IN ('IDLE', 'QUEUED', 'IN_PROGRESS')"
_KEYED_RUNNING = "concurrency_key IS NOT NULL AND status = 'IN_PROGRESS'"


def upgrade() -> None:
    """Add the columns, their indexes and the two tables (unless already there)."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = {c["name"] for c in inspector.get_columns("tickerq_tickers")}
    for name in ("unique_key", "concurrency_key"):
        if name not in present:
            op.add_column("tickerq_tickers", sa.Column(name, sa.String(200), nullable=True))
    op.create_index(
        "uq_tickerq_tickers_unique",
        "tickerq_tickers",
        ["function", "unique_key"],
        unique=True,
        postgresql_where=sa.text(_HELD),
        sqlite_where=sa.text(_HELD),
        if_not_exists=True,
    )
    op.create_index(
        "ix_tickerq_tickers_key_running",
        "tickerq_tickers",
        ["function", "concurrency_key"],
        postgresql_where=sa.text(_KEYED_RUNNING),
        sqlite_where=sa.text(_KEYED_RUNNING),
        if_not_exists=True,
    )
    tables = set(inspector.get_table_names())
    if "tickerq_pauses" not in tables:
        op.create_table(
            "tickerq_pauses",
            sa.Column("function", sa.String(200), primary_key=True),
            sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("paused_by", sa.String(200), nullable=True),
        )
    if "tickerq_rate_starts" not in tables:
        op.create_table(
            "tickerq_rate_starts",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("bucket", sa.String(220), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("count", sa.Integer, nullable=False),
        )
        op.create_index(
            "ix_tickerq_rate_starts_bucket", "tickerq_rate_starts", ["bucket", "started_at"]
        )


def downgrade() -> None:
    """Drop the tables, the indexes and the columns."""
    op.drop_table("tickerq_rate_starts")
    op.drop_table("tickerq_pauses")
    op.drop_index("ix_tickerq_tickers_key_running", table_name="tickerq_tickers")
    op.drop_index("uq_tickerq_tickers_unique", table_name="tickerq_tickers")
    op.drop_column("tickerq_tickers", "concurrency_key")
    op.drop_column("tickerq_tickers", "unique_key")

"""The first tickerq schema: tickers, cron tickers, attempts and nodes.

Revision ID: 0001
Revises: (none)

Written out column by column rather than with ``metadata.create_all`` so that
it keeps meaning this schema after ``schema.py`` moves on. Datetimes are stored
as ``DateTime(timezone=True)``, the type under ``schema.UTCDateTime``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _utc(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "tickerq_cron_tickers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("function", sa.String(200), nullable=False),
        sa.Column("expression", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_intervals", sa.JSON(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("misfire", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("seed_key", sa.String(420), nullable=True, unique=True),
        _utc("next_fire_at", nullable=True),
        _utc("created_at", nullable=False),
        _utc("updated_at", nullable=False),
    )
    op.create_index("ix_tickerq_cron_due", "tickerq_cron_tickers", ["enabled", "next_fire_at"])

    op.create_table(
        "tickerq_tickers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("function", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _utc("execution_time", nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_intervals", sa.JSON(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "parent_id",
            sa.Uuid(),
            sa.ForeignKey("tickerq_tickers.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("run_condition", sa.String(32), nullable=True),
        sa.Column("awaiting_parent", sa.Boolean(), nullable=False),
        sa.Column(
            "cron_ticker_id",
            sa.Uuid(),
            sa.ForeignKey("tickerq_cron_tickers.id", ondelete="CASCADE"),
            nullable=True,
        ),
        _utc("fire_time", nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lock_holder", sa.String(200), nullable=True),
        _utc("locked_at", nullable=True),
        _utc("lease_until", nullable=True),
        _utc("executed_at", nullable=True),
        _utc("finished_at", nullable=True),
        sa.Column("elapsed_ms", sa.Float(), nullable=True),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("skipped_reason", sa.Text(), nullable=True),
        _utc("created_at", nullable=False),
        _utc("updated_at", nullable=False),
        sa.UniqueConstraint("cron_ticker_id", "fire_time", name="uq_tickerq_occurrence_fire"),
    )
    op.create_index("ix_tickerq_tickers_due", "tickerq_tickers", ["status", "execution_time"])
    op.create_index(
        "ix_tickerq_tickers_claim",
        "tickerq_tickers",
        ["status", sa.text("priority DESC"), "execution_time"],
    )
    op.create_index("ix_tickerq_tickers_parent", "tickerq_tickers", ["parent_id"])
    op.create_index("ix_tickerq_tickers_function", "tickerq_tickers", ["function", "status"])
    op.create_index("ix_tickerq_tickers_lease", "tickerq_tickers", ["lock_holder", "lease_until"])
    op.create_index("ix_tickerq_tickers_updated", "tickerq_tickers", ["kind", "updated_at"])

    op.create_table(
        "tickerq_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "ticker_id",
            sa.Uuid(),
            sa.ForeignKey("tickerq_tickers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _utc("started_at", nullable=False),
        _utc("finished_at", nullable=True),
        sa.Column("elapsed_ms", sa.Float(), nullable=True),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
    )
    op.create_index("ix_tickerq_attempts_ticker", "tickerq_attempts", ["ticker_id", "number"])

    op.create_table(
        "tickerq_nodes",
        sa.Column("id", sa.String(200), primary_key=True),
        _utc("started_at", nullable=False),
        _utc("last_heartbeat", nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("functions", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    """Drop everything 0001 created (its data with it)."""
    op.drop_table("tickerq_nodes")
    op.drop_index("ix_tickerq_attempts_ticker", table_name="tickerq_attempts")
    op.drop_table("tickerq_attempts")
    for index in ("due", "claim", "parent", "function", "lease", "updated"):
        op.drop_index(f"ix_tickerq_tickers_{index}", table_name="tickerq_tickers")
    op.drop_table("tickerq_tickers")
    op.drop_index("ix_tickerq_cron_due", table_name="tickerq_cron_tickers")
    op.drop_table("tickerq_cron_tickers")

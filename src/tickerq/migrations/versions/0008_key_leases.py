"""Room held ahead under per-key limits.

Revision ID: 0008
Revises: 0007

* ``tickerq_key_leases``: one row per (function, node) holding room under the
  function's per-key concurrency limit: the node may run up to ``room`` jobs of
  each key until ``until`` without counting, and every other node's exact claim
  counts the room it has not used as running (see
  :mod:`tickerq.stores.sql.prepaid`). A handful of rows: one per node and
  function with a per-key limit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the table (unless already there)."""
    if "tickerq_key_leases" not in set(sa.inspect(op.get_bind()).get_table_names()):
        op.create_table(
            "tickerq_key_leases",
            sa.Column("function", sa.String(200), primary_key=True),
            sa.Column("node", sa.String(200), primary_key=True),
            sa.Column("room", sa.Integer, nullable=False),
            sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("tickerq_key_leases")

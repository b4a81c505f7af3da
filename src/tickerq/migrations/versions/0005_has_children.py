"""Whether a ticker has chain children, kept on its row.

Revision ID: 0005
Revises: 0004

* ``has_children`` (boolean, false by default) is set on a parent in the same
  transaction that adds a child to it. Ending a run reads it from the row it
  ends, so a child added while its parent ran is resolved when the parent ends
  (before, the worker trusted what the row looked like when it was claimed,
  and such a child waited forever). Adding the child writes the parent's row,
  which also orders the add and the parent's end on PostgreSQL.
* Rows that have children now get it set.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the column (unless tables stamped from a newer layout have it) and mark
    the parents that exist."""
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tickerq_tickers")}
    if "has_children" not in present:
        op.add_column(
            "tickerq_tickers",
            sa.Column("has_children", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    op.execute(
        "UPDATE tickerq_tickers SET has_children = true WHERE id IN "
        "(SELECT parent_id FROM tickerq_tickers WHERE parent_id IS NOT NULL)"
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("tickerq_tickers", "has_children")

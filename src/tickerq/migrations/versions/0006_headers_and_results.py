"""Ticker headers and stored results.

Revision ID: 0006
Revises: 0005

* ``tickerq_tickers.headers``: a time ticker's headers (a JSON object of text to
  text: trace context, tenant, correlation id), NULL when it has none.
* ``tickerq_tickers.result``: what the row's last attempt returned (any JSON
  value), NULL while none succeeded.
* ``tickerq_attempts.result``: what that attempt returned, NULL unless it
  succeeded.

All three are nullable and have no default, so adding them rewrites no row
(PostgreSQL and SQLite both add such a column by changing the table's
definition only). As ``request``, they are JSON on PostgreSQL and TEXT holding
JSON text on SQLite, where a column declared JSON has NUMERIC affinity and
would turn a result that is a bare number into an INTEGER or REAL (see 0003).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("tickerq_tickers", "headers"),
    ("tickerq_tickers", "result"),
    ("tickerq_attempts", "result"),
)


def _json() -> sa.types.TypeEngine[Any]:
    """JSON on PostgreSQL; TEXT (JSON text that keeps its type) on SQLite."""
    return sa.Text() if op.get_bind().dialect.name == "sqlite" else sa.JSON()


def upgrade() -> None:
    """Add the columns (unless tables stamped from a newer layout have them)."""
    inspector = sa.inspect(op.get_bind())
    present = {
        table: {c["name"] for c in inspector.get_columns(table)}
        for table in {table for table, _ in _COLUMNS}
    }
    for table, name in _COLUMNS:
        if name not in present[table]:
            op.add_column(table, sa.Column(name, _json(), nullable=True))


def downgrade() -> None:
    """Drop the columns."""
    for table, name in reversed(_COLUMNS):
        op.drop_column(table, name)

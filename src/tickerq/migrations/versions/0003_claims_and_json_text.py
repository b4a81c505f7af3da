"""Claim tokens, lost-run counts, and JSON payloads that keep their type on SQLite.

Revision ID: 0003
Revises: 0002

* ``tickerq_tickers.claims``: how many times the row was claimed. A result is
  written only under the claim it belongs to, so the late result of a run whose
  lease ran out (its node froze) never lands on the row's newer claim.
* ``tickerq_tickers.stale_restarts``: how many runs of the row were lost (their
  node stopped heartbeating); past the function's ``max_stale_restarts`` the row
  ends instead of running again.
* SQLite only: the ``request`` columns were declared ``JSON``, which SQLite gives
  NUMERIC affinity: a payload that is a bare number was stored as an INTEGER or
  REAL, not as JSON text. They become TEXT columns; numbers stored that way are
  written back as their JSON text. (Adding, copying, dropping and renaming a
  column keep the table, its indexes and the foreign keys that point at it.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_REQUEST_TABLES = ("tickerq_tickers", "tickerq_cron_tickers")


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    """Add the two counters; on SQLite, make the request columns TEXT."""
    present = _columns("tickerq_tickers")
    for name in ("claims", "stale_restarts"):
        if name not in present:
            op.add_column(
                "tickerq_tickers",
                sa.Column(name, sa.Integer(), nullable=False, server_default="0"),
            )
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _REQUEST_TABLES:
        declared = {c["name"]: str(c["type"]) for c in sa.inspect(op.get_bind()).get_columns(table)}
        if declared.get("request", "").upper() == "TEXT":
            continue
        op.execute(f"ALTER TABLE {table} ADD COLUMN request_text TEXT")
        op.execute(
            f"UPDATE {table} SET request_text = CASE "
            "WHEN typeof(request) IN ('integer', 'real') THEN CAST(request AS TEXT) "
            "ELSE request END"
        )
        op.execute(f"ALTER TABLE {table} DROP COLUMN request")
        op.execute(f"ALTER TABLE {table} RENAME COLUMN request_text TO request")


def downgrade() -> None:
    """Drop the counters (the request columns stay TEXT: JSON text reads the same)."""
    op.drop_column("tickerq_tickers", "stale_restarts")
    op.drop_column("tickerq_tickers", "claims")

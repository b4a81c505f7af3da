"""Constants and helpers shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""Where every test's manual clock starts (a Monday)."""

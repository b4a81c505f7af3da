"""Cheap detection of other connections' commits to a SQLite file.

``PRAGMA data_version`` on a connection changes when any other connection
commits to the file (in this process or another): reading it costs a few
microseconds, however big the database is. An idle engine reads it on each
poll and queries for due work only when it moved.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SqliteWatcher"]


class SqliteWatcher:
    """A connection of its own that only reads ``PRAGMA data_version``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._version: int | None = None

    def changed(self) -> bool:
        """True if another connection committed since the last call (and on the
        first call, or when the file could not be read: then look anyway)."""
        try:
            if self._db is None:
                self._db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=0.05
                )
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True
        moved = version != self._version
        self._version = version
        return moved

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        db, self._db = self._db, None
        self._version = None
        if db is not None:
            db.close()

"""Row ids: UUIDs whose first bits are the time they were made (RFC 9562 version 7).

A store keeps its rows in B-trees keyed by id (the tickers' primary key, the
attempts' ``ticker_id`` index). Random ids (version 4) put every insert at a
random page of those trees: on a table of a million rows most inserts then touch
a page that is not in the cache, and a commit writes back many scattered pages.
Ids that start with the time put each new row next to the rows made just before
it, so the pages a drain writes stay few and hot whatever the size of the table
(measured in ``bench/scale.py``: see bench/scale-results.md).

The remaining 74 bits are random (``os.urandom``), so ids stay unguessable
enough to be used in URLs and unique across nodes without coordination. The
time part reads the wall clock, not the app's clock: it only orders the index,
and nothing reads a time back out of an id.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

__all__ = ["id_at", "new_id"]

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 80) - 1)
"""The 80 low bits with the version and variant fields cleared."""


def new_id() -> UUID:
    """A new row id, made now: see :func:`id_at`."""
    return id_at(time.time_ns() // 1_000_000)


def id_at(millis: int) -> UUID:
    """A new id made at ``millis`` (Unix time in milliseconds, kept modulo 2**48):
    48 bits of that time, then version 7, then 74 random bits (with the RFC
    variant), as RFC 9562 lays out a version 7 UUID."""
    tail = int.from_bytes(os.urandom(10), "big") & _KEEP
    return UUID(int=(millis & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_7 | _VARIANT_RFC | tail)

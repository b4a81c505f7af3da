"""Functions this process has not registered but the cluster knows.

A dashboard may serve a cluster whose job code runs on other nodes. The
managers accept such a function when their caller opts in
(``allow_unregistered=True``) and the cluster knows it: a node reported it in its
heartbeat, a cron ticker runs it or time tickers of it exist. Any other name is
refused as an unknown function.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tickerq.errors import FunctionNotFoundError
from tickerq.stores.base import Store, TickerQuery

if TYPE_CHECKING:
    from tickerq.functions import FunctionRegistry

__all__ = ["KNOWN_FOR", "check_known", "names_in_use"]

KNOWN_FOR = 5.0
"""Seconds a store's function names, once read, answer :func:`check_known` (a name
not among them is read again at once)."""

_known: weakref.WeakKeyDictionary[Store, tuple[float, frozenset[str]]] = weakref.WeakKeyDictionary()


async def names_in_use(store: Store, reported: Iterable[str] | None = None) -> set[str]:
    """Function names the cluster uses: those the nodes reported in their heartbeats
    and those cron tickers run.

    ``reported``: the nodes' function names, when the caller has read the nodes
    already (else they are read here).
    """
    if reported is None:
        reported = [name for node in await store.nodes() for name in node.functions]
    names = set(reported)
    names.update(cron.function for cron in await store.query_cron_tickers(None))
    return names


async def check_known(
    functions: FunctionRegistry, store: Store, function: str, *, cached: bool = False
) -> None:
    """Return when ``function`` is registered in ``functions`` or the cluster (using
    ``store``) knows it; else raise FunctionNotFoundError listing the names it knows.

    Known: in :func:`names_in_use`, or time tickers of it exist (some node runs or
    ran it). ``cached``: a name found in the last :data:`KNOWN_FOR` seconds is
    taken as known without a read (a producer enqueueing by name).
    """
    if function in functions:
        return
    known = _known.get(store) if cached else None
    if known is not None and known[0] > time.monotonic() and function in known[1]:
        return  # a producer enqueueing by name: no reads per enqueue
    used = await names_in_use(store)
    _known[store] = (time.monotonic() + KNOWN_FOR, frozenset(used))
    names = functions.names() | used
    if function in names:
        return
    if await store.count_time_tickers(TickerQuery(function=function, limit=1)):
        return
    raise FunctionNotFoundError(function, sorted(names))

"""``app.time_tickers`` and ``app.cron_tickers``: add, change and inspect tickers;
``app.pauses``: pause and resume functions or the whole cluster.

Every input is checked before anything is stored; a bad value raises an error
that names it.

A function must be registered in this process, unless the caller passes
``allow_unregistered=True`` (the dashboard does: it may serve a cluster whose job
code runs elsewhere). Then a function the cluster knows (see
:mod:`tickerq.known_functions`) is accepted too: its request is stored as plain
JSON, with the same bounds and size limit, and the node that runs it validates it.

The managers are built from their collaborators, assembled by :class:`tickerq.TickerQ`:
the store, the clock, the function registry
(:class:`tickerq.functions.FunctionRegistry`) and this process's engine as far as
they need it (:class:`tickerq.local.LocalEngine`: wake it, cancel a job it runs).
"""

from tickerq.managers.cron_tickers import CronTickerManager
from tickerq.managers.pauses import PauseManager
from tickerq.managers.time_tickers import TimeTickerManager, TimeTickerSpec

__all__ = ["CronTickerManager", "PauseManager", "TimeTickerManager", "TimeTickerSpec"]

"""``app.pauses``: pause and resume functions, or the whole cluster, on every node.

A pause is stored (see :meth:`tickerq.stores.base.Store.set_pause`) and every
claim reads the stored pauses in its own transaction, so once :meth:`PauseManager.pause`
has returned, no node sharing the store starts a job of a paused function
(nothing at all while the cluster is paused) until it is resumed; it outlives
restarts. Jobs already running go on; the paused function's tickers
wait, IDLE, without using an attempt, and its crons go on making their
occurrences, which wait too. Adding and scheduling tickers goes on as usual.

``app.pause()`` is another thing: it stops this process's engine only, and is
not stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tickerq.errors import InvalidArgumentError
from tickerq.known_functions import check_known
from tickerq.managers._common import UsesStore, function_name
from tickerq.models import CLUSTER, Pause
from tickerq.validation import MAX_NAME_LENGTH, check_text

if TYPE_CHECKING:
    from tickerq.clock import Clock
    from tickerq.functions import FunctionRegistry
    from tickerq.local import LocalEngine
    from tickerq.stores.base import Store

__all__ = ["PauseManager"]


class PauseManager(UsesStore):
    """Pauses and resumes functions and the whole cluster, for every node: ``app.pauses``.

    ``by`` (who paused) defaults to this process's node id; the dashboard passes
    its user's name.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        functions: FunctionRegistry,
        engine: LocalEngine,
        *,
        node_id: str,
    ) -> None:
        self._store = store
        self._clock = clock
        self._functions = functions
        self._engine = engine
        self._node_id = node_id

    async def pause(self, function: str, *, by: str | None = None) -> Pause:
        """Pause ``function`` on every node; the pause that holds (an earlier one, if
        it was paused already).

        The function must be registered here or known to the cluster (a node
        reported it, a cron ticker or time tickers use it); else
        FunctionNotFoundError, and nothing is stored.
        """
        name = self._name(function)
        who = self._who(by)
        await check_known(self._functions, self._store, name)
        return await self._set(name, who)

    async def resume(self, function: str) -> bool:
        """Resume ``function``; True if it was paused, False if it was not (a name
        neither paused nor known raises FunctionNotFoundError)."""
        name = self._name(function)
        if await self._store.clear_pause(name, self._clock.now()):
            self._engine.pauses_changed()
            return True
        await check_known(self._functions, self._store, name)
        return False

    async def pause_cluster(self, *, by: str | None = None) -> Pause:
        """Pause every function on every node: no job starts anywhere until
        :meth:`resume_cluster` (functions paused on their own stay paused after it)."""
        return await self._set(CLUSTER, self._who(by))

    async def resume_cluster(self) -> bool:
        """End the cluster's pause; True if it was paused."""
        if await self._store.clear_pause(CLUSTER, self._clock.now()):
            self._engine.pauses_changed()
            return True
        return False

    async def get(self, function: str) -> Pause | None:
        """The pause of ``function`` (``"*"``: of the cluster), or None."""
        name = function_name(function)
        return (await self._store.pauses()).get(name)

    async def query(self) -> list[Pause]:
        """Every pause: the cluster's first (if any), then the functions' by name."""
        pauses = await self._store.pauses()
        return sorted(pauses.values(), key=lambda p: (not p.cluster, p.function))

    async def _set(self, function: str, by: str) -> Pause:
        pause = Pause(function=function, paused_at=self._clock.now(), paused_by=by)
        held = await self._store.set_pause(pause)
        if held == pause:  # stored now (not paused already)
            self._engine.pauses_changed()
        return held

    @staticmethod
    def _name(function: Any) -> str:
        name = check_text(function_name(function), "function", max_length=MAX_NAME_LENGTH)
        if name == CLUSTER:
            raise InvalidArgumentError(
                f"{CLUSTER!r} names no function: pause or resume the whole cluster with "
                "pause_cluster() and resume_cluster()"
            )
        return name

    def _who(self, by: Any) -> str:
        if by is None:
            return self._node_id
        return check_text(by, "by", max_length=MAX_NAME_LENGTH)

"""What the dashboard does, shared by its pages and its JSON API.

Reads turn store rows into the API's models (payloads through the redaction
hook); operations check their input, change the store through the app's
managers and log who did what on the ``tickerq.dashboard`` logger.

A standalone dashboard (``tickerq dashboard --store URL``) has no functions
registered: it can still add tickers for functions the cluster knows (a node
reported them, a cron ticker or time tickers use them); the managers store
their request as plain JSON (``allow_unregistered=True``) and the node that
runs them validates it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tickerq.cron import parse_timezone
from tickerq.dashboard.auth import DashboardUser
from tickerq.dashboard.pauses import PauseOps, pause_out
from tickerq.dashboard.queries import Queries, TickerPage
from tickerq.dashboard.schemas import (
    AttemptOut,
    CronPreviewOut,
    CronTickerIn,
    CronTickerOut,
    CronTickerUpdate,
    DueOut,
    EngineOut,
    FunctionOut,
    NodeOut,
    OccurrenceOut,
    OverviewOut,
    RateLimitOut,
    ThroughputOut,
    TimeTickerIn,
    TimeTickerOut,
    TimeTickerUpdate,
)
from tickerq.enums import Status, TickerKind
from tickerq.errors import TickerStateError
from tickerq.firing import parse_cached
from tickerq.known_functions import names_in_use
from tickerq.limits import Gates, limit_label, rate_limit_text
from tickerq.models import CLUSTER, Attempt, CronOccurrence, CronTicker, Pause, TimeTicker
from tickerq.operations import BulkResult
from tickerq.validation import json_copy

if TYPE_CHECKING:
    from tickerq.app import TickerQ

__all__ = ["Redactor", "Service", "audit"]

audit = logging.getLogger("tickerq.dashboard")
"""Every manual operation is logged here (INFO) with the user who did it."""

Redactor = Callable[[str, Any], Any]
"""``redact(function_name, payload) -> payload`` shown instead of the stored one."""

REDACTION_FAILED = "[hidden: the redaction hook failed]"


_SECRET_NAME = re.compile(r"auth|token|secret|passw|cookie|key|session", re.IGNORECASE)
MASKED = "••••••"
"""Shown instead of the value of a header whose name looks secret."""


def shown_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """A ticker's headers as the dashboard shows them, by name, secret-looking
    values masked."""
    return [
        (name, MASKED if _SECRET_NAME.search(name) else value)
        for name, value in sorted(headers.items())
    ]


class Service:
    """Reads and operations over one app, for the dashboard."""

    def __init__(self, app: TickerQ, redact: Redactor | None = None) -> None:
        self.app = app
        self.redact_hook = redact
        self.queries = Queries(app.store)
        self.pauses = PauseOps(app, self._log)
        """Stored pauses of functions and of the whole cluster."""

    # -- helpers -----------------------------------------------------------------------

    def now(self) -> datetime:
        """The app clock's time."""
        return self.app.clock.now()

    def redact(self, function: str, payload: Any) -> Any:
        """The payload as the dashboard may show it."""
        if self.redact_hook is None or payload is None:
            return payload
        try:
            return self.redact_hook(function, json_copy(payload))
        except Exception:
            audit.exception("redact(%r, ...) failed; the payload is hidden", function)
            return REDACTION_FAILED

    def ticker_out(self, ticker: TimeTicker) -> TimeTickerOut:
        """A time ticker for the API."""
        out = TimeTickerOut.model_validate(ticker)
        out.request = self.redact(ticker.function, ticker.request)
        out.result = self.redact(ticker.function, ticker.result)
        out.headers = dict(shown_headers(ticker.headers))
        return out

    def cron_out(self, cron: CronTicker, previews: int = 0) -> CronTickerOut:
        """A cron ticker for the API, with its expression in words and next fires."""
        out = CronTickerOut.model_validate(cron)
        out.request = self.redact(cron.function, cron.request)
        try:
            expr = parse_cached(cron.expression, cron.timezone)
            out.description_of_expression = expr.describe()
            fire = self.now()
            for _ in range(previews):
                fire = expr.next_after(fire)
                out.next_fires.append(fire)
        except ValueError:
            out.description_of_expression = cron.expression
        return out

    def occurrence_out(self, occurrence: CronOccurrence) -> OccurrenceOut:
        """An occurrence for the API."""
        out = OccurrenceOut.model_validate(occurrence)
        out.result = self.redact(occurrence.function, occurrence.result)
        return out

    def attempt_out(self, attempt: Attempt, function: str) -> AttemptOut:
        """An attempt (of a run of ``function``) for the API."""
        out = AttemptOut.model_validate(attempt)
        out.result = self.redact(function, attempt.result)
        return out

    def engine_out(self) -> EngineOut:
        """This process's engine state."""
        engine = self.app.engine
        return EngineOut(node=self.app.node_id, running=engine.running, paused=engine.paused)

    # -- reads -------------------------------------------------------------------------

    async def nodes(self) -> list[NodeOut]:
        """Every node with its heartbeat age and the rows it holds."""
        now = self.now()
        locks = await self.queries.locks_by_node()
        stale_after = max(self.app.engine.options.heartbeat_interval * 3, 30.0)
        out = []
        for node in sorted(await self.app.store.nodes(), key=lambda n: n.id):
            age = max((now - node.last_heartbeat).total_seconds(), 0.0)
            out.append(
                NodeOut(
                    id=node.id,
                    started_at=node.started_at,
                    last_heartbeat=node.last_heartbeat,
                    heartbeat_age_s=round(age, 1),
                    stale=age > stale_after,
                    version=node.version,
                    max_concurrency=node.max_concurrency,
                    active=node.active,
                    locks_held=locks.get(node.id, 0),
                    functions=list(node.functions),
                )
            )
        return out

    async def functions(
        self, nodes: Sequence[NodeOut] | None = None, pauses: Mapping[str, Pause] | None = None
    ) -> list[FunctionOut]:
        """Registered functions, plus names only nodes, cron tickers or pauses know;
        each with its pause and the due jobs a pause holds back."""
        out: dict[str, FunctionOut] = {}
        for name, fn in sorted(self.app.functions.items()):
            request_type = fn.request_type
            if request_type is None or request_type is type(None):
                type_name = None
            elif request_type is Any:
                type_name = "JSON"
            else:
                type_name = getattr(request_type, "__name__", None) or repr(request_type)
            out[name] = FunctionOut(
                name=name,
                registered=True,
                request_type=type_name,
                priority=fn.options.priority,
                max_concurrency=fn.options.max_concurrency,
                retries=fn.options.retries,
                timeout=fn.options.timeout,
                cron=fn.options.cron,
            )
        if nodes is None:
            nodes = await self.nodes()
        others = await names_in_use(self.app.store, [f for n in nodes for f in n.functions])
        if pauses is None:
            pauses = await self.pauses.read()
        others.update(name for name in pauses if name != CLUSTER)
        for name in sorted(others - out.keys()):
            out[name] = FunctionOut(
                name=name,
                registered=False,
                request_type=None,
                priority=None,
                max_concurrency=None,
                retries=None,
                timeout=None,
                cron=None,
            )
        now = self.now()
        gates = self.app.engine.gates()
        # Due jobs by function, read once (from the waiting rows) and only when a
        # pause or a rate limit may hold some back.
        due: dict[str, int] = {}
        if pauses or (gates is not None and gates.buckets):
            for group in await self.app.store.depth(now):
                due[group.function] = due.get(group.function, 0) + group.due
        held = self.pauses.held(pauses, due)
        for name, shown in out.items():
            pause = pauses.get(name)
            shown.paused = None if pause is None else pause_out(pause)
            shown.paused_due = held.get(name, 0)
        if gates is not None:
            await self._limits_of(out, pauses, gates, due, now)
        return list(out.values())

    async def _limits_of(
        self,
        out: dict[str, FunctionOut],
        pauses: Mapping[str, Pause],
        gates: Gates,
        due: Mapping[str, int],
        now: datetime,
    ) -> None:
        """Each registered function's rate limits (with how full their windows are),
        its per-key limit, and its due jobs a full rate limit holds back."""
        used = await self.app.store.rate_usage(
            {b: rate.per for b, rate in gates.buckets.items()}, now
        )
        for name, shown in out.items():
            if name not in self.app.functions:
                continue
            shown.max_per_key = gates.per_key.get(name)
            for bucket in gates.buckets_of(name):
                rate = gates.buckets[bucket]
                count = used.get(bucket, 0)
                shown.rate_limits.append(
                    RateLimitOut(
                        name=limit_label(bucket),
                        limit=rate_limit_text(rate),
                        used=count,
                        full=count >= rate.limit,
                    )
                )
            paused = CLUSTER in pauses or name in pauses
            if not paused and any(r.full for r in shown.rate_limits):
                shown.throttled_due = due.get(name, 0)

    async def throughput(self, hours: int, bucket_seconds: int) -> ThroughputOut:
        """Ended rows per bucket over the last ``hours``."""
        buckets = await self.queries.throughput(
            self.now(), timedelta(hours=hours), timedelta(seconds=bucket_seconds)
        )
        return ThroughputOut(
            bucket_seconds=bucket_seconds,
            t=[int(b.start.timestamp()) for b in buckets],
            succeeded=[b.succeeded for b in buckets],
            failed=[b.failed for b in buckets],
            other=[b.other for b in buckets],
        )

    async def overview(self) -> OverviewOut:
        """Everything on the overview page."""
        now = self.now()
        nodes = await self.nodes()
        counts = await self.queries.status_counts()
        day = await self.queries.throughput(now, timedelta(hours=24), timedelta(hours=1))
        ok = sum(b.succeeded for b in day)
        failed = sum(b.failed for b in day)
        other = sum(b.other for b in day)
        live = [n for n in nodes if not n.stale]
        pauses = await self.pauses.read()
        cluster = pauses.get(CLUSTER)
        return OverviewOut(
            now=now,
            engine=self.engine_out(),
            next_due=[
                DueOut(kind=d.kind, id=d.id, function=d.function, execution_time=d.execution_time)
                for d in await self.queries.next_due(5)
            ],
            status_counts={k.value: {s.value: n for s, n in v.items()} for k, v in counts.items()},
            success_rate_24h=round(ok / (ok + failed), 4) if ok + failed else None,
            finished_24h=ok + failed + other,
            active=sum(n.active for n in live),
            slots=sum(n.max_concurrency for n in live),
            nodes=nodes,
            functions=await self.functions(nodes, pauses),
            cluster_pause=None if cluster is None else pause_out(cluster),
        )

    def cron_preview(self, expression: str, timezone: str | None, n: int) -> CronPreviewOut:
        """Check an expression in a timezone and list its next ``n`` fires."""
        tz = timezone or self.app.timezone
        zone = parse_timezone(tz)
        expr = parse_cached(" ".join(expression.split()), str(zone))
        fires: list[datetime] = []
        fire = self.now()
        for _ in range(n):
            fire = expr.next_after(fire)
            fires.append(fire)
        return CronPreviewOut(
            expression=expr.expression,
            timezone=str(zone),
            description=expr.describe(),
            next_fires=fires,
            next_fires_local=[
                f.astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S %Z") for f in fires
            ],
        )

    async def time_ticker_page(
        self,
        *,
        statuses: Sequence[Status] | None = None,
        function: str | None = None,
        text: str | None = None,
        roots_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> TickerPage:
        """A filtered page of time tickers, latest execution time first, and the total."""
        return await self.queries.time_tickers(
            statuses=statuses,
            function=function,
            text=text,
            roots_only=roots_only,
            limit=limit,
            offset=offset,
        )

    async def chain_trees(
        self, roots: Sequence[UUID], max_depth: int = 6
    ) -> dict[UUID, list[tuple[int, TimeTicker]]]:
        """The chain below each root, depth first, with each row's depth (at most
        ``max_depth`` levels, 200 children a row): one query per level for all roots."""
        kids: dict[UUID, list[TimeTicker]] = {}
        level = list(dict.fromkeys(roots))
        for _ in range(max_depth):
            found = await self.queries.children_of([p for p in level if p not in kids])
            kids.update(found)
            level = [k.id for row in found.values() for k in row]
            if not level:
                break

        def walk(parent: UUID, depth: int, out: list[tuple[int, TimeTicker]]) -> None:
            if depth >= max_depth:
                return
            for kid in kids.get(parent, ()):
                out.append((depth + 1, kid))
                walk(kid.id, depth + 1, out)

        trees: dict[UUID, list[tuple[int, TimeTicker]]] = {}
        for root in roots:
            trees[root] = []
            walk(root, 0, trees[root])
        return trees

    async def children_tree(self, root: UUID, depth: int = 0) -> list[tuple[int, TimeTicker]]:
        """The chain below ``root``, depth first, with each row's depth (at most 6 levels)."""
        return (await self.chain_trees([root], max_depth=6 - depth))[root]

    # -- operations --------------------------------------------------------------------

    def _log(self, user: DashboardUser, action: str, target: object = "", **extra: Any) -> None:
        audit.info(
            "dashboard: %s %s %s",
            user.name,
            action,
            target,
            extra={"user": user.name, "action": action, "target": str(target), **extra},
        )

    async def add_time_ticker(self, user: DashboardUser, data: TimeTickerIn) -> TimeTicker:
        """Add a time ticker (of a function this process has or the cluster knows)."""
        ticker = await self.app.time_tickers.add(
            data.function,
            request=data.request,
            execution_time=data.execution_time,
            description=data.description,
            retries=data.retries,
            retry_intervals=data.retry_intervals,
            timeout=data.timeout,
            headers=data.headers,
            allow_unregistered=True,
            unique_key=data.unique_key,
            on_conflict=data.on_conflict,
        )
        outcome = ticker.enqueued.value if ticker.enqueued is not None else ""
        self._log(user, "added time ticker", ticker.id, function=ticker.function, outcome=outcome)
        return ticker

    async def update_time_ticker(
        self, user: DashboardUser, ticker_id: UUID, data: TimeTickerUpdate
    ) -> TimeTicker:
        """Change a waiting time ticker (only the fields that were given)."""
        ticker = await self.app.time_tickers.update(
            ticker_id, allow_unregistered=True, **self._update_kwargs(data)
        )
        self._log(user, "changed time ticker", ticker_id, fields=sorted(data.model_fields_set))
        return ticker

    async def update_many(
        self, user: DashboardUser, ids: Sequence[UUID], data: TimeTickerUpdate
    ) -> BulkResult:
        """Change several waiting time tickers the same way (only the fields given)."""
        result = await self.app.time_tickers.update_many(
            ids, allow_unregistered=True, **self._update_kwargs(data)
        )
        self._log_bulk(user, result, fields=sorted(data.model_fields_set))
        return result

    def _update_kwargs(self, data: TimeTickerUpdate) -> dict[str, Any]:
        """The manager's arguments for the fields given (null times: now; null
        description or retries: unchanged)."""
        given = data.model_fields_set
        kwargs: dict[str, Any] = {}
        for name in ("execution_time", "description", "retries", "retry_intervals", "timeout"):
            if name in given:
                value = getattr(data, name)
                if value is None and name in ("execution_time", "description", "retries"):
                    if name == "execution_time":
                        kwargs[name] = self.now()
                    continue
                kwargs[name] = value
        if "request" in given:
            kwargs["request"] = data.request
        if "unique_key" in given:
            kwargs["unique_key"] = data.unique_key
        return kwargs

    async def duplicate(self, user: DashboardUser, ticker_id: UUID) -> TimeTicker:
        """A copy of a time ticker, due now (without its chain), with its unique key:
        while the key is held (by the ticker itself, if it still waits or runs), the
        copy is refused with DuplicateJobError naming the holder."""
        source = await self.app.time_tickers.get(ticker_id)
        data = TimeTickerIn(
            function=source.function,
            request=source.request,
            description=source.description,
            retries=source.retries,
            retry_intervals=list(source.retry_intervals)
            if source.retry_intervals is not None
            else None,
            timeout=source.timeout,
            headers=dict(source.headers) or None,
            unique_key=source.unique_key,
            on_conflict="error",
        )
        ticker = await self.add_time_ticker(user, data)
        self._log(user, "duplicated time ticker", ticker_id, copy=str(ticker.id))
        return ticker

    async def cancel(self, user: DashboardUser, kind: TickerKind, ticker_id: UUID) -> None:
        """Cancel a waiting ticker or ask its node to cancel the running one."""
        if kind is TickerKind.TIME:
            await self.app.time_tickers.cancel(ticker_id)
        else:
            await self.app.cron_tickers.cancel_occurrence(ticker_id)
        self._log(user, f"cancelled {kind.value.lower()}", ticker_id)

    async def retry(self, user: DashboardUser, kind: TickerKind, ticker_id: UUID) -> None:
        """Run an ended (or waiting) ticker again now."""
        if kind is TickerKind.TIME:
            await self.app.time_tickers.retry(ticker_id)
        else:
            await self.app.cron_tickers.retry_occurrence(ticker_id)
        self.queries.forget()
        self._log(user, f"retried {kind.value.lower()}", ticker_id)

    async def cancel_many(
        self, user: DashboardUser, kind: TickerKind, ids: Sequence[UUID]
    ) -> BulkResult:
        """Cancel several tickers (or occurrences): each is reported."""
        if kind is TickerKind.TIME:
            result = await self.app.time_tickers.cancel_many(ids)
        else:
            result = await self.app.cron_tickers.cancel_occurrences(ids)
        self._log_bulk(user, result)
        return result

    async def retry_many(
        self, user: DashboardUser, kind: TickerKind, ids: Sequence[UUID]
    ) -> BulkResult:
        """Run several ended tickers (or occurrences) again now: each is reported."""
        if kind is TickerKind.TIME:
            result = await self.app.time_tickers.retry_many(ids)
        else:
            result = await self.app.cron_tickers.retry_occurrences(ids)
        self.queries.forget()
        self._log_bulk(user, result)
        return result

    def _log_bulk(self, user: DashboardUser, result: BulkResult, **extra: Any) -> None:
        what = "time tickers" if result.kind is TickerKind.TIME else "cron occurrences"
        self._log(
            user,
            f"{result.action} {what}",
            f"{len(result)} id(s)",
            done=len(result.done),
            requested=len(result.requested),
            skipped=len(result.skipped),
            summary=result.summary(),
            **extra,
        )

    async def delete(self, user: DashboardUser, ticker_id: UUID) -> None:
        """Delete a time ticker and its chain."""
        await self.app.time_tickers.delete(ticker_id)
        self.queries.forget()
        self._log(user, "deleted time ticker", ticker_id)

    async def delete_many(self, user: DashboardUser, ids: Sequence[UUID]) -> int:
        """Delete several time tickers (unknown ids are ignored)."""
        count = await self.app.time_tickers.delete_many(list(ids))
        self.queries.forget()
        self._log(user, "deleted time tickers", f"{len(ids)} id(s)", deleted=count)
        return count

    async def add_cron(self, user: DashboardUser, data: CronTickerIn) -> CronTicker:
        """Add a cron ticker (of a function this process has or the cluster knows)."""
        cron = await self.app.cron_tickers.add(
            data.function,
            data.expression,
            timezone=data.timezone,
            request=data.request,
            retries=data.retries,
            retry_intervals=data.retry_intervals,
            misfire=data.misfire,
            description=data.description,
            enabled=data.enabled,
            allow_unregistered=True,
        )
        self._log(user, "added cron ticker", cron.id, function=cron.function)
        return cron

    async def update_cron(
        self, user: DashboardUser, cron_id: UUID, data: CronTickerUpdate
    ) -> CronTicker:
        """Change a cron ticker (only the fields that were given)."""
        given = data.model_fields_set
        kwargs: dict[str, Any] = {}
        for name in ("expression", "timezone", "retries", "retry_intervals", "misfire"):
            if name in given and (getattr(data, name) is not None or name == "retry_intervals"):
                kwargs[name] = getattr(data, name)
        if "description" in given:
            kwargs["description"] = data.description or ""
        if "request" in given:
            kwargs["request"] = data.request
        cron = await self.app.cron_tickers.update(cron_id, allow_unregistered=True, **kwargs)
        self._log(user, "changed cron ticker", cron_id, fields=sorted(given))
        return cron

    async def delete_cron(self, user: DashboardUser, cron_id: UUID) -> None:
        """Delete a cron ticker and its waiting occurrences."""
        await self.app.cron_tickers.get(cron_id)
        await self.app.cron_tickers.delete(cron_id)
        self._log(user, "deleted cron ticker", cron_id)

    async def set_enabled(self, user: DashboardUser, cron_id: UUID, enabled: bool) -> CronTicker:
        """Enable or disable a cron ticker."""
        if enabled:
            cron = await self.app.cron_tickers.enable(cron_id)
        else:
            cron = await self.app.cron_tickers.disable(cron_id)
        self._log(user, "enabled cron ticker" if enabled else "disabled cron ticker", cron_id)
        return cron

    async def run_cron_now(self, user: DashboardUser, cron_id: UUID) -> CronOccurrence:
        """Make an extra occurrence of a cron ticker due now."""
        occurrence = await self.app.cron_tickers.run_now(cron_id, allow_unregistered=True)
        self._log(user, "ran cron ticker now", cron_id, occurrence=str(occurrence.id))
        return occurrence

    def set_paused(self, user: DashboardUser, paused: bool) -> EngineOut:
        """Pause or resume this process's engine (this node only; the stored pauses
        of every node are in :attr:`pauses`)."""
        if not self.app.engine.running:
            raise TickerStateError(
                f"no engine runs in this process (node {self.app.node_id}); "
                "pause and resume act on the engine of the process serving the dashboard"
            )
        if paused:
            self.app.pause()
        else:
            self.app.resume()
        self._log(user, "paused engine" if paused else "resumed engine", self.app.node_id)
        return self.engine_out()

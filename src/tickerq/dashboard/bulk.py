"""The pages' bulk actions (cancel or retry the selected rows) and the notice that
tells what they did.

After a bulk action the browser is sent back to the list it came from (its
filters and page kept, from the form's ``back`` field) with the result in the
query: counts, skipped rows grouped by status, and the first skipped ids. The
page rebuilds the notice from those values alone (statuses, numbers, ids): no
text from the query is shown, so a crafted link cannot put words on the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl
from uuid import UUID

from starlette.datastructures import FormData, QueryParams

from tickerq.dashboard.context import DashboardError
from tickerq.enums import Status, TickerKind
from tickerq.operations import MAX_BULK_IDS, RULES, BulkItem, BulkResult

__all__ = ["SHOWN_SKIPPED", "BulkNotice", "back_query", "notice_of", "result_query", "selected"]

SHOWN_SKIPPED = 20
"""Skipped rows the notice names one by one (the others are counted)."""

MISSING = "missing"
"""How a row that was not found is written in the query."""

HELD = "held"
"""How a row refused because its unique key is held is written in the query."""

HELD_REASON = "its unique key is held by another ticker that waits or runs"

_BACK_KEYS = {"status", "function", "q", "view", "page"}
"""The list's own query parameters a bulk action keeps."""


def selected(form: FormData) -> list[UUID]:
    """The checked rows' ids (``ids`` fields); 422 naming a bad one, or when none is
    checked or more than :data:`MAX_BULK_IDS` are."""
    raw = form.getlist("ids")
    if not raw:
        raise DashboardError(422, "select at least one row first")
    if len(raw) > MAX_BULK_IDS:
        raise DashboardError(422, f"{len(raw):,} rows selected; at most {MAX_BULK_IDS:,} at once")
    ids = []
    for value in raw:
        try:
            ids.append(UUID(str(value)))
        except ValueError:
            raise DashboardError(422, f"{value!r} is not a ticker id") from None
    return ids


def back_query(form: FormData) -> dict[str, str]:
    """The list's filters and page from the form's ``back`` field (a query string),
    only the list's own keys, each cut to 200 characters."""
    raw = form.get("back")
    if not isinstance(raw, str):
        return {}
    return {k: v[:200] for k, v in parse_qsl(raw[:2000]) if k in _BACK_KEYS and v}


def _code(item: BulkItem) -> str:
    if item.held_by is not None:
        return HELD
    return item.status.value if item.status is not None else MISSING


def result_query(result: BulkResult) -> dict[str, str]:
    """The query parameters that carry ``result`` to the page it goes back to."""
    skipped = result.skipped
    groups = Counter(_code(i) for i in skipped)
    return {
        "did": result.action,
        "done": str(len(result.done)),
        "asked": str(len(result.requested)),
        "skipped": ",".join(f"{code}.{n}" for code, n in sorted(groups.items())),
        "skipped_ids": ",".join(f"{i.id}.{_code(i)}" for i in skipped[:SHOWN_SKIPPED]),
    }


@dataclass(frozen=True, slots=True)
class BulkNotice:
    """What a bulk action did, for the page: a sentence, and the skipped rows named
    one by one (id, status or None when not found, why)."""

    text: str
    skipped: list[tuple[UUID, Status | None, str]]
    """Status None: not found, or (with :data:`HELD_REASON`) its unique key is held."""
    more: int
    """Skipped rows not named."""
    all_done: bool
    missing: frozenset[UUID] = frozenset()
    """The named rows that were not found (the others are linked)."""

    def exists(self, ticker_id: UUID) -> bool:
        """Whether a named skipped row was found (so the page links to it)."""
        return ticker_id not in self.missing


def notice_of(params: QueryParams, kind: TickerKind = TickerKind.TIME) -> BulkNotice | None:
    """The notice of the bulk action whose result is in ``params``; None when there
    is none, or when the values are not what :func:`result_query` writes."""
    rule = RULES.get(params.get("did", ""))
    if rule is None or rule.name == "update":
        return None
    try:
        done = _count(params.get("done", "0"))
        asked = _count(params.get("asked", "0"))
        groups = [(_code_of(code), _count(n)) for code, n in _items(params.get("skipped", ""))]
        named = [
            (UUID(head), _code_of(code)) for head, code in _items(params.get("skipped_ids", ""))
        ][:SHOWN_SKIPPED]
    except ValueError:
        return None
    noun = "ticker(s)" if kind is TickerKind.TIME else "occurrence(s)"
    verb = "Cancelled" if rule.name == "cancel" else "Retried"
    parts = [f"{verb} {done} {noun}" + (" (due now)" if rule.name == "retry" and done else "")]
    if asked:
        parts.append(f"asked the node(s) running {asked} to stop them")
    text = "; ".join(parts) + "."
    total = sum(n for _, n in groups)
    if total:
        refused = sorted((s, n) for s, n in groups if isinstance(s, Status))
        missing = sum(n for s, n in groups if s is None)
        held = sum(n for s, n in groups if s == HELD)
        why = []
        if refused:
            statuses = ", ".join(f"{n} {s.value}" for s, n in refused)
            why.append(f"{sum(n for _, n in refused)} {rule.refused_as} ({statuses})")
        if held:
            why.append(f"{held} whose unique key another ticker holds")
        if missing:
            why.append(f"{missing} not found")
        text += f" Skipped {total}: " + ", ".join(why) + "."
    skipped = [(ticker_id, *_named(rule.reason, code)) for ticker_id, code in named]
    return BulkNotice(
        text,
        skipped,
        max(total - len(skipped), 0),
        all_done=total == 0,
        missing=frozenset(ticker_id for ticker_id, code in named if code is None),
    )


def _items(raw: str) -> list[tuple[str, str]]:
    """``a.b,c.d`` as pairs; ValueError when an item has no dot."""
    pairs = []
    for item in raw[:20_000].split(","):
        if item:
            head, dot, tail = item.rpartition(".")
            if not dot:
                raise ValueError(item)
            pairs.append((head, tail))
    return pairs


def _count(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= MAX_BULK_IDS:
        raise ValueError(raw)
    return value


def _code_of(raw: str) -> Status | str | None:
    """A skipped row's code from the query: its status, HELD, or None (not found)."""
    if raw == HELD:
        return HELD
    return None if raw == MISSING else Status(raw)


def _named(reason: Callable[[Status], str], code: Status | str | None) -> tuple[Status | None, str]:
    """The status and reason a named skipped row is shown with."""
    if isinstance(code, Status):
        return code, reason(code)
    return None, HELD_REASON if code == HELD else "not found"

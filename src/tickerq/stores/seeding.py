"""Reconciling the seeded cron tickers with the crons the code declares.

A function's ``@app.function(cron=...)`` owns its seeded cron ticker: on start
the stored seeded crons are made to match the code. The plan (what to create,
change and delete) is worked out here, once for every store; each store applies
it atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tickerq.errors import InvalidArgumentError
from tickerq.stores.base import SEEDED_FIELDS

if TYPE_CHECKING:
    from tickerq.models import CronTicker

__all__ = ["SeedPlan", "changes_to", "plan_seeding"]


@dataclass(slots=True)
class SeedPlan:
    """What reconciling changes: rows to create, to keep (with their changes), to delete."""

    create: list[CronTicker] = field(default_factory=list)
    keep: list[tuple[CronTicker, dict[str, Any]]] = field(default_factory=list)
    """Each declared function's stored cron and the changes it needs (maybe none)."""
    delete: list[CronTicker] = field(default_factory=list)


def plan_seeding(stored: Sequence[CronTicker], declared: Sequence[CronTicker]) -> SeedPlan:
    """The plan that turns ``stored`` (every seeded cron, oldest first) into ``declared``.

    Per declared function the row kept is the oldest with the declared expression
    and timezone, else the oldest of that function; the others are deleted.
    """
    wanted: dict[str, CronTicker] = {}
    for cron in declared:
        if cron.function in wanted:
            raise InvalidArgumentError(f"two seeded crons declared for function {cron.function!r}")
        wanted[cron.function] = cron
    by_function: dict[str, list[CronTicker]] = {}
    for row in stored:
        by_function.setdefault(row.function, []).append(row)
    plan = SeedPlan()
    for function, rows in by_function.items():
        target = wanted.get(function)
        if target is None:
            plan.delete.extend(rows)
            continue
        keeper = next(
            (r for r in rows if (r.expression, r.timezone) == (target.expression, target.timezone)),
            rows[0],
        )
        plan.keep.append((keeper, changes_to(keeper, target)))
        plan.delete.extend(r for r in rows if r is not keeper)
    plan.create.extend(c for f, c in wanted.items() if f not in by_function)
    return plan


def changes_to(current: CronTicker, target: CronTicker) -> dict[str, Any]:
    """The field changes that give ``current`` the code-owned fields of ``target``."""
    changes = {
        name: getattr(target, name)
        for name in SEEDED_FIELDS
        if getattr(current, name) != getattr(target, name)
    }
    if "expression" in changes or "timezone" in changes:
        changes["next_fire_at"] = target.next_fire_at
    if changes:
        changes["updated_at"] = target.updated_at
    return changes

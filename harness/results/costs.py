"""What each run is charged per phase: its own measured cost, and a cached phase's build (its `cache_key`)
split equally among the runs that used it, so the amortised totals of all runs add up to what was spent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from harness.records import RunRecord

PHASE_ORDER = ("supervise", "train", "evaluate")

COSTS = ("device_hours", "flops")


def charged(records: Iterable[RunRecord], cost: str = "device_hours") -> dict[str, dict[str, float]]:
    """`cost` (device_hours or flops) charged to each run per phase, a cached phase's build split among the runs
    that used it."""
    records = list(records)
    built: dict[str, float] = {}
    carried: dict[str, float] = {}
    users: Counter[str] = Counter()
    for record in records:
        for phase in record.cost.phases.values():
            if key := phase.cache_key:
                users[key] += 1
                (carried if phase.reused else built).setdefault(key, float(getattr(phase, cost, 0.0)))
    out = {}
    for record in records:
        out[record.run_id] = {
            name: (built.get(key, carried.get(key, 0.0)) / users[key])
            if (key := phase.cache_key)
            else float(getattr(phase, cost, 0.0))
            for name, phase in record.cost.phases.items()
        }
    return out


def charged_hours(records: Iterable[RunRecord]) -> dict[str, dict[str, float]]:
    """Device-hours charged to each run per phase (see `charged`)."""
    return charged(records, "device_hours")


def ordered_phases(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [p for p in PHASE_ORDER if p in names] + sorted(names - set(PHASE_ORDER))

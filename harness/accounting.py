"""Cost accounting: every phase of a run is timed here, in one place, as device-hours.

device-hours = wall seconds x devices / 3600. A phase served from a cache records that it was reused,
what it reused (cache key), and the cost of the original build, so the run is charged once and the share
is visible.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from harness.launch import world_size
from harness.record_parts import RunCost
from kdcore.costs import PhaseCost, device_kind, reset_peak_memory, timed


def device_count() -> int:
    """Devices a phase runs on: one per process of the launch (1 without `accelerate launch` / `torchrun`)."""
    return world_size()


@dataclass
class CostLedger:
    """Collects the phases of one run in the order they ran."""

    phases: dict[str, PhaseCost] = field(default_factory=dict)
    _running: dict[str, tuple[PhaseCost, float]] = field(default_factory=dict, repr=False, compare=False)
    _settled: dict[str, PhaseCost] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def over_attempts(cls, attempts: list[dict[str, dict[str, Any]]]) -> CostLedger:
        """One run's cost over its attempts (each a `phases` mapping): fresh work is summed over attempts; a phase
        served from a cache counts once, and only when no attempt built it (a resumed run reuses its own build)."""
        ledger = cls()
        for phases in attempts:
            for name, cost in phases.items():
                if not cost["reused"]:
                    ledger.add(name, PhaseCost(**cost))
        for phases in attempts:
            for name, cost in phases.items():
                if cost["reused"] and name not in ledger.phases:
                    ledger.add(name, PhaseCost(**cost))
        return ledger

    @contextmanager
    def phase(self, name: str, devices: int | None = None) -> Iterator[PhaseCost]:
        """Time a phase; the yielded PhaseCost takes token and FLOP counts (and the backend) from the code inside,
        and its peak memory is the phase's own (the peak is reset as the phase starts). The code inside may
        `settle` the phase instead: then it is charged what it was settled with."""
        cost = PhaseCost(devices=devices or device_count(), device=device_kind())
        reset_peak_memory()
        start = time.perf_counter()
        self._running[name] = (cost, start)
        try:
            yield cost
        finally:
            del self._running[name]
            settled = self._settled.pop(name, None)
            self.add(name, settled if settled is not None else timed(cost, start))

    def settle(self, name: str, cost: PhaseCost) -> None:
        """Charge the running phase `name` with `cost` rather than its own timing: a phase that a cache entry
        serves (`cost` is the entry's build, `reused`) or that builds one (every run that uses the entry is charged
        the same stored cost of its build)."""
        self._settled[name] = cost

    def reuse(self, name: str, key: str, original: dict[str, Any] | None) -> None:
        """Record that phase `name` was served from cache entry `key`, built at cost `original`."""
        cost = PhaseCost(**(original or {}))
        cost.reused, cost.cache_key = True, key
        self.add(name, cost)

    def so_far(self) -> dict[str, dict[str, Any]]:
        """The phases as JSON, with any phase still running timed up to now (what a run persists so that a later
        attempt can charge it)."""
        snapshot = CostLedger({name: replace(cost) for name, cost in self.phases.items()})
        for name, (cost, start) in self._running.items():
            snapshot.add(name, timed(replace(cost), start))
        return {name: asdict(cost) for name, cost in snapshot.phases.items()}

    def add(self, name: str, cost: PhaseCost) -> None:
        """Add a measured cost to phase `name` (summed with what the phase already has)."""
        if name not in self.phases:
            self.phases[name] = cost
            return
        have = self.phases[name]
        have.wall_s += cost.wall_s
        have.device_hours += cost.device_hours
        have.tokens += cost.tokens
        have.flops += cost.flops
        have.peak_memory_bytes = max(have.peak_memory_bytes, cost.peak_memory_bytes)

    def run_cost(self) -> RunCost:
        """The phases as a record's `cost` states them."""
        return RunCost({name: replace(cost) for name, cost in self.phases.items()})

"""The typed parts of a run record: its cost, its training summary, its pinned models and its data.

Each part is parsed once, where the record is read (`harness.records.RunRecord.from_dict`, which also migrates
older records), and written back by `to_dict` to the JSON it was read from. Readers use attributes, never keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from kdcore.costs import PhaseCost


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` if it holds only fields of `cls`, else a ValueError naming the first unknown one."""
    names = {f.name for f in fields(cls)}
    if unknown := sorted(set(data) - names):
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    return data


@dataclass
class RunCost:
    """What a run cost, by phase (a phase served from a cache is charged its build, `reused`)."""

    phases: dict[str, PhaseCost] = field(default_factory=dict)

    @property
    def total_device_hours(self) -> float:
        return sum(c.device_hours for c in self.phases.values())

    @property
    def fresh_device_hours(self) -> float:
        """The device-hours this run spent itself (its phases not served from a cache)."""
        return sum(c.device_hours for c in self.phases.values() if not c.reused)

    @property
    def wall_s(self) -> float:
        return sum(c.wall_s for c in self.phases.values() if not c.reused)

    @property
    def standalone_flops(self) -> float:
        return sum(c.flops for c in self.phases.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": {name: asdict(cost) for name, cost in self.phases.items()},
            "total_device_hours": self.total_device_hours,
            "fresh_device_hours": self.fresh_device_hours,
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCost:
        """The stored totals are sums of the phases, so they are recomputed rather than read."""
        phases = {}
        for name, phase in data["phases"].items():
            phases[name] = PhaseCost(**_known(PhaseCost, phase, f"cost.phases[{name!r}]"))
        return cls(phases)


@dataclass
class TrainingSummary:
    """The record's view of training: steps, each diagnostic's mean over the last tenth of the steps (`final`),
    the per-step log (`log`, relative to the results dir), and what some runs add: the dev-slice scores by step
    (`evals`, with `eval_every` and `dev_slice`), the teacher traces kept and left out (`supervision_traces`,
    harness.trace_filter), the on-policy micro-batches, a trial's budget (`trial`, harness.trial)."""

    steps: int
    resumed_from: int = 0
    final: dict[str, float] = field(default_factory=dict)
    log: str | None = None
    evals: list[dict[str, Any]] | None = None
    eval_every: int | None = None
    dev_slice: dict[str, Any] | None = None
    supervision_traces: dict[str, int] | None = None
    on_policy_batches: int | None = None
    trial: dict[str, Any] | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "evals",
        "eval_every",
        "dev_slice",
        "supervision_traces",
        "on_policy_batches",
        "trial",
    )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: v for k, v in out.items() if not (k in self.OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSummary:
        return cls(**_known(cls, data, "training"))


@dataclass(frozen=True)
class ModelPin:
    """One of the pair's models pinned (harness.identity.model_identity): a local folder's weights and tokenizer
    sha256 (`revision` None), or a hub id's snapshot revision (`weights_sha256` None)."""

    ref: str
    weights_sha256: str | None
    weights_files: dict[str, str] | None
    revision: str | None
    tokenizer_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelPin:
        return cls(**_known(cls, data, where))


@dataclass(frozen=True)
class DataPin:
    """The data a run read (harness.identity.data_identity): the train split the prompts come from, and each
    benchmark's test split with the evaluation settings."""

    train: dict[str, Any]
    eval: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataPin:
        return cls(**_known(cls, data, "data"))

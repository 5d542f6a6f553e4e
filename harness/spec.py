"""What defines a run (`RunSpec`), in a module that imports no heavy library, so the command line can build and
check one before torch or transformers load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import launch

DEFAULT_RESULTS = Path("results")  # where runs write unless told otherwise: the repository's committed results


@dataclass
class RunSpec:
    """Everything that defines a run; two runs with equal specs are repeats of one another."""

    pair: str
    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    teacher_signal: str | None = None  # topk or online, for methods with the choice (None: the method's default)
    top_k: int = 32
    backend: str = "auto"
    results_dir: Path = DEFAULT_RESULTS
    pairs_file: Path | None = None
    tensor_parallel: int = 1  # vLLM: GPUs per generation engine
    data_parallel: int = 1  # vLLM: generation engines, one process each
    gpu_memory_utilization: float | None = None  # vLLM: each engine's share of its GPU (None: the pair's, or computed)
    supervision_temperature: float | None = None  # teacher sampling temperature for hard labels (None: the pair's)
    report_to: str = "none"  # the experiment tracker training logs to (trainers.train_log.REPORT_TO)
    tuning: dict[str, Any] | None = None  # how `harness tune` chose the settings (harness.tune); None: untuned

    def parallel(self) -> dict[str, int]:
        return {"tensor_parallel": self.tensor_parallel, "data_parallel": self.data_parallel}

    def generation_devices(self) -> int:
        return self.tensor_parallel * self.data_parallel * launch.world_size()

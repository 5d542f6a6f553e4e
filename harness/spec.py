"""What defines a run (`RunSpec`), in a module that imports no heavy library, so the command line can build and
check one before torch or transformers load; and the run config file (`harness run --config run.toml`) that states
one whole."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from harness import launch
from kdcore.errors import HarnessError, unknown_choice

DEFAULT_RESULTS = Path("results")  # where runs write unless told otherwise: the repository's committed results


def option(default: Any, meaning: str, *, unset_on_command_line: bool = False) -> Any:
    """A field that the run commands take as the option `--name-with-dashes` (harness.cli.run_options), `meaning`
    its help; `unset_on_command_line`: the option's own default is None (not given), so a command can tell."""
    return field(default=default, metadata={"help": meaning, "unset_on_command_line": unset_on_command_line})


@dataclass(frozen=True)
class Execution:
    """Where and how a run executes. Nothing here can change its result, so none of it is part of the experiment
    (harness.experiment) that resume, sweeps and the leaderboard identify runs by."""

    results_dir: Path = option(
        DEFAULT_RESULTS,
        "Where records, samples and the leaderboard live (default: results, or $HARNESS_CACHE/trial-results for a "
        "trial: --limit, or --max-steps other than the pair's).",
        unset_on_command_line=True,
    )
    backend: str = option("auto", "Generation backend: auto, transformers or vllm.")
    tensor_parallel: int = option(1, "vLLM: GPUs per generation engine.")
    data_parallel: int = option(1, "vLLM: generation engines, one process each, sharing the prompts.")
    gpu_memory_utilization: float | None = option(
        None, "vLLM: each engine's share of its GPU (default: the pair's, else what is free when it starts)."
    )
    report_to: str = option(
        "none", "Experiment tracker for training's scalars: none, tensorboard, wandb (offline) or trackio."
    )

    def parallel(self) -> dict[str, int]:
        return {"tensor_parallel": self.tensor_parallel, "data_parallel": self.data_parallel}

    def generation_devices(self) -> int:
        return self.tensor_parallel * self.data_parallel * launch.world_size()


EXECUTION_FIELDS = tuple(f.name for f in fields(Execution))


@dataclass(frozen=True)
class RunSpec:
    """A run as asked: what it compares (the pair's defaults fill in what it leaves out; its canonical form is
    `harness.pipeline.planned_experiment`) and, in `execution`, where and how it runs."""

    pair: str
    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)
    limit: int | None = option(None, "Evaluate on the first N docs of each benchmark.")
    teacher_signal: str | None = option(
        None,
        "Soft labels from the cached top-k or an online teacher, for the methods that have the choice (default: "
        "topk; on-policy methods and distillm2 use the online teacher).",
    )
    top_k: int = option(32, "Teacher log-probs kept per token for soft labels.")
    pairs_file: Path | None = option(None, "A pairs TOML file to use instead of the shipped one.")
    supervision_temperature: float | None = option(
        None, "Teacher sampling temperature for hard labels (default: the pair's, normally 1; 0 = greedy)."
    )
    tuning: dict[str, Any] | None = None  # how `harness tune` chose the settings (harness.tune); None: untuned
    execution: Execution = field(default_factory=Execution)

    def run_in(self, **changes: Any) -> RunSpec:
        """This run with its execution changed (results_dir=..., backend=...)."""
        return replace(self, execution=replace(self.execution, **changes))


CONFIG_TABLES = {"method_params": "method_params", "train": "train_overrides"}  # TOML table -> RunSpec field


def run_config(path: Path) -> dict[str, Any]:
    """The RunSpec fields a run config states (its `execution` ones under "execution"): TOML with RunSpec's and
    Execution's fields at the top level (pair, method, seed, limit, top_k, backend, results_dir, ...), the method's
    parameters under `[method_params]` and the training
    settings under `[train]` (TrainConfig's names); a one-line error for an unreadable file, an unknown key or a
    value of the wrong type. Method parameters and training settings are checked where every run's are."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise HarnessError(f"--config {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise HarnessError(f"--config {path}: not valid TOML ({err})") from None
    hints = typing.get_type_hints(RunSpec) | typing.get_type_hints(Execution)
    asked = [
        f.name for f in fields(RunSpec) if f.name not in ("method_params", "train_overrides", "tuning", "execution")
    ]
    known = [*asked, *EXECUTION_FIELDS]
    values: dict[str, Any] = {"execution": {}}
    for key, value in data.items():
        if key in CONFIG_TABLES:
            if not isinstance(value, dict):
                raise HarnessError(f"--config {path}: [{key}] must be a table")
            values[CONFIG_TABLES[key]] = value
            continue
        if key not in known:
            raise unknown_choice(f"--config {path}: key", key, [*known, *CONFIG_TABLES])
        (values["execution"] if key in EXECUTION_FIELDS else values)[key] = _typed(path, key, value, hints[key])
    return values


def _typed(path: Path, key: str, value: Any, hint: Any) -> Any:
    """`value` as a RunSpec field of type `hint` takes it (a path from a string), or a one-line error."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is Path and isinstance(value, str):
            return Path(value)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(kind, type) and kind not in (float, Path) and isinstance(value, kind):
            if kind is int and isinstance(value, bool):
                continue
            return value
    names = " or ".join("a path" if k is Path else k.__name__ for k in allowed if k is not type(None))
    raise HarnessError(f"--config {path}: {key} = {value!r} must be {names}")

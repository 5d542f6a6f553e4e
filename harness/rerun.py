"""`harness rerun`: the experiment a record states, run again from the record alone.

The run is rebuilt from the record's experiment (harness.experiment): pair, method and its resolved parameters,
seed, training settings (the tuned ones included, with their tuning facts), doc limit, top-k and supervision
temperature. Before any model loads it is refused where the record's code version is not this checkout's (or was
uncommitted), or where the experiment this checkout would run is not the record's (other weights, data, pair
settings or defaults), naming the fields that differ; `force` runs it anyway. Another device or other CPU kernels
(AVX2 / AVX512) are said, not refused: float results differ in their last bits between them, and a trained
student's scores with them. After the run the scores are compared with the record's, exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.cache import cache_root
from harness.pipeline import TEACHER_SIGNALS, RunSpec, chooses_teacher_signal, planned_experiment
from harness.records import RunRecord, code_version, read_record, unreadable
from harness.spec import Execution
from kdcore.costs import cpu_kernels, device_kind
from kdcore.errors import HarnessError
from trainers.loop import TrainConfig
from trainers.objectives import load_method

RERUNS = "reruns"  # under the cache root: reruns do not add repeats to the results they reproduce
SPEC_SETTINGS = ("limit", "top_k", "supervision_temperature")  # train_config entries that are RunSpec fields
SHOWN_DIFFERENCES = 3


def reruns_dir() -> Path:
    return cache_root() / RERUNS


def checked_record(path: Path) -> RunRecord:
    """The record in `path` (harness.records.read_record), or a one-line error saying why it cannot be read."""
    try:
        return read_record(path)
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such record") from None
    except (OSError, ValueError, TypeError) as err:
        raise HarnessError(f"{path}: not a readable run record ({unreadable(err)})") from None


def spec_from_record(record: RunRecord, execution: Execution | None = None) -> RunSpec:
    """The RunSpec of the record's experiment, run as `execution` says (default: Execution())."""
    experiment = record.experiment()
    config = experiment.train_config
    trained = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__ and k != "seed"}
    objective = load_method(experiment.method, **experiment.method_params)
    signal = config.get("teacher_signal")
    return RunSpec(
        pair=experiment.pair,
        method=experiment.method,
        method_params=dict(experiment.method_params),
        seed=experiment.seed,
        train_overrides=trained,
        teacher_signal=signal if chooses_teacher_signal(objective) and signal in TEACHER_SIGNALS else None,
        tuning=config.get("tuning"),
        **{k: config[k] for k in SPEC_SETTINGS if k in config},
        execution=execution or Execution(),
    )


def differences(recorded: Any, planned: Any, path: str = "") -> list[str]:
    """The dotted paths at which two JSON values differ."""
    if isinstance(recorded, dict) and isinstance(planned, dict):
        out: list[str] = []
        for key in sorted(set(recorded) | set(planned)):
            where = f"{path}.{key}" if path else key
            if key not in recorded or key not in planned:
                out.append(where)
            else:
                out += differences(recorded[key], planned[key], where)
        return out
    return [] if recorded == planned else [path]


def check_rerun(record: RunRecord, spec: RunSpec, *, force: bool = False) -> list[str]:
    """Refuse (HarnessError, one line) a rerun that could not reproduce the record: other code, or another
    experiment than the record's; with `force` those come back as warnings. Another device or other CPU kernels
    are always warnings: float results can differ in their last bits there, and scores with them."""
    problems = []
    recorded_code, current = record.environment.get("code_version"), code_version()
    if not recorded_code or recorded_code.endswith("+dirty"):
        problems.append(f"the record was made by uncommitted code ({recorded_code or 'outside git'})")
    elif recorded_code != current:
        problems.append(f"the record was made by code {recorded_code[:12]}, this checkout is {(current or '?')[:12]}")
    changed = differences(record.experiment().to_dict(), planned_experiment(spec).to_dict())
    if changed:
        more = len(changed) - SHOWN_DIFFERENCES
        shown = ", ".join(changed[:SHOWN_DIFFERENCES]) + (f" (+{more} more)" if more > 0 else "")
        problems.append(f"this checkout would run another experiment: {shown} differ")
    if problems and not force:
        raise HarnessError(f"cannot rerun {record.run_id}: {'; '.join(problems)} (--force runs it anyway)")
    here = {"device": device_kind(), "cpu_kernels": cpu_kernels()}
    for name, value in here.items():
        if record.environment.get(name) != value:
            was = record.environment.get(name) or "not recorded"
            problems.append(f"{name}: {value} here, {was} in the record (scores can differ in the last digits)")
    return problems


def score_differences(record: RunRecord, rerun: RunRecord) -> list[str]:
    """One line per benchmark whose score or metrics differ between the record and its rerun."""
    lines = []
    for task in sorted(set(record.scores) | set(rerun.scores)):
        before, after = record.scores.get(task), rerun.scores.get(task)
        if before is None or after is None or (before.score, before.metrics) != (after.score, after.metrics):
            shown = [f"{100 * s.score:.2f}" if s else "-" for s in (before, after)]
            lines.append(f"{task}: recorded {shown[0]}, rerun {shown[1]}")
    return lines

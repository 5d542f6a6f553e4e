"""Run records: one schema-versioned JSON file per run, written atomically, validated on read.

A record is the only thing the leaderboard reads. File names are unique per run (pair, method, seed,
UTC time and a random suffix), so concurrent runs never collide, and no lock is ever taken.

Schema 2 pins what was compared: `models` (teacher and student: reference, weights sha256 or hub revision,
tokenizer sha256; see harness.identity), `data` (the train and eval splits' hashes and the evaluation
settings) and `student_before_scores` (the student's own scores before distillation). Schema-1 records still
load, with those fields empty: they are marked unpinned, and the leaderboard never groups them with schema 2.
"""

from __future__ import annotations

import json
import platform
import secrets
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.experiment import Experiment, experiment_key, record_experiment
from harness.record_parts import DataPin, ModelPin, RunCost, TrainingSummary
from harness.spec import DEFAULT_RESULTS
from kdcore.io import atomic_write_json
from kdcore.scores import TaskScore
from kdcore.train_settings import TRAIN_RULES, is_integer, is_number, train_problem

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
PINNING_FIELDS = ("models", "data", "student_before_scores")  # new in schema 2
SCORE_FIELDS = ("scores", "teacher_scores", "student_before_scores")
OPTIONAL_FIELDS = ("run_id", "created", "attempts", "estimate")
STATED_KEY = "experiment_key"  # the experiment's key, written with every schema-2 record and checked on reading
RECORD_GLOB = "runs/*.json"
# training settings under their earlier names, read as TRL names them: old -> new
RENAMED_TRAIN_SETTINGS = {"grad_accum": "gradient_accumulation_steps", "warmup_frac": "warmup_ratio"}
# the teacher signal of the methods whose data plan fixes it (tests/test_records.py checks it against the plans)
FIXED_TEACHER_SIGNAL = {
    "sft": "none",
    "hard": "none",
    "gkd": "online",
    "hybrid-gkd": "online",
    "distillm2": "online",
    "dld": "online",
}
FULL_LOGIT_DIVERGENCES = ("dld",)  # a soft-label method with one of these always reads the online teacher
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "lm_eval",
    "vllm",
    "math-verify",
    "peft",
)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(pair: str, method: str, seed: int, created: str | None = None) -> str:
    """A unique, sortable run id: pair, method, seed, UTC time and a random suffix."""
    stamp = (created or utc_now()).replace("-", "").replace(":", "")
    return f"{pair}-{method}-s{seed}-{stamp}-{secrets.token_hex(3)}"


@dataclass
class RunRecord:
    pair: str
    method: str
    seed: int
    method_params: dict[str, Any]
    train_config: dict[str, Any]
    teacher: str
    student: str
    scores: dict[str, TaskScore]
    teacher_scores: dict[str, TaskScore]
    cost: RunCost
    environment: dict[str, Any]
    training: TrainingSummary
    models: dict[str, ModelPin] = field(kw_only=True)  # teacher, student (schema 1: none)
    data: DataPin | None = field(kw_only=True)  # None in schema 1
    student_before_scores: dict[str, TaskScore] = field(kw_only=True)
    run_id: str = ""
    created: str = ""
    attempts: int = 1
    estimate: dict[str, Any] = field(default_factory=dict)  # the cost the plan expected (harness.cost_plan)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.train_config = with_used_teacher_signal(self.train_config, self.method, self.method_params)
        if not self.created:
            self.created = utc_now()
        if not self.run_id:
            self.run_id = new_run_id(self.pair, self.method, self.seed, self.created)

    @property
    def pinned(self) -> bool:
        """True when the record names its models' weights and its data (schema 2 onwards)."""
        return self.schema_version >= 2

    def experiment(self) -> Experiment:
        """What the run compared, in canonical form (harness.experiment)."""
        return record_experiment(self._fields())

    @property
    def experiment_key(self) -> str:
        """The experiment's identity (harness.experiment.experiment_key), which the JSON form states too."""
        return experiment_key(self.experiment())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the experiment's key (schema 2); a schema-1 record read from disk gives back its
        schema-1 fields only."""
        out = self._fields()
        return out | {"experiment_key": experiment_key(record_experiment(out))} if self.pinned else out

    def _fields(self) -> dict[str, Any]:
        out = asdict(self)
        out["cost"], out["training"] = self.cost.to_dict(), self.training.to_dict()
        out["models"] = {role: pin.to_dict() for role, pin in self.models.items()}
        out["data"] = self.data.to_dict() if self.data is not None else {}
        if not out["estimate"]:  # a record written without a cost estimate round-trips without one
            del out["estimate"]
        if not self.pinned:
            for name in PINNING_FIELDS:
                del out[name]
            for kind in ("scores", "teacher_scores"):  # schema 1 had no generation settings on its scores
                for score in (out[kind] or {}).values():
                    if score.get("settings") is None:
                        score.pop("settings", None)
            for phase in out["cost"]["phases"].values():  # nor a backend on its phases
                if phase.get("backend") is None:
                    phase.pop("backend", None)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """Build a record from parsed JSON (schema 1 or 2), raising ValueError on a schema mismatch or a value of
        the wrong type or range (see `check_values`)."""
        if not isinstance(data, dict):
            raise ValueError(f"the file holds {_json_kind(data)}, not an object")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"schema_version {version!r}, expected one of {', '.join(map(str, READABLE_VERSIONS))}")
        known = set(cls.__dataclass_fields__) - (set(PINNING_FIELDS) if version == 1 else set())
        missing = [name for name in known if name not in data and name not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"missing fields: {', '.join(sorted(missing))}")
        extra = set(data) - known - {STATED_KEY}
        if extra:
            raise ValueError(f"unknown fields: {', '.join(sorted(extra))}")
        fields = dict(data)
        stated = fields.pop(STATED_KEY, None)
        if isinstance(fields["train_config"], dict):
            fields["train_config"] = migrated_train_config(fields["train_config"])
        if version == 1:
            fields.update(models={}, data={}, student_before_scores={})
        check_values(fields)
        for key in SCORE_FIELDS:
            fields[key] = {task: TaskScore(**score) for task, score in fields[key].items()}
        fields["cost"] = RunCost.from_dict(fields["cost"])
        fields["training"] = TrainingSummary.from_dict(fields["training"])
        fields["models"] = {role: ModelPin.from_dict(pin, f"models.{role}") for role, pin in fields["models"].items()}
        fields["data"] = DataPin.from_dict(fields["data"]) if fields["data"] else None
        record = cls(**fields)
        if stated is not None and stated != record.experiment_key:
            raise ValueError(
                f"experiment_key {_short(stated)} is not the key of the experiment the record states "
                f"({record.experiment_key}): the record was changed after it was written"
            )
        return record


def check_values(fields: dict[str, Any]) -> None:
    """Raise ValueError naming the first field of a parsed record whose type or range is wrong: names are non-empty
    strings, the seed an integer, scores fractions in [0, 1] with a doc count, step and attempt counts
    positive, the training settings within their rules (kdcore.train_settings), costs non-negative."""
    for key in ("pair", "method", "teacher", "student"):
        if not isinstance(fields[key], str) or not fields[key]:
            raise ValueError(f"{key} must be a non-empty string, got {_short(fields[key])}")
    for key in ("run_id", "created"):
        if not isinstance(fields.get(key, ""), str):
            raise ValueError(f"{key} must be a string, got {_short(fields[key])}")
    if not is_integer(fields["seed"]):
        raise ValueError(f"seed must be an integer, got {_short(fields['seed'])}")
    if not (is_integer(fields.get("attempts", 1)) and fields.get("attempts", 1) > 0):
        raise ValueError(f"attempts must be a positive integer, got {_short(fields['attempts'])}")
    for key in ("models", "data", "method_params", "train_config", "training", "environment", *SCORE_FIELDS):
        if not isinstance(fields[key], dict):
            raise ValueError(f"{key} must be an object")
    for key in SCORE_FIELDS:
        for task, score in fields[key].items():
            _check_score(f"{key}[{task!r}]", score)
    for name, value in fields["train_config"].items():
        if name in TRAIN_RULES and (problem := train_problem(f"train_config.{name}", name, value)):
            raise ValueError(problem.replace(f" {value!r}: must be", " must be", 1) + f", got {_short(value)}")
    training = fields["training"]
    if not (is_integer(training.get("steps")) and training["steps"] > 0):
        raise ValueError(f"training.steps must be a positive integer, got {_short(training.get('steps'))}")
    if not (is_integer(training.get("resumed_from", 0)) and training.get("resumed_from", 0) >= 0):
        raise ValueError(f"training.resumed_from must be an integer >= 0, got {_short(training['resumed_from'])}")
    phases = fields["cost"].get("phases") if isinstance(fields["cost"], dict) else None
    if not isinstance(phases, dict):
        raise ValueError("cost.phases missing")
    for name, phase in phases.items():
        for key, default in (("device_hours", None), ("flops", 0.0)):
            value = phase.get(key, default) if isinstance(phase, dict) else None
            if not (is_number(value) and value >= 0):
                raise ValueError(f"cost.phases[{name!r}].{key} is not a non-negative number")


def _check_score(where: str, score: Any) -> None:
    if not isinstance(score, dict):
        raise ValueError(f"{where} must be an object")
    if not (is_number(score.get("score")) and 0 <= score["score"] <= 1):
        raise ValueError(f"{where}.score must be a fraction in [0, 1], got {_short(score.get('score'))}")
    if not (is_integer(score.get("n")) and score["n"] >= 0):
        raise ValueError(f"{where}.n must be an integer >= 0 (docs scored), got {_short(score.get('n'))}")
    metrics = score.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}.metrics must be an object")
    for name, value in metrics.items():
        if not (is_number(value) and 0 <= value <= 1):
            raise ValueError(f"{where}.metrics[{name!r}] must be a fraction in [0, 1], got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_kind(value: Any) -> str:
    kinds = {list: "a JSON array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def migrated_train_config(train: dict[str, Any]) -> dict[str, Any]:
    """A record's training settings under today's names: `grad_accum`, `warmup_frac` and `mixed_precision` (as TRL
    names them: `gradient_accumulation_steps`, `warmup_ratio`, `bf16`), and the cosine schedule, the only one
    before `lr_scheduler_type`, said. A record that has the new names is returned as it is."""
    if not any(old in train for old in (*RENAMED_TRAIN_SETTINGS, "mixed_precision")):
        return train
    out = {RENAMED_TRAIN_SETTINGS.get(key, key): value for key, value in train.items() if key != "mixed_precision"}
    if "mixed_precision" in train:
        out["bf16"] = train["mixed_precision"] == "bf16"
    out.setdefault("lr_scheduler_type", "cosine")
    return out


def used_teacher_signal(method: str, method_params: dict[str, Any], recorded: str) -> str:
    """The teacher signal a run of `method` used: fixed by the method's data plan, or by a full-logit divergence,
    or else the recorded choice."""
    if method in FIXED_TEACHER_SIGNAL:
        return FIXED_TEACHER_SIGNAL[method]
    if method_params.get("divergence") in FULL_LOGIT_DIVERGENCES:
        return "online"
    return recorded


def with_used_teacher_signal(train: dict[str, Any], method: str, method_params: dict[str, Any]) -> dict[str, Any]:
    """`train` with `teacher_signal` as the run used it: schema-2 records made before the data plan was recorded
    carry the command line's default `topk` for every method, sft, hard and the online-only methods too."""
    recorded = train.get("teacher_signal")
    if not isinstance(recorded, str):
        return train
    return {**train, "teacher_signal": used_teacher_signal(method, method_params, recorded)}


def describe_trial(trial: dict[str, Any]) -> str:
    """What a trial run's budget (its record's `training.trial`, see harness.trial) was: `limit 20, max_steps 30 of
    600`."""
    parts = [f"limit {trial['limit']}"] if trial.get("limit") is not None else []
    if trial.get("max_steps") != trial.get("pair_max_steps"):
        parts.append(f"max_steps {trial['max_steps']} of {trial['pair_max_steps']}")
    return ", ".join(parts) or "trial"


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    """Write `record` atomically to `<results_dir>/runs/<run_id>.json`."""
    return atomic_write_json(Path(results_dir) / "runs" / f"{record.run_id}.json", record.to_dict())


def read_record(path: str | Path) -> RunRecord:
    """The record in `path`; OSError, ValueError or TypeError (`unreadable` says why in one line) where the file
    cannot be read or does not hold a valid record."""
    return RunRecord.from_dict(json.loads(Path(path).read_bytes()))


def unreadable(err: OSError | ValueError | TypeError) -> str:
    """Why `read_record` failed, in one line."""
    if isinstance(err, OSError):
        return str(err.strerror or err)
    text = str(err).splitlines()
    return text[0] if text else type(err).__name__


def load_records(results_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """All valid records under `results_dir`, sorted by run id, and one problem line per bad file."""
    records, problems = [], []
    for path in sorted(Path(results_dir).glob(RECORD_GLOB)):
        try:
            records.append(read_record(path))
        except (OSError, ValueError, TypeError) as err:
            problems.append(f"{path.name}: skipped ({unreadable(err)})")
    records.sort(key=lambda r: r.run_id)
    return records, problems


def has_code_changes(checkout: Path) -> bool:
    """Whether the git checkout holding `checkout` has local changes outside `results/` (a run's own outputs, and
    the committed results themselves, are not code)."""
    outside_results = ["git", "status", "--porcelain", "--", f":(top,exclude){DEFAULT_RESULTS}"]
    return bool(subprocess.run(outside_results, cwd=checkout, capture_output=True, text=True).stdout.strip())


def code_version() -> str | None:
    """The git commit of the harness checkout, with '+dirty' when its code has local changes (`has_code_changes`);
    None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = has_code_changes(here)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty else "")


def environment(device: str, devices: int, cpu_kernels: str) -> dict[str, Any]:
    """What produced a run: code version, package versions, Python, device type and count, and the CPU kernels
    torch used (kdcore.costs.cpu_kernels)."""
    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "code_version": code_version(),
        "packages": packages,
        "python": platform.python_version(),
        "device": device,
        "device_count": devices,
        "cpu_kernels": cpu_kernels,
    }

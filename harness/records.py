"""Run records: one schema-versioned JSON file per run, written atomically, validated on read.

A record is the only thing the leaderboard reads. File names are unique per run (pair, method, seed,
UTC time and a random suffix), so concurrent runs never collide, and no lock is ever taken.
"""

from __future__ import annotations

import json
import platform
import secrets
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from kdcore.io import atomic_write_json
from kdcore.scores import TaskScore

SCHEMA_VERSION = 1
RECORD_GLOB = "runs/*.json"
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
    cost: dict[str, Any]
    environment: dict[str, Any]
    training: dict[str, Any]  # steps, resumed_from, mean diagnostics over the last tenth of steps, per-step log path
    run_id: str = ""
    created: str = ""
    attempts: int = 1
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.created:
            self.created = utc_now()
        if not self.run_id:
            self.run_id = new_run_id(self.pair, self.method, self.seed, self.created)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Build a record from parsed JSON, raising ValueError on a schema mismatch."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}, expected {SCHEMA_VERSION}")
        known = set(cls.__dataclass_fields__)
        missing = [name for name in known if name not in data and name not in ("run_id", "created", "attempts")]
        if missing:
            raise ValueError(f"missing fields: {', '.join(sorted(missing))}")
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown fields: {', '.join(sorted(extra))}")
        fields = dict(data)
        for key in ("scores", "teacher_scores"):
            if not isinstance(fields[key], dict):
                raise ValueError(f"{key} must be an object")
            fields[key] = {task: TaskScore(**score) for task, score in fields[key].items()}
        return cls(**fields)


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    """Write `record` atomically to `<results_dir>/runs/<run_id>.json`."""
    return atomic_write_json(Path(results_dir) / "runs" / f"{record.run_id}.json", record.to_dict())


def load_records(results_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """All valid records under `results_dir`, sorted by run id, and one problem line per bad file."""
    records, problems = [], []
    for path in sorted(Path(results_dir).glob(RECORD_GLOB)):
        try:
            records.append(RunRecord.from_dict(json.loads(path.read_text())))
        except (ValueError, TypeError, json.JSONDecodeError) as err:
            problems.append(f"{path.name}: skipped ({err})")
    records.sort(key=lambda r: r.run_id)
    return records, problems


def code_version() -> str | None:
    """The git commit of the harness checkout, with '+dirty' when it has local changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device: str, devices: int) -> dict[str, Any]:
    """What produced a run: code version, package versions, Python, device type and count."""
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
    }

"""What training reports as it goes: `train.jsonl` (one JSON row per step, appended and flushed as each step ends),
a timestamped text line every few steps (read the same in a terminal or in a scheduler's log file), and the
experiment tracker that `--report-to` names (accelerate's trackers: TensorBoard, Weights & Biases, Trackio).

A resumed run first drops the rows past the checkpoint it resumes from (they are trained again), so the file holds
each step once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kdcore.errors import HarnessError, unknown_choice
from kdcore.io import atomic_write_text
from kdcore.progress import log_line

REPORT_TO = ("none", "tensorboard", "wandb", "trackio")
PROJECT = "kd-harness"  # the wandb / trackio project every run logs to (each run under its run id)
LINES = 20  # text lines over a run when `logging_steps` is 0: one every 5% of the steps


@dataclass
class Tracking:
    """Where a run's scalars go besides `train.jsonl`: `report_to` (one of REPORT_TO), the folder trackers that write
    files use, the run's name there and the settings logged with it (nested dicts are flattened)."""

    report_to: str = "none"
    logging_dir: Path | None = None
    run_name: str = "run"
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.report_to != "none"

    def project(self) -> str:
        """TensorBoard writes `<logging_dir>/<project>`: one folder per run; the others group runs in one project."""
        return self.run_name if self.report_to == "tensorboard" else PROJECT

    def init_kwargs(self) -> dict[str, dict[str, Any]]:
        """Offline where the tracker has the choice: wandb runs offline unless WANDB_MODE says otherwise."""
        if self.report_to == "wandb":
            folder = {"dir": str(self.logging_dir)} if self.logging_dir else {}
            return {"wandb": {"name": self.run_name, "mode": os.environ.get("WANDB_MODE", "offline"), **folder}}
        if self.report_to == "trackio":
            return {"trackio": {"name": self.run_name}}
        return {}


def check_report_to(report_to: str) -> None:
    """Refuse an unknown tracker, or one whose package is not installed, before any model loads."""
    if report_to not in REPORT_TO:
        raise unknown_choice("--report-to", report_to, REPORT_TO)
    if report_to == "none":
        return
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "trackio": is_trackio_available}
    if not available[report_to]():
        raise HarnessError(
            f"--report-to {report_to}: the {report_to} package is not installed (pip install {report_to})"
        )


def flat_settings(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested settings as one level of `a/b` keys with scalar values (what tracker hyperparameter tables take):
    lists as JSON, None as the string "none"."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flat_settings(value, f"{name}/")
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = "none" if value is None else json.dumps(value, sort_keys=True)
    return out


class TrainLog:
    """The per-step log of one training attempt that starts after step `start` of `max_steps`. `path`: the
    `train.jsonl` to continue (None: no file); `every`: steps between text lines (0: LINES lines over the run);
    `writer`: this process writes the file and the lines (the main process of a launch)."""

    def __init__(
        self, path: Path | None, start: int, max_steps: int, every: int, description: str, writer: bool = True
    ) -> None:
        self.max_steps, self.description, self.writer = max_steps, description, writer
        self.every = every or max(1, max_steps // LINES)
        self.clock, self.start, self.tokens = time.perf_counter(), start, 0
        self.file: IO[str] | None = None
        if path is not None and writer:
            _keep_rows(path, start)
            self.file = path.open("a")

    def step(self, step: int, terms: dict[str, float], lr: float, tokens: int) -> dict[str, float]:
        """Log step `step` (1-based): its loss terms, learning rate and tokens; the row written."""
        self.tokens += tokens
        elapsed = time.perf_counter() - self.clock
        done = step - self.start
        row = {"step": step, **terms, "lr": lr, "tokens_per_s": self.tokens / elapsed if elapsed else 0.0}
        if self.file is not None:
            self.file.write(json.dumps(row, sort_keys=True) + "\n")
            self.file.flush()
        if self.writer and (step % self.every == 0 or step == self.max_steps or done == 1):
            eta = elapsed / done * (self.max_steps - step)
            shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
            log_line(
                f"{self.description} step {step}/{self.max_steps} {shown} lr={lr:.3g} "
                f"tokens/s={row['tokens_per_s']:.0f} eta {_clock(eta)}"
            )
        return row

    def note(self, text: str) -> None:
        if self.writer:
            log_line(f"{self.description} {text}")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _keep_rows(path: Path, steps: int) -> None:
    """Cut `path` to the rows of its first `steps` steps (all of it is dropped for a fresh start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = path.read_text().splitlines(keepends=True) if path.exists() and steps else []
    kept = []
    for i, row in enumerate(rows):
        try:
            step = json.loads(row).get("step", i + 1)
        except json.JSONDecodeError:  # the row a kill cut short: its step is trained again
            break
        if step > steps or not row.endswith("\n"):
            break
        kept.append(row)
    atomic_write_text(path, "".join(kept))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"

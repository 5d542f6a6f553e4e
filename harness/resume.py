"""Resuming a run that was stopped (killed, pre-empted, crashed): same run id, attempts counted, cost carried.

An unfinished run owns a working folder, `cache_root()/checkpoints/<key>`, keyed by its spec without the
settings that cannot change its results (results dir, checkpoint interval). The folder holds the training
checkpoint (`checkpoint/`, see trainers.loop) and `run.json`: the run id, so every attempt writes the same
record, model and per-sample files, and one cost ledger per attempt, saved atomically after each phase and
each training checkpoint. The record's cost sums the fresh work of all attempts; work a killed attempt did
after its last save is redone by the next one and charged once. The folder is removed once the record is
written, so running the same command again afterwards starts a new run (a repeat with the same seed).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import launch
from harness.accounting import CostLedger
from harness.cache import cache_key, cache_root
from kdcore.io import atomic_write_json
from trainers.loop import RESULT_NEUTRAL

STATE_FILE = "run.json"


def run_folder(spec: Any) -> Path:
    """The working folder of the run `spec` (a RunSpec): equal for every attempt of one run, whatever the results
    dir, tracker, result-neutral training settings (checkpoint, logging, evaluation intervals), generation backend
    or parallel layout (a run can resume on another number of GPUs)."""
    values = asdict(spec) | {"results_dir": None, "backend": None, "tensor_parallel": None, "data_parallel": None}
    values["gpu_memory_utilization"] = None
    del values["report_to"]
    values["teacher_signal"] = spec.teacher_signal or "topk"  # None (the method's own) keys as the old default did
    values["train_overrides"] = {k: v for k, v in values["train_overrides"].items() if k not in RESULT_NEUTRAL}
    return cache_root() / "checkpoints" / cache_key({"run": values})


@dataclass
class RunState:
    """What an unfinished run has done so far: its id, the cost of each attempt, and its record once written."""

    folder: Path
    run_id: str
    attempt_costs: list[dict[str, Any]] = field(default_factory=list)  # per attempt: CostLedger phases
    record: str | None = None  # path of the written record

    @classmethod
    def begin(cls, folder: Path, new_run_id: Callable[[], str]) -> RunState:
        """Start an attempt: a new run in an empty folder, or the next attempt of the run found there.

        Under a launch of several processes the main process reads and writes the state; the others get its
        run id and record path and write nothing."""
        path = folder / STATE_FILE
        state = cls(folder, "")
        if launch.is_main_process():
            if path.exists():
                saved = json.loads(path.read_text())
                state = cls(folder, saved["run_id"], saved["attempt_costs"], saved.get("record"))
            else:
                state = cls(folder, new_run_id())
            state.attempt_costs.append({})
            state._write()
        state.run_id, state.record = launch.broadcast((state.run_id, state.record))
        return state

    @property
    def attempts(self) -> int:
        return len(self.attempt_costs)

    def save(self, ledger: CostLedger) -> None:
        """Persist this attempt's cost so far (finished phases, and a running one timed up to now)."""
        if not launch.is_main_process():
            return
        self.attempt_costs[-1] = ledger.so_far()
        self._write()

    def total_cost(self) -> CostLedger:
        """The run's cost over all its attempts."""
        return CostLedger.over_attempts(self.attempt_costs)

    def recorded(self, path: Path) -> None:
        """Note that the record is written (a re-run finding this only cleans up)."""
        self.record = str(path)
        self._write()

    def close(self) -> None:
        """Remove the working folder: the run is complete."""
        if launch.is_main_process():
            shutil.rmtree(self.folder, ignore_errors=True)

    def _write(self) -> None:
        if not launch.is_main_process():
            return
        atomic_write_json(
            self.folder / STATE_FILE,
            {"run_id": self.run_id, "attempt_costs": self.attempt_costs, "record": self.record},
        )

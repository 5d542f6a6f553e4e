"""Resuming a run that was stopped (killed, pre-empted, crashed): same run id, attempts counted, cost carried.

An unfinished run owns a working folder, `cache_root()/checkpoints/<key>`, keyed by the experiment it runs
(`harness.experiment.experiment_key`), so nothing about where or how it runs changes the folder. The folder holds
the training checkpoint (`checkpoint/`, see trainers.loop) and `run.json`: the run id, so every attempt writes the
same record, model and per-sample files, and one cost ledger per attempt, saved atomically after each phase and
each training checkpoint. The record's cost sums the fresh work of all attempts; work a killed attempt did
after its last save is redone by the next one and charged once. The folder is removed once the record is
written, so running the same command again afterwards starts a new run (a repeat with the same seed).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import launch
from harness.accounting import CostLedger
from harness.cache import cache_root
from kdcore.io import atomic_write_json

STATE_FILE = "run.json"
logger = logging.getLogger(__name__)


def run_folder(experiment_key: str) -> Path:
    """The working folder of the run of one experiment (`harness.experiment.experiment_key`): equal for every
    attempt of that run, whatever its results dir, tracker, result-neutral training settings (checkpoint, logging,
    evaluation intervals), generation backend or parallel layout (a run can resume on another number of GPUs)."""
    return cache_root() / "checkpoints" / experiment_key


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

        A damaged `run.json` (unreadable, or not a run id with a list of attempt costs) is named in a warning and
        the run restarts: its folder, training checkpoint included, is emptied, since the attempts and cost behind
        that checkpoint are unknown.

        Under a launch of several processes the main process reads and writes the state; the others get its
        run id and record path and write nothing."""
        path = folder / STATE_FILE
        state = cls(folder, "")
        if launch.is_main_process():
            saved = _read_state(path) if path.exists() else None
            if saved is not None:
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


def _read_state(path: Path) -> dict[str, Any] | None:
    """The saved state of a run; None (the folder emptied, with a one-line warning) when it is damaged."""
    try:
        saved = json.loads(path.read_bytes())
        if not isinstance(saved, dict):
            raise ValueError("not an object")
        if not isinstance(saved.get("run_id"), str) or not saved["run_id"]:
            raise ValueError("no run id")
        costs = saved.get("attempt_costs")
        if not isinstance(costs, list) or not all(isinstance(c, dict) for c in costs):
            raise ValueError("attempt_costs is not a list of objects")
        if not isinstance(saved.get("record"), str | None):
            raise ValueError("record is not a path")
    except (OSError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        logger.warning("run state %s is damaged (%s); the run restarts from the beginning", path, reason)
        for child in path.parent.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        return None
    return saved

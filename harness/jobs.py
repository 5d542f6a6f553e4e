"""The jobs a scheduled sweep submits (harness.scheduler), as submitit runs them: picklable callables.

- `prepare_pair`: what a pair's cells share, built once before they start: the teacher supervision (and the
  initial student's responses) each of their data plans reads, and the teacher's and the initial student's
  evaluations, all into the caches every cell then reuses (and is charged for, as harness.accounting says).
- `CellJob`: one cell, through `harness.sweep.run_sweep` (skipped when it has a record, its failure written to
  `failures/`). It is `Checkpointable`: on pre-emption or an approaching time limit (Slurm's USR2, `--signal`),
  submitit requeues the same call, and `harness.pipeline.run` resumes the run from its own working folder
  (training checkpoint, supervision shards, partial evaluation logs; harness.resume).
- `build_leaderboard`: the leaderboard from the records, once the cells have ended.
A job of several tasks (one per GPU) exports the torch.distributed variables first, so each task is one process of
the launch (harness.launch), as `torchrun` would start it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import submitit

from kdcore.errors import HarnessError


def _join_launch() -> None:
    """In a submitit job of several tasks: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from Slurm's
    (nothing outside a job)."""
    if "SUBMITIT_EXECUTOR" in os.environ and submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def prepare_pair(specs: list[Any]) -> list[str]:
    """Build the caches the cells `specs` (one pair's) share; the phases built or found, in order."""
    from harness import launch
    from harness.accounting import CostLedger
    from harness.phases import EvaluateReference, EvaluateStudent, Train, plan_phases
    from harness.pipeline import check_spec, context, pin_cpu_threads, run_phase
    from harness.resume import RunState

    _join_launch()
    launch.init()
    done: list[str] = []
    plans: dict[tuple[str, ...], Any] = {}
    for spec in specs:
        pair, objective, _ = check_spec(spec)
        pin_cpu_threads(pair)
        phases = [p for p in plan_phases(objective.data_plan(spec.teacher_signal)) if not isinstance(p, Train)]
        data = [p for p in phases if not isinstance(p, EvaluateStudent | EvaluateReference)]
        plans.setdefault(tuple(type(p).__name__ for p in data), (spec, data))
    for index, (spec, data) in enumerate(plans.values()):
        phases = data + ([EvaluateReference("teacher"), EvaluateReference("student")] if index == 0 else [])
        ctx = context(spec, RunState(Path(), ""), CostLedger())
        for phase in phases:
            run_phase(ctx, phase, launch.part(), launch.is_main_process(), gather=launch.world_size() > 1)
            done.append(phase.name or type(phase).__name__)
    return done


class CellJob(submitit.helpers.Checkpointable):
    """One sweep cell as a scheduler job; requeued with the same arguments when pre-empted or timed out."""

    def __call__(self, spec: Any, results_dir: str) -> str:
        from harness.sweep import run_sweep

        _join_launch()
        result = run_sweep([spec], Path(results_dir))
        if result.failed:
            (line,) = result.failed.values()
            raise HarnessError(line)
        return "ran" if result.ran else "had a record"


def build_leaderboard(results_dir: str) -> list[str]:
    """Rebuild the leaderboard of `results_dir` from its records; the files written."""
    from harness.results.build import build_leaderboard as build

    return [str(path) for path in build(Path(results_dir))]

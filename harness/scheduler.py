"""A sweep on a scheduler, through submitit: Slurm (`--executor slurm`) or local processes (`--executor local`).

Per pair with cells to run: one job that builds what the pair's cells share (harness.jobs.prepare_pair), then the
cells as one job array that starts once it succeeded (`afterok`; the local executor waits for it instead), then,
on Slurm, a leaderboard job once the arrays have ended (`afterany`). Each job's resources come from the plan
(harness.cost_plan): its time limit is the estimated wall time x `time_factor` (at least `min_time_min`), its GPUs,
CPUs and memory from the cluster config (a TOML file: `partition`, `account`, `device`, `gpus`, `cpus_per_gpu`,
`mem_gb`, `time_factor`, `min_time_min`, `max_time_min`, `setup` and per-pair tables `[pairs.<name>]` of `gpus`,
`cpus`, `mem_gb`), `--partition` and `--account` winning over the file's.

Nothing is submitted for a cell that has a record, nor for one whose job is still pending or running. What was
submitted is kept in `<results_dir>/jobs/`: one file per cell (`cells/<cell>.json`: job id, log paths) and
submitit's own folder (`logs/`: pickled calls, results, stdout and stderr per job). `status` reads the scheduler
(squeue on Slurm; the job's process locally) and the records: done, pending, running, failed, not submitted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from harness.cost_plan import CellEstimate, estimate_cell
from harness.pairs import get_pair
from harness.records import load_records, utc_now
from harness.sweep import FAILURES_DIR, cell_name, recorded
from kdcore.errors import HarnessError, unknown_choice
from kdcore.io import atomic_write_json
from kdcore.progress import console

EXECUTORS = ("local", "slurm")
JOBS_DIR = "jobs"
LEADERBOARD_JOB = "leaderboard.json"  # the last leaderboard job submitted
BASE_MEMORY_GB = 4  # chosen: the Python process, tokenizers, data sets and caches besides the weights
POLL_S = 5


@dataclass(frozen=True)
class ClusterConfig:
    """Where and with what a sweep's jobs run (the cluster config file; see the module docstring)."""

    partition: str | None = None
    account: str | None = None
    device: str | None = None  # the throughput table's device kind of the cluster's GPUs (None: this machine's)
    gpus: int = 1  # per cell, on a GPU device: one task (process) per GPU
    cpus_per_gpu: int = 8
    mem_gb: float | None = None  # host memory per job (None: 2 x the pair's weights + BASE_MEMORY_GB)
    time_factor: float = 2.0  # time limit = estimated wall time x this
    min_time_min: int = 10
    max_time_min: int | None = None  # the partition's limit, if any
    setup: tuple[str, ...] = ()  # shell lines each Slurm job runs first (module load, activate the environment)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per pair: gpus, cpus, mem_gb

    def for_pair(self, pair: str, key: str, default: Any) -> Any:
        return self.pairs.get(pair, {}).get(key, default)


PAIR_KEYS = ("gpus", "cpus", "mem_gb")


def load_cluster_config(path: Path | None, partition: str | None = None, account: str | None = None) -> ClusterConfig:
    """The cluster config file (none: the defaults), with `--partition` / `--account` over its values."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise HarnessError(f"cannot read cluster config {path}: {err}") from None
    fields = {f.name for f in dataclasses.fields(ClusterConfig)}
    if unknown := sorted(set(values) - fields):
        valid = ", ".join(sorted(fields))
        raise HarnessError(f"cluster config {path}: unknown key {unknown[0]!r}; valid keys: {valid}")
    for pair, table in values.get("pairs", {}).items():
        if not isinstance(table, dict) or (bad := sorted(set(table) - set(PAIR_KEYS))):
            raise HarnessError(f"cluster config {path}: [pairs.{pair}] takes {', '.join(PAIR_KEYS)}, got {bad}")
    values["setup"] = tuple(values.get("setup", ()))
    config = ClusterConfig(**values)
    return dataclasses.replace(config, partition=partition or config.partition, account=account or config.account)


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for."""

    timeout_min: int
    mem_gb: int
    gpus: int
    tasks: int
    cpus_per_task: int


def job_resources(
    pair_name: str,
    estimates: list[CellEstimate],
    config: ClusterConfig,
    shared: bool,
    devices: int | None = None,
    pairs_file: Path | None = None,
) -> Resources:
    """Resources of the pair job (`shared`: the phases built once per pair) or of one of its cells (the largest
    estimate of `estimates`), on the plan's device."""
    from harness.cost_plan import parameters

    pair = get_pair(pair_name, pairs_file)
    on_gpu = not estimates[0].device.lower().startswith("cpu")
    gpus = (devices or config.for_pair(pair_name, "gpus", config.gpus)) if on_gpu else 0
    if shared:  # every phase the pair's cells share, once
        hours = sum({p.name: p.device_hours or 0.0 for e in estimates for p in e.phases if p.shared}.values())
    else:
        hours = max(e.device_hours or 0.0 for e in estimates)
    wall_min = 60 * hours / max(gpus, 1) * config.time_factor
    timeout = max(config.min_time_min, math.ceil(wall_min))
    if config.max_time_min is not None:
        timeout = min(timeout, config.max_time_min)
    weight_bytes = 2 if pair.dtype != "float32" else 4
    default_mem = 2 * weight_bytes * (parameters(pair.teacher) + parameters(pair.student)) / 1e9 + BASE_MEMORY_GB
    mem = config.for_pair(pair_name, "mem_gb", config.mem_gb or default_mem)
    tasks = 1 if shared or not on_gpu else gpus
    cpus = config.for_pair(pair_name, "cpus", config.cpus_per_gpu if on_gpu else (pair.cpu_threads or 1))
    return Resources(timeout, math.ceil(mem), gpus, tasks, cpus)


def make_executor(
    kind: str, folder: Path, config: ClusterConfig, resources: Resources, name: str, after: str | None = None
) -> Any:
    """A submitit executor of `kind` with `resources`; on Slurm, partition, account, setup and the dependency."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    options: dict[str, Any] = {
        "name": name,
        "timeout_min": resources.timeout_min,
        "mem_gb": resources.mem_gb,
        "cpus_per_task": resources.cpus_per_task,
        "tasks_per_node": resources.tasks,
        "nodes": 1,
    }
    if resources.gpus:
        options["gpus_per_node"] = resources.gpus
    if kind == "slurm":
        additional = {"requeue": True} | ({"dependency": after} if after else {})
        options |= {"slurm_additional_parameters": additional, "slurm_setup": list(config.setup)}
        if config.partition:
            options["slurm_partition"] = config.partition
        if config.account:
            options["slurm_account"] = config.account
    executor.update_parameters(**options)
    return executor


@dataclass
class CellState:
    cell: str
    state: str  # done, pending, running, failed, not submitted
    job_id: str | None = None
    log: str | None = None
    error: str | None = None


def _ledger(results_dir: Path) -> Path:
    return Path(results_dir) / JOBS_DIR / "cells"


def _logs(results_dir: Path) -> Path:
    return Path(results_dir) / JOBS_DIR / "logs"


def _queue() -> dict[str, str]:
    """Job id -> state of every job Slurm still holds (array tasks one by one)."""
    if shutil.which("squeue") is None:
        raise HarnessError("squeue not found: --executor slurm needs a Slurm client on this machine")
    out = subprocess.run(["squeue", "-r", "-h", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise HarnessError(f"squeue failed (exit {out.returncode}): {' '.join(out.stderr.split())[:200]}")
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def _job_state(entry: dict[str, Any], queue: dict[str, str] | None) -> str | None:
    """`pending` or `running` while the scheduler holds the job; None once it has ended."""
    from submitit.core.utils import JobPaths

    if entry["executor"] == "slurm":
        state = (queue or {}).get(entry["job_id"])
        if state is None:
            return None
        return "running" if state in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending"
    if JobPaths(Path(entry["folder"]), entry["job_id"], 0).result_pickle.exists():
        return None
    try:
        os.kill(int(entry["controller"]), 0)
    except (OSError, ValueError):
        return None
    return "running"


def status(specs: list[Any], results_dir: Path) -> list[CellState]:
    """Each cell's state, from the records, the failure files and the scheduler."""
    done = recorded(specs, results_dir)
    entries = {}
    for spec in specs:
        path = _ledger(results_dir) / f"{cell_name(spec)}.json"
        if path.exists():
            entries[cell_name(spec)] = json.loads(path.read_text())
    queue = _queue() if any(e["executor"] == "slurm" for e in entries.values()) else None
    states = []
    for spec in specs:
        name = cell_name(spec)
        entry = entries.get(name)
        if name in done:
            states.append(CellState(name, "done", entry and entry["job_id"]))
            continue
        if entry is None:
            states.append(CellState(name, "not submitted"))
            continue
        running = _job_state(entry, queue)
        if running is not None:
            states.append(CellState(name, running, entry["job_id"], entry["stderr"]))
            continue
        failure = Path(results_dir) / FAILURES_DIR / f"{name}.json"
        error = json.loads(failure.read_text())["error"] if failure.exists() else "ended without a record"
        states.append(CellState(name, "failed", entry["job_id"], entry["stderr"], error))
    return states


@dataclass
class Submitted:
    jobs: list[Any] = field(default_factory=list)  # submitit jobs: pair jobs, cells, leaderboard
    cells: dict[str, str] = field(default_factory=dict)  # cell -> job id
    skipped: dict[str, str] = field(default_factory=dict)  # cell -> why (recorded, pending, running)
    failed: dict[str, CellState] = field(default_factory=dict)  # cells that ended without a record


def submit(
    specs: list[Any],
    results_dir: Path,
    kind: str,
    config: ClusterConfig,
    max_parallel: int | None = None,
    device: str | None = None,
) -> Submitted:
    """Submit the cells of `specs` that have no record and no live job (see the module docstring). The local
    executor runs them before returning, `max_parallel` at a time (default 1); on Slurm `max_parallel` caps the
    array's running tasks."""
    if kind not in EXECUTORS:
        raise unknown_choice("executor", kind, EXECUTORS)
    from kdcore.costs import device_kind

    plan_device = device or config.device or device_kind()
    results_dir = Path(results_dir)
    result = Submitted()
    for state in status(specs, results_dir):
        if state.state in ("done", "pending", "running"):
            why = "has a record" if state.state == "done" else f"job {state.job_id} {state.state}"
            result.skipped[state.cell] = why
    todo = [spec for spec in specs if cell_name(spec) not in result.skipped]
    by_pair: dict[str, list[Any]] = {}
    for spec in todo:
        by_pair.setdefault(spec.pair, []).append(spec)
    arrays = []
    for pair, cells in by_pair.items():
        estimates = [estimate_cell(spec, plan_device) for spec in cells]
        arrays += _submit_pair(pair, cells, estimates, results_dir, kind, config, max_parallel, result)
    if kind == "slurm" and arrays:
        ids = ":".join(sorted({job.job_id.split("_")[0] for job in arrays}))
        small = Resources(30, BASE_MEMORY_GB, 0, 1, 1)
        executor = make_executor(kind, _logs(results_dir), config, small, "kd-leaderboard", f"afterany:{ids}")
        from harness.jobs import build_leaderboard

        job = executor.submit(build_leaderboard, str(results_dir))
        result.jobs.append(job)
        atomic_write_json(Path(results_dir) / JOBS_DIR / LEADERBOARD_JOB, {"job_id": job.job_id, "after": ids})
    return result


def _submit_pair(
    pair: str,
    cells: list[Any],
    estimates: list[CellEstimate],
    results_dir: Path,
    kind: str,
    config: ClusterConfig,
    max_parallel: int | None,
    result: Submitted,
) -> list[Any]:
    """The pair job, then its cells (an array after it on Slurm; local: after it ended well, in chunks)."""
    from harness.jobs import CellJob, prepare_pair

    logs = _logs(results_dir)
    pairs_file = cells[0].pairs_file
    shared = job_resources(pair, estimates, config, True, cells[0].execution.generation_devices(), pairs_file)
    prepare = make_executor(kind, logs, config, shared, f"kd-prepare-{pair}").submit(prepare_pair, cells)
    result.jobs.append(prepare)
    console.print(f"[bold]submitted[/] {pair}: shared phases, job {prepare.job_id} ({shared.timeout_min} min)")
    resources = job_resources(pair, estimates, config, False, pairs_file=pairs_file)
    if kind == "local":
        try:
            prepare.result()
        except Exception as err:  # the pair's cells cannot run: each is reported with the pair job's log
            line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            for spec in cells:
                state = CellState(cell_name(spec), "failed", prepare.job_id, str(prepare.paths.stderr), line)
                result.failed[state.cell] = state
            return []
        jobs = []
        step = max_parallel or 1
        for start in range(0, len(cells), step):
            chunk = cells[start : start + step]
            executor = make_executor(kind, logs, config, resources, f"kd-{pair}")
            submitted = executor.map_array(CellJob(), chunk, [str(results_dir)] * len(chunk))
            _note(chunk, submitted, prepare.job_id, kind, logs, result)
            for spec, job in zip(chunk, submitted, strict=True):
                _wait_local(spec, job, result)
            jobs += submitted
        return jobs
    executor = make_executor(kind, logs, config, resources, f"kd-{pair}", f"afterok:{prepare.job_id}")
    if max_parallel:
        executor.update_parameters(slurm_array_parallelism=max_parallel)
    submitted = executor.map_array(CellJob(), cells, [str(results_dir)] * len(cells))
    _note(cells, submitted, prepare.job_id, kind, logs, result)
    console.print(
        f"[bold]submitted[/] {pair}: {len(cells)} cells, array {submitted[0].job_id.split('_')[0]} "
        f"after {prepare.job_id} ({resources.gpus} GPUs, {resources.mem_gb} GB, {resources.timeout_min} min each)"
    )
    return submitted


def _note(cells: list[Any], jobs: list[Any], after: str, kind: str, logs: Path, result: Submitted) -> None:
    """Write each cell's ledger entry: its job, the pair job it follows, its log paths."""
    results_dir = logs.parent.parent
    for spec, job in zip(cells, jobs, strict=True):
        name = cell_name(spec)
        result.cells[name] = job.job_id
        controller = getattr(job, "_process", None)
        atomic_write_json(
            _ledger(results_dir) / f"{name}.json",
            {
                "cell": name,
                "executor": kind,
                "job_id": job.job_id,
                "after": after,
                "folder": str(logs),
                "controller": str(controller.pid) if controller is not None else None,
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "submitted": utc_now(),
            },
        )


def _wait_local(spec: Any, job: Any, result: Submitted) -> None:
    with contextlib.suppress(Exception):  # a failed cell is reported from its failure file and log below
        job.result()
    name = cell_name(spec)
    if name not in recorded([spec], Path(job.paths.folder).parent.parent):
        failure = Path(job.paths.folder).parent.parent / FAILURES_DIR / f"{name}.json"
        error = json.loads(failure.read_text())["error"] if failure.exists() else "ended without a record"
        result.failed[name] = CellState(name, "failed", job.job_id, str(job.paths.stderr), error)


def wait(specs: list[Any], results_dir: Path) -> list[CellState]:
    """Wait (Slurm) until no cell of `specs` has a pending or running job and the last leaderboard job has ended;
    then every cell's state."""
    board = Path(results_dir) / JOBS_DIR / LEADERBOARD_JOB
    while True:
        states = status(specs, results_dir)
        live = any(s.state in ("pending", "running") for s in states)
        if not live and not (board.exists() and json.loads(board.read_text())["job_id"] in _queue()):
            return states
        time.sleep(POLL_S)


def plan_rows(specs: list[Any], results_dir: Path, device: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The plan: one row per cell (estimated FLOPs and device-hours per phase; state; for a cell with a record,
    its measured device-hours and FLOPs beside the estimate its record stored), and one row per pair for the shared
    phases; and the totals."""
    records = {}
    done = recorded(specs, results_dir)
    if done:
        from harness.sweep import record_of

        loaded = load_records(results_dir)[0]
        records = {cell_name(spec): record_of(spec, loaded) for spec in specs if cell_name(spec) in done}
    rows, shared = [], {}
    for spec in specs:
        estimate = estimate_cell(spec, device)
        name = cell_name(spec)
        row: dict[str, Any] = {
            "cell": name,
            "pair": spec.pair,
            "state": "done" if name in done else "to run",
            "phases": {p.name: p.device_hours for p in estimate.own()},
            "flops": estimate.flops,
            "device_hours": estimate.device_hours,
            "training_state_gb": estimate.training_state_gb,
        }
        record = records.get(name)
        if record is not None:
            own = {p.name for p in estimate.own()}
            cost = {n: c for n, c in record.cost.phases.items() if n in own and not c.reused}
            stored = record.estimate or estimate_cell(spec, record.environment.get("device", device)).to_dict()
            row["measured"] = {
                "device": record.environment.get("device"),
                "device_hours": sum(c.device_hours for c in cost.values()),
                "flops": sum(c.flops for c in cost.values()),
                "estimated_device_hours": stored["device_hours"],
                "estimated_flops": stored["flops"],
            }
        rows.append(row)
        for phase in estimate.phases:
            if phase.shared:
                shared.setdefault(spec.pair, {})[phase.name] = (phase.device_hours, phase.flops)
    pair_rows = [
        {"pair": pair, "phases": {n: h for n, (h, _) in phases.items()}, "flops": sum(f for _, f in phases.values())}
        for pair, phases in shared.items()
    ]
    pair_hours = {p["pair"]: sum(h or 0.0 for h in p["phases"].values()) for p in pair_rows}
    cell_hours = [r["device_hours"] for r in rows]
    unknown = None in cell_hours or any(h is None for p in pair_rows for h in p["phases"].values())
    to_run_pairs = {r["pair"] for r in rows if r["state"] != "done"}
    totals = {
        "cells": len(rows),
        "done": sum(r["state"] == "done" for r in rows),
        "device_hours": None if unknown else sum(cell_hours) + sum(pair_hours.values()),
        "to_run_device_hours": None
        if unknown
        else sum(r["device_hours"] for r in rows if r["state"] != "done")
        + sum(h for pair, h in pair_hours.items() if pair in to_run_pairs),
        "flops": sum(r["flops"] for r in rows) + sum(p["flops"] for p in pair_rows),
        "pairs": pair_rows,
    }
    return rows, totals

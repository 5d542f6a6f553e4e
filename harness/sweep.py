"""A sweep: the grid pairs x methods x seeds, run cell by cell until it is complete.

A cell is skipped when the results dir already holds its record (same pair, method, method parameters, seed
and training settings). A cell that fails is recorded in `<results_dir>/failures/<cell>.json` (its one-line
error and the traceback) and the sweep goes on with the next one; the failure file goes once the cell
succeeds. Re-running the same command after a crash, or after fixing a failure's cause, runs only what is
missing. SIGTERM stops the sweep (the running cell keeps its checkpoint and resumes on the re-run).
A cell being run holds a lock in `<results_dir>/locks/` (harness.cell_lock), so sweeps sharing the results dir,
on one machine or several, share the grid: a cell another sweep is running is skipped and reported.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import launch, pipeline
from harness.cell_lock import CellLock
from harness.experiment import experiment_key
from harness.records import load_records, utc_now
from kdcore.errors import HarnessError, Interrupted, unknown_choice
from kdcore.io import atomic_write_json
from kdcore.progress import console
from trainers.objectives import METHODS

FAILURES_DIR = "failures"
LOCKS_DIR = "locks"  # <cell>.lock while a sweep runs the cell (harness.cell_lock)


class SweepIncomplete(HarnessError):
    """Some cells failed; the others are done. The same command retries the failed ones."""

    exit_code = 1


@dataclass
class SweepResult:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell -> one-line error
    busy: dict[str, str] = field(default_factory=dict)  # cell -> the other sweep running it


def grid(
    pairs: list[str],
    methods: list[str],
    seeds: list[int],
    params: dict[str, Any],
    template: pipeline.RunSpec,
) -> list[pipeline.RunSpec]:
    """One spec per (pair, method, seed), in that order; each method takes the `params` it has (a parameter no
    method of the sweep has is an error) and the template's teacher signal if it has the choice (likewise); the rest
    of every spec comes from `template`."""
    registered = METHODS
    for method in methods:
        if method not in registered:
            raise unknown_choice("method", method, registered)
    fields = {m: {f.name for f in dataclasses.fields(registered[m].Params)} for m in methods}
    for key in params:
        if not any(key in names for names in fields.values()):
            raise HarnessError(f"parameter {key!r} belongs to none of the methods {', '.join(methods)}")
    own = {m: {k: v for k, v in params.items() if k in fields[m]} for m in methods}
    signal = template.teacher_signal
    takes_signal = {m for m in methods if pipeline.chooses_teacher_signal(registered[m]())}
    if signal is not None and not takes_signal:
        raise HarnessError(f"--teacher-signal {signal}: none of the methods {', '.join(methods)} has the choice")
    specs = [
        replace(
            template,
            pair=pair,
            method=method,
            seed=seed,
            method_params=own[method],
            teacher_signal=signal if method in takes_signal else None,
        )
        for pair in pairs
        for method in methods
        for seed in seeds
    ]
    for spec in specs:
        pipeline.check_spec(spec)  # every name and parameter is checked before the first cell runs
    return specs


def cell_name(spec: pipeline.RunSpec, key: str | None = None) -> str:
    """`<pair>-<method>-s<seed>-<experiment key>`: a file name for the cell (`key`: its experiment key, when the
    caller has it)."""
    return f"{spec.pair}-{spec.method}-s{spec.seed}-{(key or _key(spec))[:8]}"


def run_sweep(specs: list[pipeline.RunSpec], results_dir: Path) -> SweepResult:
    """Run every cell that has no record yet, going on after failures (see the module docstring)."""
    result = SweepResult()
    done = _done(results_dir)
    for spec in specs:
        identity = _key(spec)
        name = cell_name(spec, identity)
        failure = Path(results_dir) / FAILURES_DIR / f"{name}.json"
        if identity in done:
            result.skipped.append(name)
            continue
        lock, holder = _claim(Path(results_dir) / LOCKS_DIR / f"{name}.lock")
        if holder is None and identity in _done(results_dir):  # another sweep finished it meanwhile
            _release(lock)
            result.skipped.append(name)
            continue
        if holder is not None:
            result.busy[name] = holder
            console.print(f"[yellow]running in another sweep:[/] {name} ({holder}); skipped", highlight=False)
            continue
        console.print(f"[bold]sweep[/] {name}")
        try:
            pipeline.run(spec.run_in(results_dir=results_dir))
        except Interrupted:
            raise
        except Exception as err:  # any failure of one cell is recorded; the sweep goes on with the next
            line = _one_line(err)
            result.failed[name] = line
            console.print(f"[red]failed:[/] {name}: {line}", highlight=False)
            if launch.is_main_process():
                atomic_write_json(failure, _failure(spec, name, err, line))
            continue
        finally:
            _release(lock)
        result.ran.append(name)
        if launch.is_main_process():
            failure.unlink(missing_ok=True)
    return result


def _done(results_dir: Path) -> set[str]:
    """The experiment keys of the cells that have a record."""
    return {r.experiment_key for r in load_records(results_dir)[0]}


def _claim(path: Path) -> tuple[CellLock | None, str | None]:
    """The cell's lock, taken by the main process (its other processes share the outcome): (lock, None), or
    (None, who holds it)."""
    lock = CellLock(path) if launch.is_main_process() else None
    holder = lock.acquire() if lock is not None else None
    holder = launch.broadcast(holder)
    return (None, holder) if holder is not None else (lock, None)


def _release(lock: CellLock | None) -> None:
    if lock is not None:
        lock.release()


def _key(spec: pipeline.RunSpec) -> str:
    """The experiment key a record of this cell will have (a record of another build of the pair, other weights
    or data, is not this cell's)."""
    return experiment_key(pipeline.planned_experiment(spec))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(err, HarnessError) else f"{type(err).__name__}: {message}"


def _failure(spec: pipeline.RunSpec, name: str, err: BaseException, line: str) -> dict[str, Any]:
    return {
        "cell": name,
        "pair": spec.pair,
        "method": spec.method,
        "seed": spec.seed,
        "method_params": spec.method_params,
        "train_overrides": spec.train_overrides,
        "error": line,
        "traceback": traceback.format_exception(err),
        "failed_at": utc_now(),
    }


def recorded(specs: list[pipeline.RunSpec], results_dir: Path) -> set[str]:
    """Names of the cells of `specs` that have a record in `results_dir`."""
    done = _done(results_dir)
    keyed = [(spec, _key(spec)) for spec in specs]
    return {cell_name(spec, key) for spec, key in keyed if key in done}


def record_of(spec: pipeline.RunSpec, records: list[Any]) -> Any:
    """The latest of `records` that is a record of cell `spec` (None if none is)."""
    key = _key(spec)
    found = [r for r in records if r.experiment_key == key]
    return found[-1] if found else None

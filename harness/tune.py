"""Hyperparameter tuning on a held-out dev split of the training prompts, with the same trial budget for every method.

`tune` trains the pair's student once per trial setting (each of the tuning seeds), exactly as `harness run` would
but without evaluating on any benchmark, and scores it on the pair's dev split: the `dev_prompts` training-task docs
after the `train_prompts` the runs train on, so the dev problems are never trained on and the test problems never
seen. The grid is the learning rate as multiples of the pair's (`LR_FACTORS`) plus the method's own entries in
`METHOD_GRIDS`, or what `--grid` gives. Every method gets `budget` trials: the whole grid when it has that many
points or fewer, else `budget` points drawn from it with a fixed seed. The setting with the best mean dev score
(the first in grid order on a tie) is written, with every trial, to `harness/tuned/<pair>.json` (one entry per
method, fixed parameters and fixed training settings; atomic, under a file lock).

`tuned_spec` is what `harness run` and `harness sweep` apply by default: the entry of the run's method, parameters
and training settings (the grid's own keys aside), its chosen values, and `tuning` (grid, budget, chosen, dev
score) for the record's `train_config`. A run that sets a grid key itself, or has no entry, runs as given.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from harness.accounting import CostLedger
from harness.cache import cache_key, cache_root
from harness.experiment import experiment_key
from harness.pairs import Pair
from harness.phases import EvaluateReference, EvaluateStudent, plan_phases
from harness.pipeline import RunSpec, check_spec, context, pin_cpu_threads, planned_experiment, run_phase
from harness.records import new_run_id
from harness.resume import RunState, run_folder
from harness.supervise import pair_renderer
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json
from tasks import load_task
from tasks.base import Doc, Messages, Task
from tasks.evaluate import evaluate_task

TUNED_DIR = Path(__file__).resolve().parent / "tuned"
DEFAULT_BUDGET = 6
LR_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # x the pair's learning rate: six points, a factor 32 end to end
METHOD_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {  # tuned besides the learning rate (chosen grids)
    "gkd": {"beta": (0.1, 0.5, 0.9)},  # chosen: forward-KL-leaning, symmetric and reverse-KL-leaning JSD
    "hybrid": {"distill_weight": (0.2, 0.5, 0.8)},  # chosen: the release's 0.2, its sft_config.py's 0.5, a mirror
}
TRAIN_KEYS = ("lr",)  # grid keys that are training settings; the others are method parameters
SAMPLE_SEED = 0


class DevSplit(Task):
    """The pair's dev problems as a task whose `test` docs are them: docs `first`..`last` (exclusive) of the
    training task's train split, prompted and scored as the task does its test problems."""

    def __init__(self, inner: Task, first: int, last: int) -> None:
        self.inner, self.first, self.last = inner, first, last
        self.name, self.primary_metric = inner.name, inner.primary_metric
        self.max_new_tokens, self.stop = inner.max_new_tokens, inner.stop
        self.scorable, self.licence = inner.scorable, inner.licence

    def docs(self, split: str = "test") -> list[Doc]:
        return self.inner.docs("train")[self.first : self.last]

    def prompt(self, doc: Doc) -> Messages:
        return self.inner.prompt(doc)

    def reference(self, doc: Doc) -> str:
        return self.inner.reference(doc)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        return self.inner.metrics(doc, completion)

    def metrics_batch(self, docs: list[Doc], completions: list[str]) -> list[dict[str, float]]:
        return self.inner.metrics_batch(docs, completions)

    def extract(self, completion: str) -> str | None:
        return self.inner.extract(completion)


def dev_split(pair: Pair) -> DevSplit:
    """The pair's dev split; an error when the pair declares none or its train split is too short for it."""
    if not pair.dev_prompts:
        raise HarnessError(f"pair {pair.name!r} has no dev split: set dev_prompts in its pairs.toml entry to tune it")
    task = load_task(pair.train_task)
    if not task.scorable:
        raise HarnessError(f"pair {pair.name!r}: train task {pair.train_task!r} has no answers to score a dev split")
    have = len(task.docs("train"))
    last = pair.train_prompts + pair.dev_prompts
    if last > have:
        raise HarnessError(
            f"pair {pair.name!r}: train_prompts + dev_prompts = {last} but {pair.train_task!r} has {have} train docs"
        )
    return DevSplit(task, pair.train_prompts, last)


def parse_grid(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """`key=v1,v2,...` strings to a grid; values read as JSON where they parse, else strings."""
    grid: dict[str, tuple[Any, ...]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key or not values:
            raise HarnessError(f"malformed --grid {item!r}; expected key=value,value,...")
        if key in grid:
            raise HarnessError(f"--grid {key} given twice")
        grid[key] = tuple(_value(v) for v in values)
        if key == "lr" and not all(_positive(v) for v in grid[key]):
            raise HarnessError(f"--grid {item!r}: learning rates must be positive numbers")
    return grid


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def default_grid(pair: Pair, method: str) -> dict[str, tuple[Any, ...]]:
    """The learning rate as `LR_FACTORS` x the pair's, and the method's own entries of `METHOD_GRIDS`."""
    lr = pair.train.get("lr")
    if not _positive(lr):
        raise HarnessError(f"pair {pair.name!r} sets no learning rate to scale; give --grid lr=...")
    return {"lr": tuple(float(f"{lr * f:.6g}") for f in LR_FACTORS), **METHOD_GRIDS.get(method, {})}


def trial_settings(grid: dict[str, tuple[Any, ...]], budget: int) -> list[dict[str, Any]]:
    """The grid's points in order (keys sorted), or `budget` of them drawn without replacement with a fixed seed
    when it has more."""
    if budget < 1:
        raise HarnessError(f"--budget {budget}: must be a positive integer")
    keys = sorted(grid)
    points = [dict(zip(keys, values, strict=True)) for values in product(*(grid[k] for k in keys))]
    if len(points) <= budget:
        return points
    chosen = np.random.default_rng(SAMPLE_SEED).choice(len(points), size=budget, replace=False)
    return [points[i] for i in sorted(chosen)]


def with_setting(spec: RunSpec, setting: dict[str, Any]) -> RunSpec:
    """`spec` with a grid point's training settings and method parameters."""
    train = {k: v for k, v in setting.items() if k in TRAIN_KEYS}
    params = {k: v for k, v in setting.items() if k not in TRAIN_KEYS}
    return replace(
        spec, train_overrides={**spec.train_overrides, **train}, method_params={**spec.method_params, **params}
    )


def dev_score(spec: RunSpec, dev: DevSplit) -> float:
    """Train as a run of `spec` would (supervision and training, cached and resumable the same way) and return
    the trained student's score on the dev split; the trained weights are removed afterwards. The score is
    cached by the trial's settings, so a stopped tuning resumes where it was."""
    key = experiment_key(planned_experiment(spec))
    cached = cache_root() / "tuning" / f"{cache_key({'trial': key, 'dev': [dev.first, dev.last]})}.json"
    if cached.is_file():
        return float(json.loads(cached.read_text())["dev_score"])
    pair, objective, _ = check_spec(spec)
    pin_cpu_threads(pair)
    spec = spec.run_in(results_dir=cache_root() / "tuning" / "runs")
    state = RunState.begin(run_folder(key), lambda: new_run_id(pair.name, objective.name, spec.seed))
    ctx = context(spec, state, CostLedger())
    for phase in plan_phases(ctx.plan):
        if not isinstance(phase, EvaluateStudent | EvaluateReference):
            run_phase(ctx, phase, (0, 1), True, gather=False)
            state.save(ctx.ledger)
    try:
        generator = ctx.resident.generator(str(ctx.model_dir), seed=spec.seed)
        score = evaluate_task(
            dev, generator, pair_renderer(pair, ctx.tokenizer), seed=spec.seed, generation=pair.evaluation
        )
    finally:
        ctx.resident.release()
    atomic_write_json(cached, {"dev_score": score.score, "n": score.n})
    state.close()
    shutil.rmtree(ctx.model_dir, ignore_errors=True)
    return float(score.score)


@dataclass(frozen=True)
class Trial:
    """One grid point's dev scores, one per tuning seed."""

    setting: dict[str, Any]
    dev_scores: list[float]

    @property
    def dev_score(self) -> float:
        return float(np.mean(self.dev_scores))


def tune(
    spec: RunSpec,
    *,
    grid: dict[str, tuple[Any, ...]] | None = None,
    budget: int = DEFAULT_BUDGET,
    seeds: Sequence[int] = (0,),
    tuned_dir: Path | None = None,
) -> dict[str, Any]:
    """Tune `spec`'s method on its pair's dev split (see the module docstring); write and return the entry."""
    pair, objective, _ = check_spec(spec)
    dev = dev_split(pair)
    grid = grid or default_grid(pair, spec.method)
    fixed = sorted(set(grid) & ({*spec.method_params} | {*spec.train_overrides}))
    if fixed:
        raise HarnessError(f"{fixed[0]!r} is both set (--param or a training option) and in the grid; give it once")
    if not seeds:
        raise HarnessError("tuning needs at least one seed")
    settings = trial_settings(grid, budget)
    for setting in settings:  # every trial's names and values checked before the first one trains
        check_spec(with_setting(spec, setting))
    trials = [
        Trial(setting, [dev_score(replace(with_setting(spec, setting), seed=seed), dev) for seed in seeds])
        for setting in settings
    ]
    best = max(trials, key=lambda t: t.dev_score)  # the first of equal scores: grid order
    entry = {
        "method": objective.name,
        "method_params": spec.method_params,
        "train_overrides": spec.train_overrides,
        "grid": {k: list(v) for k, v in sorted(grid.items())},
        "budget": budget,
        "seeds": list(seeds),
        "dev": {"task": pair.train_task, "split": "train", "docs": [dev.first, dev.last]},
        "trials": [{"setting": t.setting, "dev_scores": t.dev_scores, "dev_score": t.dev_score} for t in trials],
        "chosen": best.setting,
        "dev_score": best.dev_score,
    }
    write_entry(tuned_dir or TUNED_DIR, pair.name, entry)
    return entry


def _entry_key(entry: dict[str, Any]) -> str:
    return json.dumps([entry["method"], entry["method_params"], entry["train_overrides"]], sort_keys=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`'s companion lock file, for a read-modify-write of `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


REQUIRED = ("method", "method_params", "train_overrides", "grid", "budget", "seeds", "dev", "chosen", "dev_score")


def read_entries(tuned_dir: Path, pair: str) -> list[dict[str, Any]]:
    """The tuned entries of `pair` (none when it has no file); a malformed file is a one-line error."""
    path = tuned_dir / f"{pair}.json"
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["entries"]
        missing = [(i, k) for i, entry in enumerate(entries) for k in REQUIRED if k not in entry]
    except (ValueError, KeyError, TypeError) as err:
        raise HarnessError(f"malformed tuned settings {path} ({err}); run `harness tune` again") from err
    if missing:
        raise HarnessError(f"malformed tuned settings {path}: entry {missing[0][0]} has no {missing[0][1]!r}")
    return entries


def write_entry(tuned_dir: Path, pair: str, entry: dict[str, Any]) -> Path:
    """Add or replace `entry` in `<tuned_dir>/<pair>.json`, entries sorted, atomically and under a lock."""
    path = tuned_dir / f"{pair}.json"
    with _locked(path):
        entries = {_entry_key(e): e for e in read_entries(tuned_dir, pair)}
        entries[_entry_key(entry)] = entry
        return atomic_write_json(path, {"pair": pair, "entries": [entries[k] for k in sorted(entries)]})


def tuned_spec(spec: RunSpec, tuned_dir: Path | None = None) -> RunSpec:
    """`spec` with its tuned setting and the record's `tuning` facts, when `<tuned_dir>/<pair>.json` has an entry
    for its method, parameters and training settings (grid keys aside), tuned on the pair's current training and
    dev prompts, and the run sets no grid key itself; else `spec` unchanged."""
    pair, objective, _ = check_spec(spec)
    dev = {
        "task": pair.train_task,
        "split": "train",
        "docs": [pair.train_prompts, pair.train_prompts + pair.dev_prompts],
    }
    for entry in read_entries(tuned_dir or TUNED_DIR, spec.pair):
        if set(entry["grid"]) & ({*spec.method_params} | {*spec.train_overrides}) or entry["dev"] != dev:
            continue  # the run sets a grid key itself, or the pair's training and dev prompts are not the tuned ones
        same = (entry["method"], entry["method_params"], entry["train_overrides"])
        if same == (objective.name, spec.method_params, spec.train_overrides):
            tuning = {k: entry[k] for k in ("grid", "budget", "seeds", "dev", "chosen", "dev_score")}
            return replace(with_setting(spec, entry["chosen"]), tuning=tuning)
    return spec

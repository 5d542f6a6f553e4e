"""Bootstrap over problems and seeds: the resampler behind `harness compare` and the leaderboard's intervals.

A row of runs is a `Series`: per benchmark a (runs x problems) matrix of per-problem scores, problems in one
order shared by every series of a bootstrap. Each resample draws the problems with replacement, one draw for
all series (paired on problems), and each series' runs with replacement, one draw per distinct seed set
(paired on seeds: methods run with the same seeds are resampled together). Percentile intervals.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdcore.errors import HarnessError

LEVEL = 0.95
BOOT_CELLS = 1 << 22  # resampled cells held at once: bounds memory whatever the number of problems and seeds


@dataclass(frozen=True)
class Series:
    """Per-problem scores of one row of runs: per benchmark a (runs x problems) matrix, its problems in the
    order every series of one bootstrap uses; `seeds` names the runs, and series with equal `seeds` are
    resampled with the same draw of runs."""

    seeds: tuple[Hashable, ...]
    scores: dict[str, np.ndarray]


def bootstrap_means(series: Sequence[Series], tasks: Sequence[str], *, n_boot: int, seed: int = 0) -> np.ndarray:
    """Resampled means, shape (n_boot, len(series), len(tasks)): each resample draws every benchmark's problems
    with replacement (one draw shared by all series: paired on problems) and each series' runs with replacement
    (one draw per distinct `seeds`: paired on seeds). Every benchmark and seed set has its own random stream, so
    the result depends on `seed` only, not on how the work is chunked."""
    sizes = [series[0].scores[task].shape[1] for task in tasks]
    for one in series:
        for task, n in zip(tasks, sizes, strict=True):
            if one.scores[task].ndim != 2 or one.scores[task].shape[1] != n or not len(one.seeds):
                raise ValueError(f"series must have runs and the same {n} problems on {task!r}")
    if not all(sizes):
        raise ValueError("no values to resample")
    seed_sets = sorted({one.seeds for one in series if len(one.seeds) > 1}, key=repr)
    doc_streams = [np.random.default_rng([seed, 0, t]) for t in range(len(tasks))]
    seed_streams = {seeds: np.random.default_rng([seed, 1, j]) for j, seeds in enumerate(seed_sets)}
    chunk = max(1, BOOT_CELLS // (max(sizes) * max(len(one.seeds) for one in series)))
    out = np.empty((n_boot, len(series), len(tasks)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        docs = [rng.integers(0, n, size=(stop - start, n)) for rng, n in zip(doc_streams, sizes, strict=True)]
        runs = {
            seeds: rng.integers(0, len(seeds), size=(stop - start, len(seeds))) for seeds, rng in seed_streams.items()
        }
        for i, one in enumerate(series):
            for t, task in enumerate(tasks):
                per_run = one.scores[task][:, docs[t]].mean(axis=2)  # (runs, resamples)
                drawn = np.take_along_axis(per_run.T, runs[one.seeds], axis=1) if one.seeds in runs else per_run.T
                out[start:stop, i, t] = drawn.mean(axis=1)
    return out


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of resampled values (undefined resamples, NaN, left out)."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    diffs: np.ndarray, *, n_boot: int = 10000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `diffs`, resampling its entries with replacement."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        raise ValueError("no values to resample")
    means = bootstrap_means([Series((0,), {"": diffs[None, :]})], [""], n_boot=n_boot, seed=seed)
    return percentile_interval(means[:, 0, 0], level)


def read_samples(path: Path) -> dict[int, float]:
    """doc_id -> score from one per-sample log (JSON lines)."""
    if not path.is_file():
        raise HarnessError(f"per-sample log not found: {path}")
    scores = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            scores[int(entry["doc_id"])] = float(entry["score"])
        except (ValueError, KeyError, TypeError) as err:
            raise HarnessError(f"malformed per-sample log line {path}:{number} ({err})") from err
    return scores


def aligned(per_run: Sequence[Sequence[dict[int, float]]]) -> tuple[list[int], list[np.ndarray]]:
    """The problems every run of every series scored (sorted doc ids), and each series' (runs x problems) matrix."""
    docs = sorted(set.intersection(*(set(run) for runs in per_run for run in runs)))
    return docs, [np.array([[run[d] for d in docs] for run in runs]) for runs in per_run]

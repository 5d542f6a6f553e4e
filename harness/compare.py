"""Paired comparisons between methods on the same problems, with bootstrap 95% intervals.

For each benchmark, each method's per-sample logs are read for all its seeds; a problem's score is its mean
over the method's seeds (seeds pooled). Two methods are paired on the problems both have (join on doc_id),
and the interval for the mean difference comes from resampling problems with replacement (percentile
bootstrap), which is what "is this gain real on this benchmark?" asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from rich.table import Table

from harness.leaderboard import Group, group_runs, resolve_method, usable_records
from kdcore.errors import HarnessError, unknown_choice

LEVEL = 0.95
BOOT_CELLS = 1 << 22  # resampled indices held at once: bounds memory whatever the number of problems


@dataclass(frozen=True)
class Comparison:
    """`method` minus `reference` on one benchmark, over the problems both were scored on (fractions, not %)."""

    task: str
    reference: str
    method: str
    n_docs: int
    reference_score: float
    method_score: float
    diff: float
    low: float
    high: float
    reference_seeds: int
    method_seeds: int

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.low > 0 or self.high < 0


def bootstrap_interval(
    diffs: np.ndarray, *, n_boot: int = 10000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `diffs`, resampling its entries with replacement."""
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


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


def pooled_doc_scores(results_dir: Path, group: Group, task: str) -> dict[int, float]:
    """doc_id -> the problem's score averaged over the group's seeds that scored it."""
    per_doc: dict[int, list[float]] = {}
    for run in group.runs:
        score = run.scores.get(task)
        if score is None:
            continue
        if score.samples is None:
            raise HarnessError(f"run {run.run_id} has no per-sample log for {task!r}; cannot pair problems")
        for doc_id, value in read_samples(results_dir / score.samples).items():
            per_doc.setdefault(doc_id, []).append(value)
    return {doc_id: float(np.mean(values)) for doc_id, values in per_doc.items()}


def compare(
    results_dir: str | Path,
    pair: str,
    methods: list[str],
    *,
    tasks: list[str] | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    all_pairs: bool = False,
) -> list[Comparison]:
    """Each method against the first (or every two methods, with `all_pairs`), per benchmark.

    `methods` are method names, or row labels such as 'hybrid (alpha=0.3)' where a method has several
    settings. `tasks` defaults to the benchmarks every method was scored on.
    """
    if len(methods) < 2:
        raise HarnessError(f"compare needs at least two methods, got {methods!r}")
    results_dir = Path(results_dir)
    records, _ = usable_records(results_dir)
    groups = group_runs(records)
    chosen = [resolve_method(groups, pair, name) for name in methods]
    scored = [{t for run in g.runs for t in run.scores} for g in chosen]
    common = sorted(set.intersection(*scored))
    if tasks is None:
        tasks = common
    for task in tasks:
        if task not in common:
            raise unknown_choice("task (scored for every method)", task, common)
    couples = list(combinations(chosen, 2)) if all_pairs else [(chosen[0], g) for g in chosen[1:]]
    out = []
    for task in tasks:
        pooled = {g.label: pooled_doc_scores(results_dir, g, task) for g in chosen}
        for reference, method in couples:
            ref_docs, method_docs = pooled[reference.label], pooled[method.label]
            docs = sorted(ref_docs.keys() & method_docs.keys())
            if not docs:
                raise HarnessError(f"{method.label!r} and {reference.label!r} share no problems on {task!r}")
            ref = np.array([ref_docs[d] for d in docs])
            other = np.array([method_docs[d] for d in docs])
            low, high = bootstrap_interval(other - ref, n_boot=n_boot, seed=seed)
            out.append(
                Comparison(
                    task=task,
                    reference=reference.label,
                    method=method.label,
                    n_docs=len(docs),
                    reference_score=float(ref.mean()),
                    method_score=float(other.mean()),
                    diff=float((other - ref).mean()),
                    low=low,
                    high=high,
                    reference_seeds=len(reference.runs),
                    method_seeds=len(method.runs),
                )
            )
    return out


def comparison_table(comparisons: list[Comparison], title: str = "") -> Table:
    """A rich table, scores and differences in percentage points; green/red where the interval excludes 0."""
    table = Table(title=title or None)
    for name in ("benchmark", "method", "vs", "problems", "method %", "vs %", "diff (pp)", "95% CI (pp)"):
        table.add_column(name, justify="left" if name in ("benchmark", "method", "vs") else "right")
    for c in comparisons:
        style = ("green" if c.diff > 0 else "red") if c.significant else ""
        table.add_row(
            c.task,
            f"{c.method} ({c.method_seeds} seeds)",
            f"{c.reference} ({c.reference_seeds} seeds)",
            str(c.n_docs),
            f"{100 * c.method_score:.1f}",
            f"{100 * c.reference_score:.1f}",
            f"{100 * c.diff:+.1f}",
            f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}]",
            style=style,
        )
    return table

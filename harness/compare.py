"""Paired comparisons between methods on the same problems, with bootstrap 95% intervals.

For each benchmark, each method's per-sample logs are read for all its seeds, as a (seeds x problems)
matrix over the problems every seed scored. Two methods are paired on the problems both have (join on
doc_id), and the interval for the mean difference comes from a percentile bootstrap over problems and seeds:
each resample draws the problems with replacement, the same draw for every method (paired on problems), and
each method's seeds with replacement, the same draw for methods run with the same seeds (paired on seeds).
That is what "is this gain real on this benchmark, beyond the luck of the seed?" asks. The leaderboard's
intervals come from the same resampler (`bootstrap_means`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

from rich.table import Table

from harness.bootstrap import Series, aligned, bootstrap_means, percentile_interval, read_samples
from harness.leaderboard import Group, build_groups, group_runs, resolve_method, usable_records
from harness.records import RunRecord
from kdcore.errors import HarnessError, unknown_choice
from kdcore.scores import TaskScore

REFERENCE_ROWS = {"teacher": "teacher_scores", "student-before": "student_before_scores"}


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


def run_doc_scores(results_dir: Path, runs: Sequence[RunRecord], task: str) -> list[dict[int, float]]:
    """doc_id -> score of each run that scored `task`, from its per-sample log."""
    out = []
    for run in runs:
        score = run.scores.get(task)
        if score is None:
            continue
        if score.samples is None:
            raise HarnessError(f"run {run.run_id} has no per-sample log for {task!r}; cannot pair problems")
        out.append(read_samples(results_dir / score.samples))
    return out


def reference_group(groups: list[Group], pair: str, name: str) -> Group:
    """The teacher's or the student's own scores (`name`: a key of REFERENCE_ROWS) in the build of `pair`, as a
    group with one pseudo-run per distinct evaluation (never paired on seeds with real runs)."""
    of_build = build_groups(groups, pair)
    distinct: dict[str, dict[str, TaskScore]] = {}
    for run in (run for group in of_build for run in group.runs):
        scores = getattr(run, REFERENCE_ROWS[name])
        distinct.setdefault(json.dumps({t: (s.samples, s.score, s.n) for t, s in sorted(scores.items())}), scores)
    anchor = of_build[0].runs[0]
    runs = [
        replace(anchor, scores=scores, run_id=f"{name} evaluation {i}", seed=-1 - i)
        for i, scores in enumerate(distinct[k] for k in sorted(distinct))
        if scores
    ]
    if not runs:
        raise HarnessError(
            f"the runs of pair {pair!r} carry no {name} scores (schema-1 records have no student-before)"
        )
    return Group(anchor.pair, name, "", {}, runs, label=name, build=of_build[0].build)


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
    settings, or `teacher` / `student-before` for the build's reference evaluations (e.g. the paired gain of a
    method over the student before distillation). `pair` is a pair name, or `<pair>@<build>` where it has runs
    of several builds. `tasks` defaults to the benchmarks every method was scored on.
    """
    if len(methods) < 2:
        raise HarnessError(f"compare needs at least two methods, got {methods!r}")
    results_dir = Path(results_dir)
    records, _ = usable_records(results_dir)
    groups = group_runs(records)
    chosen = [
        reference_group(groups, pair, name) if name in REFERENCE_ROWS else resolve_method(groups, pair, name)
        for name in methods
    ]
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
        logs = {g.label: run_doc_scores(results_dir, g.runs, task) for g in chosen}
        seeds = {g.label: tuple(r.seed for r in g.runs if task in r.scores) for g in chosen}
        for reference, method in couples:
            docs, (ref, other) = aligned([logs[reference.label], logs[method.label]])
            if not docs:
                raise HarnessError(f"{method.label!r} and {reference.label!r} share no problems on {task!r}")
            pair_series = [Series(seeds[reference.label], {task: ref}), Series(seeds[method.label], {task: other})]
            means = bootstrap_means(pair_series, [task], n_boot=n_boot, seed=seed)
            low, high = percentile_interval(means[:, 1, 0] - means[:, 0, 0])
            out.append(
                Comparison(
                    task=task,
                    reference=reference.label,
                    method=method.label,
                    n_docs=len(docs),
                    reference_score=float(ref.mean()),
                    method_score=float(other.mean()),
                    diff=float(other.mean() - ref.mean()),
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

"""Comparisons between methods on the same problems, paired by seed, with t intervals.

For each benchmark, each method's per-sample logs are read for all its seeds and every run is scored on the
problems both methods have (join on doc_id). Two rows with at least two seeds in common are compared on those seeds
by the t interval of their per-seed differences (paired by seed: each seed's luck cancels; scores and seed counts
are then those of the shared seeds); rows with fewer shared seeds by Welch's t interval; the teacher's or the
student's own single evaluation enters as an exact value (harness.stats). An interval that contains 0 means the two
cannot be told apart with these seeds. The minimum detectable difference is the smallest true difference a
two-sided t test at alpha 0.05 finds with power 0.8 with the same standard error and degrees of freedom: what these
seeds can resolve on this benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

import numpy as np
from rich.table import Table

from harness.records import RunRecord
from harness.results.groups import Group, build_groups, group_runs, resolve_method
from harness.results.store import usable_records
from harness.stats import Interval, constant_difference, paired_difference, welch_difference
from kdcore.errors import HarnessError, unknown_choice
from kdcore.scores import TaskScore

PAIRED, UNPAIRED, EXACT = "paired by seed", "unpaired (Welch)", "against an exact reference"
REFERENCE_ROWS = {"teacher": "teacher_scores", "student-before": "student_before_scores"}


@dataclass(frozen=True)
class Comparison:
    """`method` minus `reference` on one benchmark, over the problems both were scored on (fractions, not %):
    the interval (None with too few seeds), how it pairs the runs and the minimum detectable difference."""

    task: str
    reference: str
    method: str
    n_docs: int
    reference_score: float
    method_score: float
    diff: float
    low: float | None
    high: float | None
    reference_seeds: int
    method_seeds: int
    pairing: str
    detectable: float | None

    @property
    def significant(self) -> bool:
        """True when the interval exists and excludes zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        if self.low is None:
            return "no interval (one seed)"
        if not self.significant:
            return "cannot be told apart"
        return "method better" if self.diff > 0 else "reference better"


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


def difference(
    reference: dict[int, float], method: dict[int, float], *, exact_reference: bool, exact_method: bool
) -> tuple[Interval, str]:
    """`method - reference` from per-seed scores: against an exact value where one side is a single reference
    evaluation, paired on the shared seeds where there are at least two, else Welch's."""
    if exact_reference and len(reference) == 1:
        return constant_difference(next(iter(reference.values())), list(method.values())), EXACT
    if exact_method and len(method) == 1:
        flipped = constant_difference(next(iter(method.values())), list(reference.values()))
        return Interval(-flipped.mean, _neg(flipped.high), _neg(flipped.low), flipped.n, flipped.se, flipped.df), EXACT
    if len(set(reference) & set(method)) >= 2:
        return paired_difference(reference, method), PAIRED
    return welch_difference(list(reference.values()), list(method.values())), UNPAIRED


def _neg(value: float | None) -> float | None:
    return None if value is None else -value


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
    all_pairs: bool = False,
) -> list[Comparison]:
    """Each method against the first (or every two methods, with `all_pairs`), per benchmark.

    `methods` are method names where the build has one setting of the method, else a row's id (the leaderboard's
    `id` column) or label such as 'hybrid (alpha=0.3)', or `teacher` / `student-before` for the build's reference
    evaluations (e.g. the paired gain of a method over the student before distillation). `pair` is a pair name, or
    `<pair>@<build>` where it has runs of several builds. `tasks` defaults to the benchmarks every method was scored
    on.
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
        seeds = {g.label: [r.seed for r in g.runs if task in r.scores] for g in chosen}
        for reference, method in couples:
            docs, (ref, other) = aligned([logs[reference.label], logs[method.label]])
            if not docs:
                raise HarnessError(f"{method.label!r} and {reference.label!r} share no problems on {task!r}")
            by_seed = [
                dict(zip(seeds[g.label], matrix.mean(axis=1), strict=True))
                for g, matrix in ((reference, ref), (method, other))
            ]
            interval, pairing = difference(
                *by_seed,
                exact_reference=reference.method in REFERENCE_ROWS,
                exact_method=method.method in REFERENCE_ROWS,
            )
            if pairing == PAIRED:
                by_seed = [{s: v for s, v in one.items() if s in by_seed[0] and s in by_seed[1]} for one in by_seed]
            ref_score, method_score = (float(np.mean(list(one.values()))) for one in by_seed)
            out.append(
                Comparison(
                    task=task,
                    reference=reference.label,
                    method=method.label,
                    n_docs=len(docs),
                    reference_score=ref_score,
                    method_score=method_score,
                    diff=method_score - ref_score,
                    low=interval.low,
                    high=interval.high,
                    reference_seeds=len(by_seed[0]),
                    method_seeds=len(by_seed[1]),
                    pairing=pairing,
                    detectable=interval.detectable(),
                )
            )
    return out


def _pp(value: float | None, spec: str = "+.1f") -> str:
    return "–" if value is None else format(100 * value, spec)


def comparison_table(comparisons: list[Comparison], title: str = "") -> Table:
    """A rich table, scores and differences in percentage points; green/red where the interval excludes 0."""
    table = Table(title=title or None)
    names = ("benchmark", "method", "vs", "problems", "method %", "vs %", "diff (pp)", "95% CI (pp)")
    for name in (*names, "detectable (pp)", "pairing", "verdict"):
        table.add_column(
            name, justify="left" if name in ("benchmark", "method", "vs", "pairing", "verdict") else "right"
        )
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
            "–" if c.low is None else f"[{_pp(c.low)}, {_pp(c.high)}]",
            _pp(c.detectable, ".1f"),
            c.pairing,
            c.verdict,
            style=style,
        )
    return table


DETECTABLE_NOTE = (
    "95% CI: t interval over seeds (paired on the seeds both rows have where they share two or more, Welch's "
    "otherwise; a single reference evaluation is exact). detectable (pp): the smallest true difference a two-sided "
    "t test at alpha 0.05 finds with power 0.8 at this comparison's standard error and degrees of freedom "
    "(noncentral t, observed SD)."
)

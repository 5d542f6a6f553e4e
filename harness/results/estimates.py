"""Groups to tables of estimates: per build of a pair, each row's scores (mean over seeds with a t interval),
gap recovered, minimum detectable difference and charged cost, the reference rows, and the notes a table carries."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.experiment import build_key
from harness.records import RunRecord, describe_trial
from harness.results.costs import COSTS, charged, ordered_phases
from harness.results.groups import TUNING, Group, group_runs, resolve_method, show_value
from harness.results.store import usable_records
from harness.stats import mean_interval, two_row_detectable
from kdcore.errors import unknown_choice
from kdcore.scores import TRUNCATED, TaskScore

MISSING = "–"

TEACHER, BEFORE = "teacher (reference)", "student before distillation (reference)"


@dataclass(frozen=True)
class Estimate:
    """A mean (in % for scores), its 95% t interval over its values (None for a single value), how many values it
    has, and the minimum detectable difference against a row like it (None where not computed)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    detectable: float | None = None


@dataclass
class Reference:
    """A reference row: the teacher's or the student's own scores, over its distinct evaluations."""

    label: str
    scores: dict[str, Estimate]
    average: Estimate | None
    evaluations: int
    note: str = ""
    truncated: dict[str, Estimate] = field(default_factory=dict)  # benchmark -> % of completions that hit the budget


@dataclass
class Row:
    """One leaderboard row: a group's scores (%), gap recovered, and mean cost per run."""

    group: Group
    scores: dict[str, Estimate]
    average: Estimate | None  # macro average over the table's benchmarks, from runs that have them all
    gap: Estimate | None
    phase_hours: dict[str, float]
    total_hours: float  # amortised
    standalone_hours: float
    total_flops: float  # amortised
    standalone_flops: float
    devices: str
    cheaper: float | None = None
    cheaper_standalone: float | None = None
    truncated: dict[str, Estimate] = field(default_factory=dict)  # benchmark -> % of completions that hit the budget

    @property
    def label(self) -> str:
        return self.group.label

    @property
    def seeds(self) -> int:
        return len(self.group.runs)

    @property
    def tuned(self) -> str:
        """How the row's settings were tuned: the choice, the grid's sizes and the trial budget; – if untuned."""
        tuning = self.group.settings["train_config"].get(TUNING)
        if not isinstance(tuning, dict):
            return MISSING
        chosen = ", ".join(f"{k}={show_value(v)}" for k, v in sorted(tuning.get("chosen", {}).items()))
        grid = ", ".join(f"{k} x{len(v)}" for k, v in sorted(tuning.get("grid", {}).items()))
        return f"{chosen} (grid {grid}; {tuning.get('budget')} trials on dev)"

    @property
    def detectable(self) -> float | None:
        """The minimum detectable difference (pp) on the mean over benchmarks, or on the one benchmark."""
        headline = self.average or (next(iter(self.scores.values())) if len(self.scores) == 1 else None)
        return headline.detectable if headline else None


@dataclass
class PairTable:
    """The rows of one build of a pair, with its benchmarks, phases, identity and reference rows."""

    pair: str
    build: str
    title: str
    pinned: bool
    identity: dict[str, Any]
    teacher: str
    student: str
    benchmarks: list[str]
    phases: list[str]
    references: list[Reference]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    baseline: str | None = None  # the label of the baseline row, when it exists in this table

    def reference(self, label: str) -> Reference | None:
        return next((r for r in self.references if r.label == label), None)

    @property
    def tuning(self) -> bool:
        """Whether a row of the table was tuned (the `tuned` column is shown only then)."""
        return any(row.tuned != MISSING for row in self.rows)

    @property
    def truncation(self) -> bool:
        """Whether a row of the table reports truncated rates (their columns are shown only then)."""
        return any(r.truncated for r in [*self.rows, *self.references])

    @property
    def teacher_average(self) -> float | None:
        teacher = self.reference(TEACHER)
        return teacher.average.mean if teacher and teacher.average else None


@dataclass
class Leaderboard:
    tables: list[PairTable]
    problems: list[str] = field(default_factory=list)
    baseline: str | None = None
    n_records: int = 0


@dataclass
class _Values:
    """What the estimates of one row need: per benchmark, who its values are (seeds or evaluations) and their
    recorded scores (%)."""

    seeds: dict[str, tuple[Hashable, ...]] = field(default_factory=dict)
    means: dict[str, list[float]] = field(default_factory=dict)

    def add(self, task: str, seeds: tuple[Hashable, ...], scores: list[TaskScore]) -> None:
        """Add one benchmark's values (runs or evaluations, named by `seeds`)."""
        self.seeds[task] = seeds
        self.means[task] = [100.0 * s.score for s in scores]


def _truncated(scores: Iterable[TaskScore]) -> Estimate | None:
    """The mean % of completions that hit their token budget over the scores that report it (no interval); None when
    none does."""
    rates = [100.0 * score.metrics[TRUNCATED] for score in scores if TRUNCATED in score.metrics]
    return Estimate(float(np.mean(rates)), None, None, len(rates)) if rates else None


def _estimate(values: list[float]) -> Estimate:
    """The mean of `values` with its t interval over them and the minimum detectable difference against a row
    like it (none for a single value)."""
    interval = mean_interval(values)
    return Estimate(interval.mean, interval.low, interval.high, interval.n, two_row_detectable(values))


def _score_estimates(
    values: _Values, benchmarks: list[str]
) -> tuple[dict[str, Estimate], Estimate | None, list[float] | None]:
    """Per-benchmark estimates, and the macro average with its per-value averages where the same values have
    every benchmark."""
    scores = {task: _estimate(values.means[task]) for task in benchmarks if values.means.get(task)}
    if len(scores) < len(benchmarks) or len({values.seeds[b] for b in benchmarks}) != 1:
        return scores, None, None
    averages = [float(np.mean(column)) for column in zip(*(values.means[b] for b in benchmarks), strict=True)]
    return scores, _estimate(averages), averages


def _gap(averages: list[float] | None, before: Reference | None, teacher: Reference | None) -> Estimate | None:
    """(after - before) / (teacher - before) on the macro average, per value, with its t interval; the references'
    means are taken as exact."""
    if averages is None or before is None or teacher is None or before.average is None or teacher.average is None:
        return None
    span = teacher.average.mean - before.average.mean
    if span == 0:
        return None
    interval = mean_interval([(a - before.average.mean) / span for a in averages])
    return Estimate(interval.mean, interval.low, interval.high, interval.n)


def _reference(runs: list[RunRecord], kind: str, label: str, benchmarks: list[str]) -> Reference | None:
    """A reference row from the runs' `kind` scores (teacher_scores or student_before_scores): its distinct
    evaluations per benchmark (runs share one cached evaluation), never averaging evaluations of different sizes."""
    values = _Values()
    notes, evaluations, truncated = [], 0, {}
    for task in benchmarks:
        distinct = {}
        for run in runs:
            if (score := getattr(run, kind).get(task)) is not None:
                distinct.setdefault((score.samples, score.score, score.n), score)
        sizes = sorted({score.n for score in distinct.values()})
        if len(sizes) > 1:
            notes.append(f"{task}: evaluations of {', '.join(map(str, sizes))} problems, not averaged")
            continue
        if distinct:
            names = tuple(f"evaluation {i}" for i in range(len(distinct)))
            values.add(task, names, [distinct[k] for k in sorted(distinct, key=repr)])
            evaluations = max(evaluations, len(distinct))
            if (rate := _truncated(distinct.values())) is not None:
                truncated[task] = rate
    if not values.means:
        return None
    scores, average, _ = _score_estimates(values, benchmarks)
    return Reference(label, scores, average, evaluations, "; ".join(notes), truncated)


def _row(
    group: Group,
    benchmarks: list[str],
    costs: dict[str, dict[str, dict[str, float]]],
    references: dict[str, Reference],
) -> Row:
    runs = group.runs
    values = _Values()
    for task in benchmarks:
        scored = [r for r in runs if task in r.scores]
        if scored:
            values.add(task, tuple(r.seed for r in scored), [r.scores[task] for r in scored])
    scores, average, averages = _score_estimates(values, benchmarks)
    gap = _gap(averages, references.get(BEFORE), references.get(TEACHER))
    hours, flops = costs["device_hours"], costs["flops"]
    phases = {name for r in runs for name in r.cost.phases}
    devices = sorted({p.device for r in runs for p in r.cost.phases.values()})
    return Row(
        group=group,
        scores=scores,
        average=average,
        gap=gap,
        phase_hours={p: float(np.mean([hours[r.run_id].get(p, 0.0) for r in runs])) for p in phases},
        total_hours=float(np.mean([sum(hours[r.run_id].values()) for r in runs])),
        standalone_hours=float(np.mean([r.cost.total_device_hours for r in runs])),
        total_flops=float(np.mean([sum(flops[r.run_id].values()) for r in runs])),
        standalone_flops=float(np.mean([r.cost.standalone_flops for r in runs])),
        devices=", ".join(devices),
        truncated={
            task: rate
            for task in benchmarks
            if (rate := _truncated(r.scores[task] for r in runs if task in r.scores)) is not None
        },
    )


def _ratio(base: float, value: float) -> float | None:
    return base / value if value > 0 else None


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            out.update(_flat(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: show_value(value)}


def _short(value: Any) -> str:
    text = show_value(value)
    return f"{text[:12]}…" if re.fullmatch(r"[0-9a-f]{40,64}", text) else text


def _limit(limit: Any) -> str:
    return "all test docs" if limit is None else f"first {limit} test docs"


def identity_note(identity: dict[str, Any]) -> str:
    """One line naming what a build pins (hashes shortened)."""
    if identity.get("unpinned"):
        return (
            f"Unpinned (schema-1 records): `{identity['teacher']}` → `{identity['student']}`, "
            f"{_limit(identity['limit'])}; these records do not name model weights, tokenizers or data, so they are "
            "never grouped with pinned runs."
        )
    parts = []
    for role in ("teacher", "student"):
        model = identity["models"][role]
        pin = f"weights {_short(model['weights_sha256'])}" if model.get("weights_sha256") else None
        pin = pin or (f"revision {_short(model['revision'])}" if model.get("revision") else "weights not pinned")
        parts.append(f"{role} `{model['ref']}` {pin}, tokenizer {_short(model.get('tokenizer_sha256'))}")
    data = identity["data"]
    train = data.get("train", {})
    parts.append(
        f"train {train.get('task')}/{train.get('split')} {_short(train.get('sha256'))} ({train.get('prompts')} prompts)"
    )
    evaluation = data.get("eval", {})
    tasks = ", ".join(f"{t} {_short(v.get('sha256'))}" for t, v in sorted(evaluation.get("tasks", {}).items()))
    parts.append(f"eval {tasks}, {_limit(evaluation.get('limit'))}")
    return "Pinned: " + "; ".join(parts) + "."


def _build_notes(pair: str, identities: dict[str, dict[str, Any]]) -> str:
    """The note shown when one pair name has runs of several builds: what differs between them."""
    flat = {build: _flat(identity) for build, identity in identities.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differ = [k for k in keys if len({f.get(k) for f in flat.values()}) > 1 and k != "unpinned"]
    unpinned = [b for b, identity in identities.items() if identity.get("unpinned")]
    what = ", ".join(differ) if not unpinned else "pinning (schema-1 records name no weights or data)"
    return (
        f"Pair `{pair}` has runs of {len(identities)} builds ({', '.join(sorted(identities))}) that differ in {what}: "
        "they are shown as separate tables and never averaged, compared or superseded across builds."
    )


DIRTY_MARK = "†"

DIRTY_NOTE = (
    f"{DIRTY_MARK}: at least one of the row's records was made from code with uncommitted changes (its "
    "`environment.code_version` ends in +dirty): the commit it names is not the whole code that made it."
)


def from_uncommitted_code(row: Row) -> bool:
    return any(str(run.environment.get("code_version") or "").endswith("+dirty") for run in row.group.runs)


def by_score(rows: list[Row]) -> list[Row]:
    """Rows by mean score over the benchmarks, best first (rows without one last), ties by label."""

    def key(row: Row) -> tuple[bool, float, str]:
        score = row.average if row.average is not None else next(iter(row.scores.values()), None)
        return score is None, -(score.mean if score is not None else 0.0), row.label

    return sorted(rows, key=key)


def build_tables(records: list[RunRecord], baseline: str | None = None) -> list[PairTable]:
    """One table per build of each pair, rows best first (`by_score`); cost ratios against `baseline` where a
    table has it."""
    groups = group_runs(records)
    costs = {cost: charged(records, cost) for cost in COSTS}
    if baseline is not None and not any(baseline in (g.label, g.method) for g in groups):
        raise unknown_choice("baseline method", baseline, {g.label for g in groups} | {g.method for g in groups})
    builds: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        experiment = record.experiment()
        builds[record.pair].setdefault(build_key(experiment), experiment.build)
    tables = []
    for pair in sorted(builds):
        several = sum("trial" not in identity for identity in builds[pair].values()) > 1
        for build in sorted(builds[pair], key=lambda b: ("trial" in builds[pair][b], b)):  # trial tables last
            identity = builds[pair][build]
            of_build = {r.run_id for g in groups if (g.pair, g.build) == (pair, build) for r in g.runs}
            runs = [r for r in records if r.run_id in of_build]
            benchmarks = sorted({b for r in runs for b in r.scores})
            references = {}
            for kind, label in (("teacher_scores", TEACHER), ("student_before_scores", BEFORE)):
                if (found := _reference(runs, kind, label, benchmarks)) is not None:
                    references[label] = found
            pinned = not identity.get("unpinned")
            tag = f" [build {build}]" if pinned else f" [unpinned {build}]"
            if "trial" in identity:
                tag = f" [trial {build}: {describe_trial(identity['trial'])}]"
            table = PairTable(
                pair=pair,
                build=build,
                title=pair + (tag if several or "trial" in identity else ""),
                pinned=pinned,
                identity=identity,
                teacher=runs[0].teacher,
                student=runs[0].student,
                benchmarks=benchmarks,
                phases=ordered_phases(name for r in runs for name in r.cost.phases),
                references=[references[k] for k in (TEACHER, BEFORE) if k in references],
                rows=by_score(
                    [_row(g, benchmarks, costs, references) for g in groups if (g.pair, g.build) == (pair, build)]
                ),
            )
            table.notes.append(identity_note(identity))
            if several:
                table.notes.append(_build_notes(pair, builds[pair]))
            table.notes += [f"{r.label}: {r.note}" for r in table.references if r.note]
            if table.truncation:
                table.notes.append(TRUNCATION_NOTE)
            if any(from_uncommitted_code(row) for row in table.rows):
                table.notes.append(DIRTY_NOTE)
            if table.tuning:
                table.notes.append(TUNING_NOTE)
            table_groups = [row.group for row in table.rows]
            if baseline is not None and any(baseline in (g.label, g.method) for g in table_groups):
                base = resolve_method(table_groups, pair, baseline, kind="baseline method")
                base_row = next(row for row in table.rows if row.group is base)
                table.baseline = base.label
                for row in table.rows:
                    row.cheaper = _ratio(base_row.total_hours, row.total_hours)
                    row.cheaper_standalone = _ratio(base_row.standalone_hours, row.standalone_hours)
            tables.append(table)
    return tables


def leaderboard(results_dir: str | Path, *, baseline: str | None = None) -> Leaderboard:
    """Load, validate and tabulate the records under `results_dir`; problems list the files skipped."""
    records, problems = usable_records(Path(results_dir))
    return Leaderboard(build_tables(records, baseline), problems, baseline, len(records))


TRUNCATION_NOTE = (
    "truncated: % of the benchmark's completions that hit their token budget instead of ending (EOS or a stop "
    "string), mean over the runs that count it, no interval; – for records made before it was counted."
)

TUNING_NOTE = (
    "tuned: the setting `harness tune` chose on the pair's dev split of the training prompts (never the test "
    "problems), the grid's size per key and the trial budget every method gets; – for rows run untuned."
)

"""The leaderboard: run records -> tables (one per pair build) of rows (method settings, over seeds) -> md, csv,
html, LaTeX and plots.

It is a pure function of the records under `<results_dir>/runs/` (and, for the loss plots, the training logs they
point to): the same files give byte-identical outputs
(no build time, sorted rows, fixed number formats, deterministic PNGs). A bad record is reported and skipped,
never deleted; the build takes no lock.

Tables. A table holds the runs of one *build* of a pair: same pair name, same models (weights or hub revision,
tokenizers: `RunRecord.models`), same data (train and eval splits' hashes) and evaluation settings (doc
limit, chat template: `RunRecord.data`). Runs of different builds are never averaged, compared or superseded
across builds; when a pair name has several, each table's title names its build (`tiny [build 3f2a1c]`) and a
note says what differs. Schema-1 records pin nothing beyond the model references and the doc limit: they form
tables of their own, marked unpinned. Trial runs (a budget other than the pair's, `training.trial`: see harness.trial)
form tables of their own after the pair's main ones (`tiny [trial 3f2a1c: limit 20]`); `compare --pair tiny` picks
the main build.

Rows. Within a table, runs are grouped by method and a short key of their method parameters and training
config (seed excluded), so runs with different settings are never averaged together; when a table has
several settings of one method, the row label names the settings that differ, e.g. `hybrid (alpha=0.3)`.
Reference rows: the teacher and the student before distillation, each averaged over its distinct
evaluations in the table (all made with the table's settings; evaluations of different sizes are never
averaged).

Scores are the primary metric of each benchmark in %, the mean over the row's seeds with a 95% t interval over
the seeds' scores (harness.stats); a row with one seed has no interval. Gap recovered = (after - before) /
(teacher - before) on the mean over the benchmarks, per seed, with its t interval (the reference rows' means taken
as exact). Detectable: the minimum detectable difference (harness.stats) between the row and another with as many
seeds and the same spread, on the mean over benchmarks (or the one benchmark): the smallest true difference an
unpaired two-sided t test at alpha 0.05 finds with power 0.8, the row's seed SD taken as the true one.

Tuned. A run whose settings `harness tune` chose records how (`train_config.tuning`: grid, budget, choice, dev
score); such rows are rows of their own (their settings differ) and, in tables that have one, a `tuned` column gives
the choice, the grid and the trial budget ("–": untuned).

Truncated. Where a record's scores report it (the `truncated` metric, from the generators' finish reasons), the share
of each benchmark's completions that hit their token budget, in %: the mean over the row's runs (or the reference's
evaluations) that report it, without an interval. The columns appear only in tables (and csv / LaTeX outputs) with
such a record, so records made before it was counted render as they did, and a row without it shows "–".

Cost. Device-hours (wall seconds x devices / 3600) and estimated FLOPs per run, each a mean over the row's
seeds. A phase served from a cache (teacher supervision) carries the cost of the one build that filled the
cache entry, identified by its `cache_key`. The leaderboard charges that build once: it is split equally among
all runs in the results dir that used the entry (the run that built it and every run that reused it), so
the amortised totals of all runs add up to what was really spent. The build cost is the builder's
measured phase when its record is present, else the cost carried by the reusing runs. "Standalone" charges
each run the full build cost, i.e. what the run would cost alone; it does not depend on which other runs
exist. The cost ratio against a baseline ("x cheaper") is given for both device-hour totals.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cache_key
from harness.leaderboard_html import Cell, Section, render_html
from harness.plots import LossCurves, pair_plots
from harness.records import RunRecord, describe_trial, load_records
from harness.stats import mean_interval, two_row_detectable
from harness.train_curves import loss_curve
from kdcore.errors import HarnessError, unknown_choice
from kdcore.io import atomic_write_bytes, atomic_write_text
from kdcore.scores import TRUNCATED, TaskScore

log = logging.getLogger(__name__)

PHASE_ORDER = ("supervise", "train", "evaluate")
PER_RUN_KEYS = ("seed",)  # train_config keys that vary between the seeds of one setting
PLOTS_DIR = "plots"
MISSING = "–"
BUILD_CHARS = 6
TEACHER, BEFORE = "teacher (reference)", "student before distillation (reference)"
COSTS = ("device_hours", "flops")
TUNING = "tuning"  # the train_config key `harness tune`'s choice is recorded under


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
class Group:
    """The runs of one setting of a method on one build of a pair (its seeds)."""

    pair: str
    method: str
    key: str
    settings: dict[str, Any]
    runs: list[RunRecord]
    label: str = ""
    build: str = ""

    @property
    def trial(self) -> bool:
        """Runs of a budget other than their pair's (harness.trial): never in a build's main table."""
        return any(run.training.get("trial") for run in self.runs)


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
        chosen = ", ".join(f"{k}={_show(v)}" for k, v in sorted(tuning.get("chosen", {}).items()))
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


# ---------------------------------------------------------------- records -> builds, groups and charged cost


def validate(record: RunRecord) -> None:
    """Raise ValueError when a record lacks what the leaderboard needs beyond what every record has (its
    types and ranges are checked on load, harness.records.check_values)."""
    if record.pinned and set(record.models) != {"teacher", "student"}:
        raise ValueError("models must name the teacher and the student")


def run_identity(record: RunRecord) -> dict[str, Any]:
    """What a run compared: pair name, models and data as pinned by a schema-2 record; for a schema-1 record,
    only what it says (model references and the doc limit), marked unpinned."""
    trial = {"trial": record.training["trial"]} if record.training.get("trial") else {}
    if record.pinned:
        return {"pair": record.pair, "models": record.models, "data": record.data, **trial}
    limit = record.train_config.get("limit")
    return {"pair": record.pair, "unpinned": True, "teacher": record.teacher, "student": record.student, "limit": limit}


def build_key(record: RunRecord) -> str:
    """A short hash of the run's identity: equal for runs of one build of a pair."""
    return cache_key(run_identity(record))[:BUILD_CHARS]


def usable_records(results_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Records that load and validate, sorted by run id, and one problem line per file skipped.

    A run repeated with the same build, method, settings and seed replaces the earlier one (latest `created`
    wins, then the larger run id), so a re-run never counts as an extra seed; runs of different builds never
    replace one another.
    """
    loaded, problems = load_records(results_dir)
    latest: dict[tuple[str, str, str, str, int], RunRecord] = {}
    for record in loaded:
        try:
            validate(record)
        except ValueError as err:
            problems.append(f"{record.run_id}.json: skipped ({err})")
            continue
        slot = (record.pair, build_key(record), record.method, settings_key(record), record.seed)
        have = latest.get(slot)
        if have is not None and (have.created, have.run_id) >= (record.created, record.run_id):
            record, have = have, record
        if have is not None:
            problems.append(f"{have.run_id}.json: skipped (superseded by {record.run_id}.json, same build and seed)")
        latest[slot] = record
    return sorted(latest.values(), key=lambda r: r.run_id), sorted(problems)


def charged(records: Iterable[RunRecord], cost: str = "device_hours") -> dict[str, dict[str, float]]:
    """`cost` (device_hours or flops) charged to each run per phase, a cached phase's build split among the runs
    that used it."""
    records = list(records)
    built: dict[str, float] = {}
    carried: dict[str, float] = {}
    users: Counter[str] = Counter()
    for record in records:
        for phase in record.cost["phases"].values():
            if key := phase.get("cache_key"):
                users[key] += 1
                (carried if phase.get("reused") else built).setdefault(key, float(phase.get(cost, 0.0)))
    out = {}
    for record in records:
        out[record.run_id] = {
            name: (built.get(key, carried.get(key, 0.0)) / users[key])
            if (key := phase.get("cache_key"))
            else float(phase.get(cost, 0.0))
            for name, phase in record.cost["phases"].items()
        }
    return out


def charged_hours(records: Iterable[RunRecord]) -> dict[str, dict[str, float]]:
    """Device-hours charged to each run per phase (see `charged`)."""
    return charged(records, "device_hours")


def used_teacher_signal(record: RunRecord) -> str | None:
    """The teacher signal the run's method used (its data plan's), which records written before 2026-12-02 did not
    say: they carry the command line's default `topk` for every method (sft, hard and the online-only methods too).
    None when the record has no signal; the recorded value when the method or its parameters are unknown here."""
    from trainers.objectives import load_method

    signal = record.train_config.get("teacher_signal")
    if signal is None:
        return None
    try:
        return load_method(record.method, **record.method_params).data_plan(signal).teacher_signal
    except HarnessError:
        return signal


def _settings(record: RunRecord) -> dict[str, Any]:
    train = {k: v for k, v in record.train_config.items() if k not in PER_RUN_KEYS}
    if "teacher_signal" in train:
        train["teacher_signal"] = used_teacher_signal(record)
    return {"method_params": record.method_params, "train_config": train}


def settings_key(record: RunRecord) -> str:
    """A short hash of the run's method parameters and training config, seed excluded."""
    return cache_key(_settings(record))[:8]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _label(group: Group, siblings: list[Group]) -> str:
    """The method name, plus the settings that differ from its siblings (same build and method)."""
    if len(siblings) == 1:
        return group.method
    parts = []
    for section in ("method_params", "train_config"):
        keys = sorted({k for g in siblings for k in g.settings[section]})
        for k in (k for k in keys if k != TUNING):  # tuned rows say so in their own column
            values = {_show(g.settings[section].get(k)) for g in siblings}
            if len(values) > 1 and k in group.settings[section]:
                parts.append(f"{k}={_show(group.settings[section][k])}")
    return f"{group.method} ({', '.join(parts)})"


def group_runs(records: Iterable[RunRecord]) -> list[Group]:
    """Group runs by (pair, build, method, settings key), labelled, sorted by pair, build then label."""
    groups: dict[tuple[str, str, str, str], Group] = {}
    for record in records:
        key, build = settings_key(record), build_key(record)
        group = groups.setdefault(
            (record.pair, build, record.method, key),
            Group(record.pair, record.method, key, _settings(record), [], build=build),
        )
        group.runs.append(record)
    siblings: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for group in groups.values():
        siblings[(group.pair, group.build, group.method)].append(group)
    for group in groups.values():
        group.label = _label(group, siblings[(group.pair, group.build, group.method)])
    return sorted(groups.values(), key=lambda g: (g.pair, g.build, g.label, g.key))


def build_groups(groups: list[Group], pair: str) -> list[Group]:
    """The groups of one build of a pair: `pair` is a pair name with runs of one build, or `<pair>@<build>`."""
    pair_name, _, build = pair.partition("@")
    of_pair = [g for g in groups if g.pair == pair_name]
    if not of_pair:
        raise unknown_choice("pair", pair_name, {g.pair for g in groups})
    builds = sorted({g.build for g in of_pair})
    if build:
        if build not in builds:
            raise unknown_choice(f"build of pair {pair_name!r}", build, builds)
        return [g for g in of_pair if g.build == build]
    main = sorted({g.build for g in of_pair if not g.trial})
    if len(main) == 1:  # trial runs are compared only when their build is named
        return [g for g in of_pair if g.build == main[0]]
    if len(builds) > 1:
        choices = ", ".join(f"{pair_name}@{b}" for b in builds)
        raise HarnessError(
            f"pair {pair_name!r} has runs of {len(builds)} builds (never compared across); pick one: {choices}"
        )
    return of_pair


def resolve_method(groups: list[Group], pair: str, name: str, *, kind: str = "method") -> Group:
    """The group of `pair` whose label is `name`, or whose method is `name` when that is unambiguous.

    `pair` is a pair name, or `<pair>@<build>` to pick one build where the pair has runs of several."""
    of_pair = build_groups(groups, pair)
    exact = [g for g in of_pair if g.label == name] or [g for g in of_pair if g.method == name]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        raise unknown_choice(kind, name, {g.label for g in of_pair})
    labels = ", ".join(repr(g.label) for g in exact)
    raise HarnessError(f"{kind} {name!r} has several settings on pair {pair!r}; pick one of: {labels}")


# ---------------------------------------------------------------- recorded scores -> estimates


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


# ---------------------------------------------------------------- groups -> rows and tables


def _ordered_phases(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [p for p in PHASE_ORDER if p in names] + sorted(names - set(PHASE_ORDER))


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
    phases = {name for r in runs for name in r.cost["phases"]}
    devices = sorted({p.get("device", "?") for r in runs for p in r.cost["phases"].values()})
    return Row(
        group=group,
        scores=scores,
        average=average,
        gap=gap,
        phase_hours={p: float(np.mean([hours[r.run_id].get(p, 0.0) for r in runs])) for p in phases},
        total_hours=float(np.mean([sum(hours[r.run_id].values()) for r in runs])),
        standalone_hours=float(np.mean([sum(p["device_hours"] for p in r.cost["phases"].values()) for r in runs])),
        total_flops=float(np.mean([sum(flops[r.run_id].values()) for r in runs])),
        standalone_flops=float(np.mean([sum(p.get("flops", 0.0) for p in r.cost["phases"].values()) for r in runs])),
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
    return {prefix: _show(value)}


def _short(value: Any) -> str:
    text = _show(value)
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
        builds[record.pair].setdefault(build_key(record), run_identity(record))
    tables = []
    for pair in sorted(builds):
        several = sum("trial" not in identity for identity in builds[pair].values()) > 1
        for build in sorted(builds[pair], key=lambda b: ("trial" in builds[pair][b], b)):  # trial tables last
            identity = builds[pair][build]
            runs = [r for r in records if r.pair == pair and build_key(r) == build]
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
                phases=_ordered_phases(name for r in runs for name in r.cost["phases"]),
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


# ---------------------------------------------------------------- formatting


def fmt_score(estimate: Estimate | None, seeds: int | None = None, digits: int = 1) -> str:
    """`45.2 [43.1, 47.3]`, `45.2` without an interval, with `(n=k)` when fewer values than the row has seeds."""
    if estimate is None:
        return MISSING
    text = f"{estimate.mean:.{digits}f}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"
    return text + (f" (n={estimate.n})" if seeds is not None and estimate.n < seeds else "")


def fmt_gap(estimate: Estimate | None) -> str:
    """Gap recovered as a fraction with its interval: `0.52 [0.45, 0.60]`."""
    return fmt_score(estimate, digits=2)


def fmt_detectable(detectable: float | None) -> str:
    """The minimum detectable difference in pp (one decimal); – for a row with one seed."""
    return MISSING if detectable is None else f"{detectable:.1f}"


def fmt_hours(hours: float | None) -> str:
    """Device-hours to 3 significant digits, never in exponent form."""
    if hours is None:
        return MISSING
    if hours == 0:
        return "0"
    decimals = min(6, max(0, 2 - math.floor(math.log10(abs(hours)))))
    return f"{hours:.{decimals}f}"


def fmt_flops(flops: float | None) -> str:
    """FLOPs to 3 significant digits in exponent form: `4.11e+11`."""
    return MISSING if flops is None else ("0" if flops == 0 else f"{flops:.2e}")


def fmt_ratio(ratio: float | None) -> str:
    return MISSING if ratio is None else f"{ratio:.2f}x"


def _num(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def _mean(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.mean


def per_seed(row: Row, benchmarks: list[str]) -> str:
    """Each run's mean score over the benchmarks (%), in seed order: 's0 81.2 · s1 77.0'."""
    runs = sorted(row.group.runs, key=lambda r: r.seed)
    parts = []
    for run in runs:
        values = [run.scores[b].score for b in benchmarks if b in run.scores]
        parts.append(f"s{run.seed} {100 * float(np.mean(values)):.1f}" if values else f"s{run.seed} –")
    return " · ".join(parts)


def display_table(table: PairTable) -> tuple[list[str], list[list[Cell]], list[list[Cell]]]:
    """Headers, student rows and the reference rows of one table, as shown in md and html."""
    average = len(table.benchmarks) > 1
    headers = ["method", "seeds", *table.benchmarks]
    headers += ["average"] if average else []
    headers += ["per seed"]
    headers += ["gap recovered", "detectable (pp)"]
    headers += ["tuned"] if table.tuning else []
    truncation = table.benchmarks if table.truncation else []
    headers += [f"{b} truncated" for b in truncation]
    headers += [f"{p} dev-h" for p in table.phases]
    headers += ["total dev-h", "standalone dev-h", "total FLOPs", "standalone FLOPs"]
    if table.baseline:
        headers += [f"x cheaper than {table.baseline}", "x cheaper (standalone)"]
    headers += ["device"]
    rows = []
    for row in table.rows:
        shown = f"{row.label} {DIRTY_MARK}" if from_uncommitted_code(row) else row.label
        cells = [Cell(shown, row.label), Cell(str(row.seeds), row.seeds)]
        cells += [Cell(fmt_score(row.scores.get(b), row.seeds), _mean(row.scores.get(b))) for b in table.benchmarks]
        cells += [Cell(fmt_score(row.average, row.seeds), _mean(row.average))] if average else []
        cells += [Cell(per_seed(row, table.benchmarks))]
        cells += [Cell(fmt_gap(row.gap), _mean(row.gap))]
        cells += [Cell(fmt_detectable(row.detectable), row.detectable)]
        cells += [Cell(row.tuned, row.tuned)] if table.tuning else []
        cells += [Cell(fmt_score(row.truncated.get(b), row.seeds), _mean(row.truncated.get(b))) for b in truncation]
        cells += [Cell(fmt_hours(row.phase_hours.get(p)), row.phase_hours.get(p)) for p in table.phases]
        cells += [Cell(fmt_hours(row.total_hours), row.total_hours)]
        cells += [Cell(fmt_hours(row.standalone_hours), row.standalone_hours)]
        cells += [Cell(fmt_flops(row.total_flops), row.total_flops)]
        cells += [Cell(fmt_flops(row.standalone_flops), row.standalone_flops)]
        if table.baseline:
            cells += [Cell(fmt_ratio(row.cheaper), row.cheaper)]
            cells += [Cell(fmt_ratio(row.cheaper_standalone), row.cheaper_standalone)]
        cells += [Cell(row.devices, row.devices)]
        rows.append(cells)
    references = []
    for ref in table.references:
        cells = [
            Cell(ref.label),
            Cell(f"{ref.evaluations} eval" if ref.evaluations == 1 else f"{ref.evaluations} evals"),
        ]
        cells += [Cell(fmt_score(ref.scores.get(b))) for b in table.benchmarks]
        cells += [Cell(fmt_score(ref.average))] if average else []
        cells += [Cell("")]  # per seed
        if truncation:
            cells += [Cell("") for _ in range(3 if table.tuning else 2)]  # gap recovered, detectable, tuned
            cells += [Cell(fmt_score(ref.truncated.get(b))) for b in truncation]
        cells += [Cell("") for _ in headers[len(cells) :]]
        references.append(cells)
    return headers, rows, references


COST_NOTE = (
    "Scores: % of each benchmark's primary metric, mean over seeds with a 95% t interval [low, high] over the "
    "seeds' scores (on the benchmark's fixed problems); a row with one seed shows no interval. "
    "Gap recovered: (after − before) / (teacher − before) on the mean over benchmarks, per seed, from the reference "
    "rows (taken as exact), with its t interval. "
    "detectable (pp): the minimum detectable difference, the smallest true difference between this row and one with "
    "as many seeds and the same seed spread that a two-sided t test (alpha 0.05, unpaired, df 2(n−1)) finds with "
    "power 0.8, from the noncentral t and the row's observed seed SD, on the mean over benchmarks (or the one "
    "benchmark); – with one seed. `harness compare` gives the paired one. "
    "dev-h: device-hours (wall seconds x devices / 3600), mean per run; FLOPs: estimated (6 x parameters x tokens "
    "trained, 2 x parameters x tokens generated or scored), mean per run. On a shared machine wall-clock cost is "
    "noise: compute-matched comparisons use FLOPs. "
    "A cached phase (teacher supervision) is built once and its cost split equally among the runs that used it: "
    "*total* includes that share, so the totals of all runs add up to what was spent; "
    "*standalone* charges each run the whole build. Reference rows (teacher, student before distillation) are "
    "cached evaluations with the table's settings; they are not charged."
)
TRUNCATION_NOTE = (
    "truncated: % of the benchmark's completions that hit their token budget instead of ending (EOS or a stop "
    "string), mean over the runs that count it, no interval; – for records made before it was counted."
)


TUNING_NOTE = (
    "tuned: the setting `harness tune` chose on the pair's dev split of the training prompts (never the test "
    "problems), the grid's size per key and the trial budget every method gets; – for rows run untuned."
)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _intro(board: Leaderboard) -> str:
    return f"Built by `harness leaderboard` from {board.n_records} run record(s) in `runs/`; do not edit by hand."


def _heading(table: PairTable) -> str:
    return f"{table.title}: `{table.teacher}` → `{table.student}`"


def render_markdown(board: Leaderboard) -> str:
    lines = ["# Leaderboard", "", _intro(board), "", COST_NOTE, ""]
    if not board.tables:
        lines += ["No run records yet.", ""]
    for table in board.tables:
        headers, rows, references = display_table(table)
        lines += [f"## {_heading(table)}", ""]
        lines += [line for note in table.notes for line in (_md_escape(note), "")]
        lines.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 2) + [":---"]) + "|")
        for cells in [*rows, *references]:
            lines.append("| " + " | ".join(_md_escape(c.text) for c in cells) + " |")
        lines.append("")
    if board.problems:
        lines += ["## Skipped records", ""] + [f"- {_md_escape(p)}" for p in board.problems] + [""]
    return "\n".join(lines)


def _estimate_cells(estimate: Estimate | None, spec: str = ".4f") -> list[str]:
    if estimate is None:
        return ["", "", "", ""]
    return [_num(estimate.mean, spec), _num(estimate.low, spec), _num(estimate.high, spec), str(estimate.n)]


def _rate_cells(rates: dict[str, Estimate], benchmarks: list[str]) -> list[str]:
    """`<benchmark>_truncated_mean` and `_n` cells for each of `benchmarks` (blank where there is no rate)."""
    cells = []
    for b in benchmarks:
        rate = rates.get(b)
        cells += ["", ""] if rate is None else [_num(rate.mean, ".4f"), str(rate.n)]
    return cells


def render_csv(board: Leaderboard) -> str:
    """One flat table over all builds: a row per group plus the reference rows of each; scores in %."""
    benchmarks = sorted({b for t in board.tables for b in t.benchmarks})
    phases = _ordered_phases(p for t in board.tables for p in t.phases)
    header = ["pair", "build", "pinned", "role", "method", "label", "settings_key", "seeds", "device"]
    for b in [*benchmarks, "average", "gap_recovered"]:
        header += [f"{b}_mean", f"{b}_low", f"{b}_high", f"{b}_n"]
    header += ["detectable_pp"]
    truncation = benchmarks if any(t.truncation for t in board.tables) else []
    header += [f"{b}_truncated_{part}" for b in truncation for part in ("mean", "n")]
    header += [f"{p}_device_hours" for p in phases]
    header += ["total_device_hours", "standalone_device_hours", "total_flops", "standalone_flops"]
    header += ["baseline", "cheaper_x", "cheaper_standalone_x", "method_params", "train_config"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for table in board.tables:
        head = [table.pair, table.build, str(table.pinned).lower()]
        for row in table.rows:
            line = [*head, "student", row.group.method, row.label, row.group.key, row.seeds, row.devices]
            for b in benchmarks:
                line += _estimate_cells(row.scores.get(b))
            line += _estimate_cells(row.average) + _estimate_cells(row.gap) + [_num(row.detectable, ".4f")]
            line += _rate_cells(row.truncated, truncation)
            line += [_num(row.phase_hours[p]) if p in row.phase_hours else "" for p in phases]
            line += [
                _num(row.total_hours),
                _num(row.standalone_hours),
                _num(row.total_flops),
                _num(row.standalone_flops),
            ]
            line += [table.baseline or "", _num(row.cheaper, ".4f"), _num(row.cheaper_standalone, ".4f")]
            settings = row.group.settings
            line += [json.dumps(settings["method_params"], sort_keys=True)]
            line += [json.dumps(settings["train_config"], sort_keys=True)]
            writer.writerow(line)
        for ref in table.references:
            role = "teacher" if ref.label == TEACHER else "student_before"
            model = table.teacher if role == "teacher" else table.student
            line = [*head, role, "", model, "", ref.evaluations, ""]
            for b in benchmarks:
                line += _estimate_cells(ref.scores.get(b))
            line += _estimate_cells(ref.average)
            line += [*_estimate_cells(None), "", *_rate_cells(ref.truncated, truncation)] if truncation else []
            writer.writerow(line + [""] * (len(header) - len(line)))
    return out.getvalue()


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: LATEX_SPECIALS[m.group()], text)


def _latex_score(estimate: Estimate | None, bold: bool, digits: int = 1) -> str:
    if estimate is None:
        return "--"
    body = f"{estimate.mean:.{digits}f}"
    body = f"\\mathbf{{{body}}}" if bold else body
    if estimate.low is not None and estimate.high is not None:
        body += f"\\,{{\\scriptstyle[{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]}}"
    return f"${body}$"


def render_latex(board: Leaderboard) -> str:
    """A booktabs table over all builds; the best student score per benchmark within each table in bold."""
    benchmarks = sorted({b for t in board.tables for b in t.benchmarks})
    with_ratio = board.baseline is not None
    truncation = benchmarks if any(t.truncation for t in board.tables) else []
    head = ["Pair", "Method", "Seeds", *(latex_escape(b) for b in benchmarks), "Gap rec."]
    head += [latex_escape(f"{b} truncated %") for b in truncation] + ["Dev-h", "FLOPs"]
    head += [f"$\\times$ cheaper than {latex_escape(board.baseline)}"] if with_ratio else []
    spec = "ll" + "r" * (len(head) - 2)
    lines = [
        "% Generated by `harness leaderboard --latex`; needs \\usepackage{booktabs}.",
        "\\begin{tabular}{" + spec + "}",
        "\\toprule",
        " & ".join(head) + " \\\\",
        "\\midrule",
    ]
    for i, table in enumerate(board.tables):
        if i:
            lines.append("\\midrule")
        best = {b: max((r.scores[b].mean for r in table.rows if b in r.scores), default=None) for b in benchmarks}
        for row in table.rows:
            cells = [latex_escape(table.title), latex_escape(row.label), str(row.seeds)]
            cells += [
                _latex_score(row.scores.get(b), row.scores.get(b) is not None and row.scores[b].mean == best[b])
                for b in benchmarks
            ]
            cells += [_latex_score(row.gap, False, 2)]
            cells += [_latex_score(row.truncated.get(b), False) for b in truncation]
            cells += [fmt_hours(row.total_hours), fmt_flops(row.total_flops)]
            cells += [fmt_ratio(row.cheaper).replace("x", "$\\times$")] if with_ratio else []
            lines.append(" & ".join(cells) + " \\\\")
        for ref in table.references:
            name = "teacher" if ref.label == TEACHER else "student before"
            cells = [latex_escape(table.title), f"\\textit{{{name}}}", "--"]
            cells += [_latex_score(ref.scores.get(b), False) for b in benchmarks]
            cells += ["--", *(_latex_score(ref.truncated.get(b), False) for b in truncation), "--", "--"]
            cells += ["--"] if with_ratio else []
            lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def leaderboard_latex(results_dir: str | Path, *, baseline: str | None = None) -> str:
    """The leaderboard as a booktabs LaTeX tabular (best score per benchmark and table in bold)."""
    return render_latex(leaderboard(results_dir, baseline=baseline))


# ---------------------------------------------------------------- files


def table_loss_curves(table: PairTable, results_dir: Path) -> LossCurves:
    """Each row's runs' training-loss curves, from the logs their records name, in seed order."""
    return {
        row.label: [
            loss_curve(results_dir / run.training["log"]) if run.training.get("log") else []
            for run in sorted(row.group.runs, key=lambda r: r.seed)
        ]
        for row in table.rows
    }


def build_leaderboard(results_dir: str | Path, *, baseline: str | None = None) -> list[Path]:
    """Write leaderboard.md, .csv, .html and the plots (PNG, in `plots/`) under `results_dir`; return the paths.

    Records that fail to load or validate are logged as warnings, listed in the md and html, and skipped.
    Plot files of tables no longer on the board are removed; nothing else is.
    """
    results_dir = Path(results_dir)
    board = leaderboard(results_dir, baseline=baseline)
    for problem in board.problems:
        log.warning("%s", problem)
    plots: dict[str, bytes] = {}
    sections = []
    for table in board.tables:
        dev_scores = {row.label: [run.training.get("evals", []) for run in row.group.runs] for row in table.rows}
        drawn = pair_plots(table, table_loss_curves(table, results_dir), dev_scores)
        plots.update(drawn)
        headers, rows, references = display_table(table)
        title = _heading(table).replace("`", "")
        notes = [note.replace("`", "") for note in table.notes]
        costs_from = next(i for i, h in enumerate(headers) if h.endswith("dev-h"))
        sections.append(Section(title, headers, rows, references, [*drawn], notes, costs_from))
    paths = [
        atomic_write_text(results_dir / "leaderboard.md", render_markdown(board)),
        atomic_write_text(results_dir / "leaderboard.csv", render_csv(board)),
        atomic_write_text(
            results_dir / "leaderboard.html",
            render_html(sections, COST_NOTE.replace("*", ""), board.problems, plots, _intro(board).replace("`", "")),
        ),
    ]
    plots_dir = results_dir / PLOTS_DIR
    paths += [atomic_write_bytes(plots_dir / name, data) for name, data in plots.items()]
    if plots_dir.is_dir():
        for stale in sorted(plots_dir.glob("*.png")):
            if stale.name not in plots:
                stale.unlink()
    return paths

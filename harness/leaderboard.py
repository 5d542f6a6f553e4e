"""The leaderboard: run records -> rows (pair x method, grouped over seeds) -> md, csv, html, LaTeX and plots.

It is a pure function of the records under `<results_dir>/runs/`: the same records give byte-identical files
(no build time, sorted rows, fixed number formats, deterministic PNGs). A bad record is reported and skipped,
never deleted; the build takes no lock.

Rows. Runs are grouped by pair, method and a short key of their method parameters and training config (seed
excluded), so runs with different settings are never averaged together; when a pair has several settings of
one method, the row label names the settings that differ, e.g. `hybrid (alpha=0.3)`.

Scores are the primary metric of each benchmark in %, mean ± sample std over the group's seeds.

Cost. Device-hours (wall seconds x devices / 3600) per phase, as a mean per run over the group's seeds.
A phase served from a cache (teacher supervision) carries the cost of the one build that filled the cache
entry, identified by its `cache_key`. The leaderboard charges that build once: it is split equally among
all runs in the results dir that used the entry (the run that built it and every run that reused it), so
the amortised totals of all runs add up to the device-hours really spent. The build cost is the builder's
measured phase when its record is present, else the cost carried by the reusing runs. "Standalone" charges
each run the full build cost, i.e. what the run would cost alone; it does not depend on which other runs
exist. The cost ratio against a baseline ("x cheaper") is given for both totals.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cache_key
from harness.leaderboard_html import Cell, Section, render_html
from harness.plots import pair_plots
from harness.records import RunRecord, load_records
from kdcore.errors import HarnessError, unknown_choice
from kdcore.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PHASE_ORDER = ("supervise", "train", "evaluate")
PER_RUN_KEYS = ("seed",)  # train_config keys that vary between the seeds of one setting
PLOTS_DIR = "plots"
MISSING = "–"


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (None for a single value) and count of a list of values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        array = np.asarray(values, dtype=float)
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None, len(array))


@dataclass
class Group:
    """The runs of one setting of a method on a pair (its seeds)."""

    pair: str
    method: str
    key: str
    settings: dict[str, Any]
    runs: list[RunRecord]
    label: str = ""


@dataclass
class Row:
    """One leaderboard row: a group's scores (%) and mean cost per run (device-hours)."""

    group: Group
    scores: dict[str, Stat]
    average: Stat | None  # macro average over the pair's benchmarks, from runs that have them all
    phase_hours: dict[str, float]
    total_hours: float  # amortised
    standalone_hours: float
    devices: str
    cheaper: float | None = None
    cheaper_standalone: float | None = None

    @property
    def label(self) -> str:
        return self.group.label

    @property
    def seeds(self) -> int:
        return len(self.group.runs)


@dataclass
class PairTable:
    """The rows of one pair, with its benchmarks, phases and the teacher's reference scores."""

    pair: str
    teacher: str
    student: str
    benchmarks: list[str]
    phases: list[str]
    teacher_scores: dict[str, Stat]
    teacher_average: float | None
    rows: list[Row]
    baseline: str | None = None  # the label of the baseline row, when it exists in this pair


@dataclass
class Leaderboard:
    tables: list[PairTable]
    problems: list[str] = field(default_factory=list)
    baseline: str | None = None
    n_records: int = 0


# ---------------------------------------------------------------- records -> groups and charged cost


def validate(record: RunRecord) -> None:
    """Raise ValueError when a record's scores or cost are not what the leaderboard needs."""
    for name in ("pair", "method"):
        if not isinstance(getattr(record, name), str):
            raise ValueError(f"{name} is not a string")
    for name in ("method_params", "train_config"):
        if not isinstance(getattr(record, name), dict):
            raise ValueError(f"{name} is not an object")
    for kind in ("scores", "teacher_scores"):
        for task, score in getattr(record, kind).items():
            if not isinstance(score.score, (int, float)) or not math.isfinite(score.score):
                raise ValueError(f"{kind}[{task!r}].score is not a finite number")
    phases = record.cost.get("phases") if isinstance(record.cost, dict) else None
    if not isinstance(phases, dict):
        raise ValueError("cost.phases missing")
    for name, phase in phases.items():
        hours = phase.get("device_hours") if isinstance(phase, dict) else None
        if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours < 0:
            raise ValueError(f"cost.phases[{name!r}].device_hours is not a non-negative number")


def usable_records(results_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Records that load and validate, sorted by run id, and one problem line per file skipped.

    A run repeated with the same pair, method, settings and seed replaces the earlier one (latest `created`
    wins, then the larger run id), so a re-run never counts as an extra seed.
    """
    loaded, problems = load_records(results_dir)
    latest: dict[tuple[str, str, str, int], RunRecord] = {}
    for record in loaded:
        try:
            validate(record)
        except ValueError as err:
            problems.append(f"{record.run_id}.json: skipped ({err})")
            continue
        slot = (record.pair, record.method, settings_key(record), record.seed)
        have = latest.get(slot)
        if have is not None and (have.created, have.run_id) >= (record.created, record.run_id):
            record, have = have, record
        if have is not None:
            problems.append(f"{have.run_id}.json: skipped (superseded by {record.run_id}.json, same seed)")
        latest[slot] = record
    return sorted(latest.values(), key=lambda r: r.run_id), sorted(problems)


def charged_hours(records: Iterable[RunRecord]) -> dict[str, dict[str, float]]:
    """Device-hours charged to each run per phase, a cached phase's build split among the runs that used it."""
    records = list(records)
    built: dict[str, float] = {}
    carried: dict[str, float] = {}
    users: Counter[str] = Counter()
    for record in records:
        for phase in record.cost["phases"].values():
            if key := phase.get("cache_key"):
                users[key] += 1
                (carried if phase.get("reused") else built).setdefault(key, float(phase["device_hours"]))
    charged = {}
    for record in records:
        charged[record.run_id] = {
            name: (built.get(key, carried.get(key, 0.0)) / users[key])
            if (key := phase.get("cache_key"))
            else float(phase["device_hours"])
            for name, phase in record.cost["phases"].items()
        }
    return charged


def _settings(record: RunRecord) -> dict[str, Any]:
    train = {k: v for k, v in record.train_config.items() if k not in PER_RUN_KEYS}
    return {"method_params": record.method_params, "train_config": train}


def settings_key(record: RunRecord) -> str:
    """A short hash of the run's method parameters and training config, seed excluded."""
    return cache_key(_settings(record))[:8]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _label(group: Group, siblings: list[Group]) -> str:
    """The method name, plus the settings that differ from its siblings (same pair and method)."""
    if len(siblings) == 1:
        return group.method
    parts = []
    for section in ("method_params", "train_config"):
        keys = sorted({k for g in siblings for k in g.settings[section]})
        for k in keys:
            values = {_show(g.settings[section].get(k)) for g in siblings}
            if len(values) > 1 and k in group.settings[section]:
                parts.append(f"{k}={_show(group.settings[section][k])}")
    return f"{group.method} ({', '.join(parts)})"


def group_runs(records: Iterable[RunRecord]) -> list[Group]:
    """Group runs by (pair, method, settings key), labelled, sorted by pair then label."""
    groups: dict[tuple[str, str, str], Group] = {}
    for record in records:
        key = settings_key(record)
        group = groups.setdefault(
            (record.pair, record.method, key), Group(record.pair, record.method, key, _settings(record), [])
        )
        group.runs.append(record)
    siblings: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for group in groups.values():
        siblings[(group.pair, group.method)].append(group)
    for group in groups.values():
        group.label = _label(group, siblings[(group.pair, group.method)])
    return sorted(groups.values(), key=lambda g: (g.pair, g.label, g.key))


def resolve_method(groups: list[Group], pair: str, name: str, *, kind: str = "method") -> Group:
    """The group of `pair` whose label is `name`, or whose method is `name` when that is unambiguous."""
    of_pair = [g for g in groups if g.pair == pair]
    if not of_pair:
        raise unknown_choice("pair", pair, {g.pair for g in groups})
    exact = [g for g in of_pair if g.label == name] or [g for g in of_pair if g.method == name]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        raise unknown_choice(kind, name, {g.label for g in of_pair})
    labels = ", ".join(repr(g.label) for g in exact)
    raise HarnessError(f"{kind} {name!r} has several settings on pair {pair!r}; pick one of: {labels}")


# ---------------------------------------------------------------- groups -> rows and tables


def _ordered_phases(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [p for p in PHASE_ORDER if p in names] + sorted(names - set(PHASE_ORDER))


def _macro(scores: dict[str, Any], benchmarks: list[str]) -> float | None:
    if not benchmarks or any(b not in scores for b in benchmarks):
        return None
    return 100.0 * sum(scores[b].score for b in benchmarks) / len(benchmarks)


def _row(group: Group, benchmarks: list[str], charged: dict[str, dict[str, float]]) -> Row:
    runs = group.runs
    scores = {
        b: Stat.of([100.0 * r.scores[b].score for r in runs if b in r.scores])
        for b in benchmarks
        if any(b in r.scores for r in runs)
    }
    averages = [a for r in runs if (a := _macro(r.scores, benchmarks)) is not None]
    phases = {name for r in runs for name in r.cost["phases"]}
    devices = sorted({p.get("device", "?") for r in runs for p in r.cost["phases"].values()})
    return Row(
        group=group,
        scores=scores,
        average=Stat.of(averages) if averages else None,
        phase_hours={p: float(np.mean([charged[r.run_id].get(p, 0.0) for r in runs])) for p in phases},
        total_hours=float(np.mean([sum(charged[r.run_id].values()) for r in runs])),
        standalone_hours=float(np.mean([sum(p["device_hours"] for p in r.cost["phases"].values()) for r in runs])),
        devices=", ".join(devices),
    )


def _teacher_scores(runs: list[RunRecord], benchmarks: list[str]) -> dict[str, Stat]:
    """The teacher's score per benchmark, over its distinct evaluations (runs share one cached evaluation)."""
    out = {}
    for b in benchmarks:
        distinct = sorted({(r.teacher_scores[b].score, r.teacher_scores[b].n) for r in runs if b in r.teacher_scores})
        if distinct:
            out[b] = Stat.of([100.0 * score for score, _ in distinct])
    return out


def _ratio(base: float, value: float) -> float | None:
    return base / value if value > 0 else None


def build_tables(records: list[RunRecord], baseline: str | None = None) -> list[PairTable]:
    """One table per pair, rows sorted by label; cost ratios against `baseline` where the pair has it."""
    groups = group_runs(records)
    charged = charged_hours(records)
    pairs = sorted({g.pair for g in groups})
    if baseline is not None and not any(baseline in (g.label, g.method) for g in groups):
        raise unknown_choice("baseline method", baseline, {g.label for g in groups} | {g.method for g in groups})
    tables = []
    for pair in pairs:
        runs = [r for r in records if r.pair == pair]
        benchmarks = sorted({b for r in runs for b in r.scores})
        teacher = _teacher_scores(runs, benchmarks)
        table = PairTable(
            pair=pair,
            teacher=runs[0].teacher,
            student=runs[0].student,
            benchmarks=benchmarks,
            phases=_ordered_phases(name for r in runs for name in r.cost["phases"]),
            teacher_scores=teacher,
            teacher_average=(
                sum(teacher[b].mean for b in benchmarks) / len(benchmarks)
                if benchmarks and all(b in teacher for b in benchmarks)
                else None
            ),
            rows=[_row(g, benchmarks, charged) for g in groups if g.pair == pair],
        )
        if baseline is not None and any(baseline in (g.label, g.method) for g in groups if g.pair == pair):
            base = resolve_method(groups, pair, baseline, kind="baseline method")
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


def fmt_score(stat: Stat | None, seeds: int | None = None) -> str:
    """`45.2 ± 1.3`, `45.2` for one value, with `(n=k)` when fewer values than the row has seeds."""
    if stat is None:
        return MISSING
    text = f"{stat.mean:.1f}" if stat.std is None else f"{stat.mean:.1f} ± {stat.std:.1f}"
    return text + (f" (n={stat.n})" if seeds is not None and stat.n < seeds else "")


def fmt_hours(hours: float | None) -> str:
    """Device-hours to 3 significant digits, never in exponent form."""
    if hours is None:
        return MISSING
    if hours == 0:
        return "0"
    decimals = min(6, max(0, 2 - math.floor(math.log10(abs(hours)))))
    return f"{hours:.{decimals}f}"


def fmt_ratio(ratio: float | None) -> str:
    return MISSING if ratio is None else f"{ratio:.2f}x"


def _num(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def display_table(table: PairTable) -> tuple[list[str], list[list[Cell]], list[Cell]]:
    """Headers, student rows and the teacher's reference row of one pair, as shown in md and html."""
    average = len(table.benchmarks) > 1
    headers = ["method", "seeds", *table.benchmarks]
    headers += ["average"] if average else []
    headers += [f"{p} dev-h" for p in table.phases]
    headers += ["total dev-h", "standalone dev-h"]
    if table.baseline:
        headers += [f"x cheaper than {table.baseline}", "x cheaper (standalone)"]
    headers += ["device"]
    rows = []
    for row in table.rows:
        cells = [Cell(row.label, row.label), Cell(str(row.seeds), row.seeds)]
        cells += [Cell(fmt_score(row.scores.get(b), row.seeds), _mean(row.scores.get(b))) for b in table.benchmarks]
        cells += [Cell(fmt_score(row.average, row.seeds), _mean(row.average))] if average else []
        cells += [Cell(fmt_hours(row.phase_hours.get(p)), row.phase_hours.get(p)) for p in table.phases]
        cells += [Cell(fmt_hours(row.total_hours), row.total_hours)]
        cells += [Cell(fmt_hours(row.standalone_hours), row.standalone_hours)]
        if table.baseline:
            cells += [Cell(fmt_ratio(row.cheaper), row.cheaper)]
            cells += [Cell(fmt_ratio(row.cheaper_standalone), row.cheaper_standalone)]
        cells += [Cell(row.devices, row.devices)]
        rows.append(cells)
    teacher = [Cell("teacher (reference)"), Cell(MISSING)]
    teacher += [Cell(fmt_score(table.teacher_scores.get(b))) for b in table.benchmarks]
    teacher += [Cell(_num(table.teacher_average, ".1f") or MISSING)] if average else []
    teacher += [Cell("") for _ in headers[len(teacher) :]]
    return headers, rows, teacher


def _mean(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


COST_NOTE = (
    "Scores: % of each benchmark's primary metric, mean ± std over seeds. "
    "dev-h: device-hours (wall seconds x devices / 3600), mean per run. "
    "A cached phase (teacher supervision) is built once and its cost split equally among the runs that used it: "
    "*total* includes that share, so the totals of all runs add up to what was spent; "
    "*standalone* charges each run the whole build."
)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _intro(board: Leaderboard) -> str:
    return f"Built by `harness leaderboard` from {board.n_records} run record(s) in `runs/`; do not edit by hand."


def render_markdown(board: Leaderboard) -> str:
    lines = [
        "# Leaderboard",
        "",
        _intro(board),
        "",
        COST_NOTE,
        "",
    ]
    if not board.tables:
        lines += ["No run records yet.", ""]
    for table in board.tables:
        headers, rows, teacher = display_table(table)
        lines += [f"## {table.pair}: `{table.teacher}` → `{table.student}`", ""]
        lines.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 2) + [":---"]) + "|")
        for cells in [*rows, teacher]:
            lines.append("| " + " | ".join(_md_escape(c.text) for c in cells) + " |")
        lines.append("")
    if board.problems:
        lines += ["## Skipped records", ""] + [f"- {_md_escape(p)}" for p in board.problems] + [""]
    return "\n".join(lines)


def render_csv(board: Leaderboard) -> str:
    """One flat table over all pairs: a row per group plus a teacher row per pair; scores in %."""
    benchmarks = sorted({b for t in board.tables for b in t.benchmarks})
    phases = _ordered_phases(p for t in board.tables for p in t.phases)
    header = ["pair", "role", "method", "label", "settings_key", "seeds", "device"]
    for b in benchmarks:
        header += [f"{b}_mean", f"{b}_std", f"{b}_n"]
    header += [f"{p}_device_hours" for p in phases]
    header += ["total_device_hours", "standalone_device_hours", "baseline", "cheaper_x", "cheaper_standalone_x"]
    header += ["method_params", "train_config"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for table in board.tables:
        for row in table.rows:
            line = [table.pair, "student", row.group.method, row.label, row.group.key, row.seeds, row.devices]
            for b in benchmarks:
                stat = row.scores.get(b)
                line += [_num(_mean(stat), ".4f"), _num(stat and stat.std, ".4f"), stat.n if stat else ""]
            line += [_num(row.phase_hours[p]) if p in row.phase_hours else "" for p in phases]
            line += [_num(row.total_hours), _num(row.standalone_hours), table.baseline or ""]
            line += [_num(row.cheaper, ".4f"), _num(row.cheaper_standalone, ".4f")]
            settings = row.group.settings
            line += [json.dumps(settings["method_params"], sort_keys=True)]
            line += [json.dumps(settings["train_config"], sort_keys=True)]
            writer.writerow(line)
        line = [table.pair, "teacher", "", table.teacher, "", "", ""]
        for b in benchmarks:
            stat = table.teacher_scores.get(b)
            line += [_num(_mean(stat), ".4f"), _num(stat and stat.std, ".4f"), stat.n if stat else ""]
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


def _latex_score(stat: Stat | None, bold: bool) -> str:
    if stat is None:
        return "--"
    body = f"{stat.mean:.1f}" if stat.std is None else f"{stat.mean:.1f} \\pm {stat.std:.1f}"
    return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"


def render_latex(board: Leaderboard) -> str:
    """A booktabs table over all pairs; the best student score per benchmark within each pair in bold."""
    benchmarks = sorted({b for t in board.tables for b in t.benchmarks})
    with_ratio = board.baseline is not None
    head = ["Pair", "Method", "Seeds", *(latex_escape(b) for b in benchmarks), "Dev-h"]
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
            cells = [latex_escape(table.pair), latex_escape(row.label), str(row.seeds)]
            cells += [
                _latex_score(row.scores.get(b), row.scores.get(b) is not None and row.scores[b].mean == best[b])
                for b in benchmarks
            ]
            cells += [fmt_hours(row.total_hours)]
            cells += [fmt_ratio(row.cheaper).replace("x", "$\\times$")] if with_ratio else []
            lines.append(" & ".join(cells) + " \\\\")
        cells = [latex_escape(table.pair), "\\textit{teacher}", "--"]
        cells += [_latex_score(table.teacher_scores.get(b), False) for b in benchmarks]
        cells += ["--"] + (["--"] if with_ratio else [])
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def leaderboard_latex(results_dir: str | Path, *, baseline: str | None = None) -> str:
    """The leaderboard as a booktabs LaTeX tabular (best score per benchmark and pair in bold)."""
    return render_latex(leaderboard(results_dir, baseline=baseline))


# ---------------------------------------------------------------- files


def build_leaderboard(results_dir: str | Path, *, baseline: str | None = None) -> list[Path]:
    """Write leaderboard.md, .csv, .html and the plots (PNG, in `plots/`) under `results_dir`; return the paths.

    Records that fail to load or validate are logged as warnings, listed in the md and html, and skipped.
    Plot files of pairs no longer on the board are removed; nothing else is.
    """
    results_dir = Path(results_dir)
    board = leaderboard(results_dir, baseline=baseline)
    for problem in board.problems:
        log.warning("%s", problem)
    plots: dict[str, bytes] = {}
    sections = []
    for table in board.tables:
        drawn = pair_plots(table)
        plots.update(drawn)
        headers, rows, teacher = display_table(table)
        sections.append(Section(f"{table.pair}: {table.teacher} → {table.student}", headers, rows, teacher, [*drawn]))
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

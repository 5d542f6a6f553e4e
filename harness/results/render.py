"""Tables of estimates as text: Markdown, CSV and LaTeX, with fixed number formats, so the same records give
byte-identical outputs."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np

from harness.results.costs import ordered_phases
from harness.results.estimates import (
    DIRTY_MARK,
    MISSING,
    TEACHER,
    Estimate,
    Leaderboard,
    PairTable,
    Row,
    from_uncommitted_code,
)
from harness.results.html import Cell


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
    headers = ["method", "id", "seeds", *table.benchmarks]
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
        cells = [Cell(shown, row.label), Cell(row.group.key, row.group.key), Cell(str(row.seeds), row.seeds)]
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
            Cell(""),
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


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def intro(board: Leaderboard) -> str:
    return f"Built by `harness leaderboard` from {board.n_records} run record(s) in `runs/`; do not edit by hand."


def heading(table: PairTable) -> str:
    return f"{table.title}: `{table.teacher}` → `{table.student}`"


def render_markdown(board: Leaderboard) -> str:
    lines = ["# Leaderboard", "", intro(board), "", COST_NOTE, ""]
    if not board.tables:
        lines += ["No run records yet.", ""]
    for table in board.tables:
        headers, rows, references = display_table(table)
        lines += [f"## {heading(table)}", ""]
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
    phases = ordered_phases(p for t in board.tables for p in t.phases)
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

"""`harness leaderboard`: the records under a results dir to its leaderboard files (md, csv, html) and plots,
written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.results.curves import loss_curve
from harness.results.estimates import PairTable, leaderboard
from harness.results.html import Section, render_html
from harness.results.plots import LossCurves, pair_plots
from harness.results.render import COST_NOTE, display_table, heading, intro, render_csv, render_latex, render_markdown
from kdcore.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"


def leaderboard_latex(results_dir: str | Path, *, baseline: str | None = None) -> str:
    """The leaderboard as a booktabs LaTeX tabular (best score per benchmark and table in bold)."""
    return render_latex(leaderboard(results_dir, baseline=baseline))


def table_loss_curves(table: PairTable, results_dir: Path) -> LossCurves:
    """Each row's runs' training-loss curves, from the logs their records name, in seed order."""
    return {
        row.label: [
            loss_curve(results_dir / run.training.log) if run.training.log else []
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
        dev_scores = {row.label: [run.training.evals or [] for run in row.group.runs] for row in table.rows}
        drawn = pair_plots(table, table_loss_curves(table, results_dir), dev_scores)
        plots.update(drawn)
        headers, rows, references = display_table(table)
        title = heading(table).replace("`", "")
        notes = [note.replace("`", "") for note in table.notes]
        costs_from = next(i for i, h in enumerate(headers) if h.endswith("dev-h"))
        sections.append(Section(title, headers, rows, references, [*drawn], notes, costs_from))
    paths = [
        atomic_write_text(results_dir / "leaderboard.md", render_markdown(board)),
        atomic_write_text(results_dir / "leaderboard.csv", render_csv(board)),
        atomic_write_text(
            results_dir / "leaderboard.html",
            render_html(sections, COST_NOTE.replace("*", ""), board.problems, plots, intro(board).replace("`", "")),
        ),
    ]
    plots_dir = results_dir / PLOTS_DIR
    paths += [atomic_write_bytes(plots_dir / name, data) for name, data in plots.items()]
    if plots_dir.is_dir():
        for stale in sorted(plots_dir.glob("*.png")):
            if stale.name not in plots:
                stale.unlink()
    return paths

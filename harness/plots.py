"""Leaderboard plots as deterministic PNG bytes: score vs device-hours with the Pareto front, and score bars.

Figures are drawn with matplotlib's Agg renderer (no pyplot, no global backend), under the default style
whatever the user's matplotlibrc says, and saved without the 'Software' metadata, so equal inputs give
equal bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl
import matplotlib.style
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from harness.leaderboard import PairTable

STYLE = {"svg.hashsalt": "kd-harness", "font.family": "DejaVu Sans", "font.size": 9, "savefig.dpi": 110}
TEACHER_COLOR = "0.45"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, score) that no other point beats: cost <= and score >= with one strict.

    Returned in order of increasing cost; of identical points only the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _slug(pair: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pair)


def pareto_png(table: PairTable) -> bytes | None:
    """Mean score over the pair's benchmarks vs amortised device-hours per run; None when nothing to plot."""
    rows = [r for r in table.rows if r.average is not None and r.total_hours > 0]
    if not rows:
        return None
    points = [(r.total_hours, r.average.mean) for r in rows]
    front = pareto_front(points)
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for i, row in enumerate(rows):
            on_front = i in front
            ax.errorbar(
                row.total_hours,
                row.average.mean,
                yerr=math.nan if row.average.std is None else row.average.std,
                fmt="o",
                color=f"C{i % 10}",
                markersize=8 if on_front else 6,
                markeredgecolor="black" if on_front else f"C{i % 10}",
                capsize=3,
                label=row.label,
            )
        front_costs, front_scores = [points[i][0] for i in front], [points[i][1] for i in front]
        ax.plot(front_costs, front_scores, "--", color="black", lw=1, label="Pareto front", zorder=0)
        if table.teacher_average is not None:
            ax.axhline(table.teacher_average, color=TEACHER_COLOR, ls=":", lw=1, label="teacher")
        costs = [c for c, _ in points]
        if max(costs) / min(costs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("device-hours per run (amortised)")
        ax.set_ylabel("mean score over benchmarks (%)" if len(table.benchmarks) > 1 else f"{table.benchmarks[0]} (%)")
        ax.set_title(f"{table.pair}: score vs cost")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return _png(fig)


def scores_png(table: PairTable) -> bytes | None:
    """Grouped bars per benchmark, one bar per method with std-over-seeds error bars, the teacher hatched."""
    if not table.rows or not table.benchmarks:
        return None
    series = [(r.label, r.scores) for r in table.rows] + [("teacher", table.teacher_scores)]
    width = 0.8 / len(series)
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(
            figsize=(max(6.4, 1.2 + 1.1 * len(series) * len(table.benchmarks) * 0.5), 4.2), layout="constrained"
        )
        ax = fig.add_subplot()
        for k, (label, scores) in enumerate(series):
            xs = [j + (k - (len(series) - 1) / 2) * width for j in range(len(table.benchmarks))]
            stats = [scores.get(b) for b in table.benchmarks]
            teacher = label == "teacher"
            ax.bar(
                xs,
                [s.mean if s else 0.0 for s in stats],
                width,
                yerr=[s.std if s and s.std is not None else math.nan for s in stats],
                capsize=3,
                label=label,
                color=TEACHER_COLOR if teacher else f"C{k % 10}",
                hatch="//" if teacher else None,
                edgecolor="white" if teacher else None,
            )
        ax.set_xticks(range(len(table.benchmarks)), table.benchmarks)
        ax.set_ylabel("score (%), mean ± std over seeds")
        ax.set_title(f"{table.pair}: scores per method")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return _png(fig)


def pair_plots(table: PairTable) -> dict[str, bytes]:
    """The pair's plots as {file name: PNG bytes}."""
    slug = _slug(table.pair)
    drawn = {f"pareto-{slug}.png": pareto_png(table), f"scores-{slug}.png": scores_png(table)}
    return {name: data for name, data in drawn.items() if data is not None}

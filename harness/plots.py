"""Leaderboard plots as deterministic PNG bytes: score vs cost (device-hours and FLOPs) with the Pareto front,
and score bars, with 95% intervals and the reference rows.

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
    from harness.leaderboard import Estimate, PairTable

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


def _yerr(estimates: Sequence[Estimate | None]) -> list[list[float]]:
    """Asymmetric error bars from 95% intervals (NaN, i.e. none, where an estimate has no interval)."""
    lows, highs = [], []
    for e in estimates:
        ok = e is not None and e.low is not None and e.high is not None
        lows.append(e.mean - e.low if ok else math.nan)
        highs.append(e.high - e.mean if ok else math.nan)
    return [lows, highs]


def pareto_png(table: PairTable) -> bytes | None:
    """Mean score over the benchmarks (95% intervals) vs amortised cost per run, one panel in device-hours and one
    in estimated FLOPs, each with its Pareto front and the reference rows as lines; None when nothing to plot."""
    rows = [r for r in table.rows if r.average is not None and r.total_hours > 0]
    if not rows:
        return None
    axes_costs = [("device-hours", [r.total_hours for r in rows])]
    if all(r.total_flops > 0 for r in rows):
        axes_costs.append(("estimated FLOPs", [r.total_flops for r in rows]))
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(6.4 * len(axes_costs), 4.2), layout="constrained")
        for panel, (xlabel, costs) in enumerate(axes_costs):
            ax = fig.add_subplot(1, len(axes_costs), panel + 1)
            points = [(c, r.average.mean) for c, r in zip(costs, rows, strict=True)]
            front = pareto_front(points)
            for i, row in enumerate(rows):
                on_front = i in front
                ax.errorbar(
                    costs[i],
                    row.average.mean,
                    yerr=_yerr([row.average]),
                    fmt="o",
                    color=f"C{i % 10}",
                    markersize=8 if on_front else 6,
                    markeredgecolor="black" if on_front else f"C{i % 10}",
                    capsize=3,
                    label=row.label,
                )
            ax.plot(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                "--",
                color="black",
                lw=1,
                label="Pareto front",
                zorder=0,
            )
            for ref, style in zip(table.references, (":", "-."), strict=False):
                if ref.average is not None:
                    ax.axhline(ref.average.mean, color=TEACHER_COLOR, ls=style, lw=1, label=ref.label)
            if max(costs) / min(costs) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(f"{xlabel} per run (amortised)")
            ax.set_ylabel(
                "mean score over benchmarks (%)" if len(table.benchmarks) > 1 else f"{table.benchmarks[0]} (%)"
            )
            ax.set_title(f"{table.title}: score vs {xlabel}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        return _png(fig)


def scores_png(table: PairTable) -> bytes | None:
    """Grouped bars per benchmark, one bar per method with 95% intervals, the reference rows hatched."""
    if not table.rows or not table.benchmarks:
        return None
    series = [(r.label, r.scores, False) for r in table.rows] + [(r.label, r.scores, True) for r in table.references]
    width = 0.8 / len(series)
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(
            figsize=(max(6.4, 1.2 + 1.1 * len(series) * len(table.benchmarks) * 0.5), 4.2), layout="constrained"
        )
        ax = fig.add_subplot()
        for k, (label, scores, reference) in enumerate(series):
            xs = [j + (k - (len(series) - 1) / 2) * width for j in range(len(table.benchmarks))]
            estimates = [scores.get(b) for b in table.benchmarks]
            ax.bar(
                xs,
                [e.mean if e else 0.0 for e in estimates],
                width,
                yerr=_yerr(estimates),
                capsize=3,
                label=label,
                color=TEACHER_COLOR if reference else f"C{k % 10}",
                hatch=("//" if k == len(table.rows) else "..") if reference else None,
                edgecolor="white" if reference else None,
            )
        ax.set_xticks(range(len(table.benchmarks)), table.benchmarks)
        ax.set_ylabel("score (%), mean over seeds, 95% interval")
        ax.set_title(f"{table.title}: scores per method")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return _png(fig)


def pair_plots(table: PairTable) -> dict[str, bytes]:
    """The table's plots as {file name: PNG bytes}; the build is in the name when the title names one."""
    slug = _slug(table.pair if table.title == table.pair else f"{table.pair}-{table.build}")
    drawn = {f"pareto-{slug}.png": pareto_png(table), f"scores-{slug}.png": scores_png(table)}
    return {name: data for name, data in drawn.items() if data is not None}

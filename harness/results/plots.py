"""Leaderboard plots as deterministic PNG bytes: score vs cost (device-hours and FLOPs) with the Pareto front,
and score bars, with 95% intervals and the reference rows.

Readable at any number of methods: every method has its own colour-and-marker pair (`method_style`), legends sit
outside the axes, the bar chart is horizontal with one panel per benchmark and the method names as tick labels
(sorted by score, the figure as tall as the rows need), so no label covers data or another label.

Figures are drawn with matplotlib's Agg renderer (no pyplot, no global backend), under the default style
whatever the user's matplotlibrc says, and saved without the 'Software' metadata, so equal inputs give
equal bytes.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl
import matplotlib.style
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from harness.results.estimates import Estimate, PairTable

STYLE = {"svg.hashsalt": "kd-harness", "font.family": "DejaVu Sans", "font.size": 9, "savefig.dpi": 110}
TEACHER_COLOR = "0.45"
COLORS = mpl.colormaps["tab20"].colors
MARKERS = "osD^vP*X<>hp"  # 12 markers and 20 colours: 60 distinct pairs
ROW_INCHES = 0.22  # bar chart height per method
CHAR_INCHES = 0.06  # tick-label width per character at 7 pt


def method_style(index: int) -> tuple[tuple[float, ...], str]:
    """The colour and marker of the index-th method: no two of the first 60 share both."""
    return COLORS[index % len(COLORS)], MARKERS[index % len(MARKERS)]


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


def _png(fig: Figure | None) -> bytes | None:
    if fig is None:
        return None
    buffer = io.BytesIO()
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
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


def pareto_figure(table: PairTable) -> Figure | None:
    """Mean score over the benchmarks (95% intervals) vs amortised cost per run, one panel in device-hours and one
    in estimated FLOPs, each with its Pareto front and the reference rows as lines; None when nothing to plot."""
    styles = {r.label: method_style(k) for k, r in enumerate(table.rows)}
    rows = [r for r in table.rows if r.average is not None and r.total_hours > 0]
    if not rows:
        return None
    axes_costs = [("device-hours", [r.total_hours for r in rows])]
    if all(r.total_flops > 0 for r in rows):
        axes_costs.append(("estimated FLOPs", [r.total_flops for r in rows]))
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(5.6 * len(axes_costs) + 2.4, 4.8), layout="constrained")
        for panel, (xlabel, costs) in enumerate(axes_costs):
            ax = fig.add_subplot(1, len(axes_costs), panel + 1)
            points = [(c, r.average.mean) for c, r in zip(costs, rows, strict=True)]
            front = pareto_front(points)
            for i, row in enumerate(rows):
                on_front = i in front
                color, marker = styles[row.label]
                ax.errorbar(
                    costs[i],
                    row.average.mean,
                    yerr=_yerr([row.average]),
                    fmt=marker,
                    color=color,
                    markersize=8 if on_front else 6,
                    markeredgecolor="black" if on_front else color,
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
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, ncols=1 + len(labels) // 32)
        return fig


def scores_figure(table: PairTable) -> Figure | None:
    """Horizontal bars, one panel per benchmark and one bar per method (95% intervals) sorted by the table's
    order, the reference rows grey and hatched at the bottom; None when nothing to plot."""
    if not table.rows or not table.benchmarks:
        return None
    series = [(r.label, r.scores, False) for r in table.rows] + [(r.label, r.scores, True) for r in table.references]
    height = 1.2 + ROW_INCHES * len(series)
    labels_width = CHAR_INCHES * max(len(label) for label, _, _ in series)
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(0.8 + labels_width + 3.2 * len(table.benchmarks), height), layout="constrained")
        axes = fig.subplots(1, len(table.benchmarks), sharey=True, squeeze=False)[0]
        ys = list(range(len(series)))[::-1]  # the first row at the top
        for ax, benchmark in zip(axes, table.benchmarks, strict=True):
            estimates = [scores.get(benchmark) for _, scores, _ in series]
            colors = [TEACHER_COLOR if reference else method_style(k)[0] for k, (_, _, reference) in enumerate(series)]
            bars = ax.barh(
                ys,
                [e.mean if e else 0.0 for e in estimates],
                0.75,
                xerr=_yerr(estimates),
                capsize=2,
                color=colors,
            )
            for bar, (_, _, reference) in zip(bars, series, strict=True):
                if reference:
                    bar.set_hatch("//")
                    bar.set_edgecolor("white")
            ax.set_title(benchmark)
            ax.set_xlabel("score (%)")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(ys, [label for label, _, _ in series], fontsize=7)
        axes[0].set_ylim(-0.6, len(series) - 0.4)
        fig.suptitle(f"{table.title}: scores per method (mean over seeds, 95% interval)")
        return fig


LossCurves = dict[str, list[list[tuple[int, float]]]]  # row label -> per run, in seed order: [(step, loss)]
PANEL_COLUMNS = 5
TITLE_CHARS = 40  # a panel title's line length at 7 pt
SMOOTHING = 0.05  # moving-average window, as a fraction of the run's logged steps


def _smoothed(values: list[float]) -> list[float]:
    window = max(1, round(SMOOTHING * len(values)))
    cumulative = [0.0]
    for value in values:
        cumulative.append(cumulative[-1] + value)
    return [(cumulative[i + 1] - cumulative[max(0, i + 1 - window)]) / min(window, i + 1) for i in range(len(values))]


def loss_figure(table: PairTable, curves: LossCurves) -> Figure | None:
    """One small panel per method (in the table's order, its colour), one line per run (seed): the training loss
    against steps, smoothed by a moving average. Losses of different methods are different objectives, so
    each panel has its own y axis. None when no run has a loss log."""
    shown = [(k, row) for k, row in enumerate(table.rows) if any(curves.get(row.label, []))]
    if not shown:
        return None
    columns = min(PANEL_COLUMNS, len(shown))
    lines = -(-len(shown) // columns)
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(2.9 * columns, 2.4 * lines + 0.5), layout="constrained")
        axes = fig.subplots(lines, columns, squeeze=False).ravel()
        for ax, (k, row) in zip(axes, shown, strict=False):
            color, _ = method_style(k)
            runs = [points for points in curves[row.label] if points]
            for shade, points in enumerate(runs):
                steps, losses = zip(*points, strict=True)
                ax.plot(steps, _smoothed(list(losses)), color=color, lw=1, alpha=1.0 - 0.6 * shade / len(runs))
            ax.set_title(textwrap.fill(row.label, TITLE_CHARS, break_on_hyphens=False), fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in axes[len(shown) :]:
            ax.set_visible(False)
        fig.supxlabel("optimizer step")
        fig.supylabel("training loss (moving average)")
        fig.suptitle(f"{table.title}: training loss per run (one line per seed)")
        return fig


DevScores = dict[str, list[list[dict[str, float]]]]  # row label -> per run: the record's training.evals


def dev_score_figure(table: PairTable, dev_scores: DevScores) -> Figure | None:
    """Dev-slice score (`--eval-every`) against steps, one panel per benchmark, one line per method (the mean
    over its runs at each step, in its colour and marker), the legend outside; None when no run has them."""
    benchmarks = sorted({k for runs in dev_scores.values() for run in runs for e in run for k in e if k != "step"})
    if not benchmarks:
        return None
    with matplotlib.style.context("default"), mpl.rc_context(STYLE):
        fig = Figure(figsize=(4.4 * len(benchmarks) + 2.4, 3.8), layout="constrained")
        axes = fig.subplots(1, len(benchmarks), squeeze=False)[0]
        for ax, benchmark in zip(axes, benchmarks, strict=True):
            for k, row in enumerate(table.rows):
                by_step: dict[int, list[float]] = {}
                for run in dev_scores.get(row.label, []):
                    for entry in run:
                        if benchmark in entry:
                            by_step.setdefault(int(entry["step"]), []).append(100 * entry[benchmark])
                if by_step:
                    color, marker = method_style(k)
                    steps = sorted(by_step)
                    means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
                    ax.plot(steps, means, color=color, marker=marker, markersize=4, lw=1, label=row.label)
            ax.set_title(benchmark)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("dev-slice score (%), mean over seeds")
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, ncols=1 + len(labels) // 32)
        fig.suptitle(f"{table.title}: score during training (--eval-every, held-out training prompts)")
        return fig


def pair_plots(
    table: PairTable, curves: LossCurves | None = None, dev_scores: DevScores | None = None
) -> dict[str, bytes]:
    """The table's plots as {file name: PNG bytes}; the build is in the name when the title names one."""
    slug = _slug(table.pair if table.title == table.pair else f"{table.pair}-{table.build}")
    drawn = {
        f"pareto-{slug}.png": _png(pareto_figure(table)),
        f"scores-{slug}.png": _png(scores_figure(table)),
        f"loss-{slug}.png": _png(loss_figure(table, curves or {})),
        f"dev-{slug}.png": _png(dev_score_figure(table, dev_scores or {})),
    }
    return {name: data for name, data in drawn.items() if data is not None}

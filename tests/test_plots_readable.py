"""The shipped leaderboard's plots stay readable: a colour-and-marker pair per method, legends outside the data,
no tick label over another, everything inside the figure."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from harness.results.build import table_loss_curves
from harness.results.curves import loss_curve
from harness.results.estimates import PairTable, leaderboard
from harness.results.plots import dev_score_figure, loss_figure, method_style, pair_plots, pareto_figure, scores_figure

# 87 records of 21 settings (the tiny table at 600 steps, made 2026-12-02) with their training logs: a crowded table
SHIPPED = Path(__file__).with_name("data") / "crowded_results"


@pytest.fixture(scope="module")
def shipped_table() -> PairTable:
    (table,) = (t for t in leaderboard(SHIPPED).tables if t.pair == "tiny")
    assert len(table.rows) >= 20  # the check is meant for a crowded table
    return table


def _drawn(fig: Figure) -> Figure:
    fig.draw_without_rendering()
    return fig


def _overlap(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_method_styles_are_distinct() -> None:
    styles = [method_style(i) for i in range(60)]
    assert len(set(styles)) == 60


def test_pareto_legend_sits_outside_every_panel(shipped_table: PairTable) -> None:
    fig = _drawn(pareto_figure(shipped_table))
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert not any(_overlap(box, ax.get_window_extent()) for ax in fig.axes)
    assert Bbox.from_bounds(0, 0, *fig.canvas.get_width_height()).contains(box.x1 - 1, box.y0 + 1)
    labels = [t.get_text() for t in legend.get_texts()]
    assert {row.label for row in shipped_table.rows} <= set(labels)
    markers = {
        (line.get_color(), line.get_marker()) for line in fig.axes[0].lines if line.get_marker() not in ("None", "")
    }
    assert len(markers) >= len(shipped_table.rows)


def test_score_bars_label_every_row_without_overlap(shipped_table: PairTable) -> None:
    fig = _drawn(scores_figure(shipped_table))
    ticks = [t for t in fig.axes[0].get_yticklabels() if t.get_text()]
    expected = [r.label for r in shipped_table.rows] + [r.label for r in shipped_table.references]
    assert sorted(t.get_text() for t in ticks) == sorted(expected)
    boxes = sorted((t.get_window_extent() for t in ticks), key=lambda b: b.y0)
    assert all(lower.y1 <= upper.y0 for lower, upper in itertools.pairwise(boxes))
    width, height = fig.canvas.get_width_height()
    assert all(b.x0 >= 0 and b.x1 <= width and b.y0 >= 0 and b.y1 <= height for b in boxes)
    assert not any(fig.legends) and all(ax.get_legend() is None for ax in fig.axes)


def test_rows_are_best_first(shipped_table: PairTable) -> None:
    means = [row.average.mean for row in shipped_table.rows if row.average is not None]
    assert means == sorted(means, reverse=True)


def test_loss_curves_read_every_step_and_skip_a_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text('{"loss": 2.0}\n{"loss": 1.5, "step": 2}\n[]\n{"loss": "x"}\n{"loss": 1.')
    assert loss_curve(log) == [(1, 2.0), (2, 1.5)]
    assert loss_curve(tmp_path / "missing.jsonl") == []


def test_loss_panels_one_per_method_titles_apart(shipped_table: PairTable) -> None:
    curves = table_loss_curves(shipped_table, SHIPPED)
    assert all(len(curves[row.label]) == row.seeds for row in shipped_table.rows)
    fig = _drawn(loss_figure(shipped_table, curves))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == sum(1 for row in shipped_table.rows if any(curves[row.label]))
    titles = [ax.title.get_window_extent() for ax in panels]
    assert not any(_overlap(a, b) for i, a in enumerate(titles) for b in titles[i + 1 :])
    for ax, row in zip(panels, (r for r in shipped_table.rows if any(curves[r.label])), strict=True):
        assert ax.title.get_text().replace("\n", " ") == row.label
        assert len(ax.lines) == sum(1 for points in curves[row.label] if points)


def test_dev_scores_one_line_per_method_legend_outside(shipped_table: PairTable) -> None:
    rows = shipped_table.rows[:3]
    evals = {
        row.label: [[{"step": 10, "arith": 0.2 + i / 10}, {"step": 20, "arith": 0.4}]] for i, row in enumerate(rows)
    }
    evals[rows[0].label].append([{"step": 10, "arith": 0.4}, {"step": 20, "arith": 0.6}])  # a second seed
    fig = _drawn(dev_score_figure(shipped_table, evals))
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == [row.label for row in rows]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([30.0, 50.0])  # the mean over the two seeds, in %
    (legend,) = fig.legends
    assert not _overlap(legend.get_window_extent(), ax.get_window_extent())
    assert "dev-tiny.png" in pair_plots(shipped_table, {}, evals)
    assert "dev-tiny.png" not in pair_plots(shipped_table, {}, {})

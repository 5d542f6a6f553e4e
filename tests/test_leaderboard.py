"""Leaderboard: cost charging, grouping, statistics, outputs, determinism and bad records (fake test data)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from harness.accounting import CostLedger
from harness.records import RunRecord, load_records, write_record
from harness.results.build import build_leaderboard, leaderboard_latex
from harness.results.costs import charged_hours
from harness.results.estimates import BEFORE, TEACHER, TRUNCATION_NOTE, leaderboard
from harness.results.plots import pareto_front
from harness.results.render import fmt_flops, fmt_gap, fmt_hours, latex_escape, render_markdown
from harness.stats import two_row_detectable
from kdcore.errors import HarnessError
from kdcore.scores import TRUNCATED, TaskScore
from tests.fake_records import (
    ACCURACY,
    SUPERVISE_QWEN,
    SUPERVISE_TINY,
    cost,
    make_record,
    phase,
    write_fake_results,
)
from tests.test_records import COMMITTED_V1


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_fake_results(tmp_path)
    return tmp_path


def _table(board, pair):
    return next(t for t in board.tables if t.pair == pair)


def _row(board, pair, label):
    return next(r for r in _table(board, pair).rows if r.label == label)


# ---------------------------------------------------------------- cost


def test_ledger_device_hours_reach_the_leaderboard(tmp_path: Path) -> None:
    """Device-hours = wall x devices / 3600 from the real ledger; a cache hit is charged half the build."""
    builder = CostLedger()
    with builder.phase("supervise", devices=2) as supervise:
        supervise.cache_key = "teacher-sup"
        sum(range(20000))
    with builder.phase("train", devices=2):
        sum(range(20000))
    built = builder.phases["supervise"]
    assert built.device_hours == pytest.approx(built.wall_s * 2 / 3600)
    assert builder.phases["train"].device_hours == pytest.approx(builder.phases["train"].wall_s * 2 / 3600)

    reuser = CostLedger()
    reuser.reuse("supervise", "teacher-sup", asdict(built))
    with reuser.phase("train", devices=1):
        sum(range(20000))
    assert reuser.phases["supervise"].reused
    assert reuser.run_cost().fresh_device_hours == pytest.approx(reuser.phases["train"].device_hours)

    score = {"arith": TaskScore(score=0.5, n=10)}
    a = make_record("tiny", "hard", 0, score, {}, method_params={"x": 1})
    b = make_record("tiny", "soft", 0, score, {}, method_params={"x": 1})
    a.cost, b.cost = builder.run_cost(), reuser.run_cost()
    write_record(a, tmp_path)
    write_record(b, tmp_path)
    board = leaderboard(tmp_path)
    hard, soft = _row(board, "tiny", "hard"), _row(board, "tiny", "soft")
    assert hard.phase_hours["supervise"] == pytest.approx(built.device_hours / 2)
    assert soft.phase_hours["supervise"] == pytest.approx(built.device_hours / 2)
    assert hard.total_hours == pytest.approx(built.device_hours / 2 + builder.phases["train"].device_hours)
    assert soft.standalone_hours == pytest.approx(reuser.run_cost().total_device_hours)
    spent = builder.run_cost().fresh_device_hours + reuser.run_cost().fresh_device_hours
    assert hard.total_hours + soft.total_hours == pytest.approx(spent)


def test_cache_build_is_split_among_its_users() -> None:
    key = "k1"
    runs = [
        make_record("tiny", "hard", 0, {}, {"supervise": phase(0.3, cache_key=key), "train": phase(0.1)}),
        make_record("tiny", "soft", 0, {}, {"supervise": phase(0.3, reused=True, cache_key=key), "train": phase(0.2)}),
        make_record("tiny", "hybrid", 0, {}, {"supervise": phase(0.3, reused=True, cache_key=key)}),
        make_record("tiny", "gkd", 0, {}, {"train": phase(0.5)}),
    ]
    charged = charged_hours(runs)
    assert [charged[r.run_id]["supervise"] for r in runs[:3]] == pytest.approx([0.1, 0.1, 0.1])
    assert "supervise" not in charged[runs[3].run_id]
    assert charged[runs[1].run_id]["train"] == pytest.approx(0.2)
    spent = sum(p.device_hours for r in runs for p in r.cost.phases.values() if not p.reused)
    assert sum(sum(c.values()) for c in charged.values()) == pytest.approx(spent)


def test_cache_without_its_builder_charges_the_carried_cost_once() -> None:
    """The run that built the entry is not in the results: its carried cost is split among the reusers."""
    runs = [
        make_record("tiny", m, 0, {}, {"supervise": phase(0.6, reused=True, cache_key="k")}) for m in ("a", "b", "c")
    ]
    assert [charged_hours(runs)[r.run_id]["supervise"] for r in runs] == pytest.approx([0.2, 0.2, 0.2])


def test_rows_charge_each_run_its_share(results: Path) -> None:
    board = leaderboard(results, baseline="gkd")
    tiny_users = sum(1 for (pair, method, _) in ACCURACY if pair == "tiny" and method != "gkd")
    hybrid = _row(board, "tiny", "hybrid")
    assert hybrid.phase_hours["supervise"] == pytest.approx(SUPERVISE_TINY["hours"] / tiny_users)
    assert hybrid.phase_hours["train"] == pytest.approx((0.010 + 0.011) / 2)
    assert hybrid.total_hours == pytest.approx(SUPERVISE_TINY["hours"] / tiny_users + 0.0105 + 0.002)
    assert hybrid.standalone_hours == pytest.approx(SUPERVISE_TINY["hours"] + 0.0105 + 0.002)
    gkd = _row(board, "tiny", "gkd")
    assert "supervise" not in gkd.phase_hours
    assert hybrid.cheaper == pytest.approx(gkd.total_hours / hybrid.total_hours)
    assert hybrid.cheaper_standalone == pytest.approx(gkd.standalone_hours / hybrid.standalone_hours)
    assert gkd.cheaper == pytest.approx(1.0)
    qwen_alpha5 = _row(board, "qwen", "hybrid (alpha=0.5)")
    assert qwen_alpha5.phase_hours["supervise"] == pytest.approx(SUPERVISE_QWEN["hours"] / 3)


def test_amortised_totals_add_up_to_what_was_spent(results: Path) -> None:
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]
    spent = sum(p["device_hours"] for r in records for p in r["cost"]["phases"].values() if not p["reused"])
    board = leaderboard(results)
    total = sum(row.total_hours * row.seeds for table in board.tables for row in table.rows)
    assert total == pytest.approx(spent)
    standalone = sum(row.standalone_hours * row.seeds for table in board.tables for row in table.rows)
    assert standalone > total


# ---------------------------------------------------------------- rows, scores, labels


def test_scores_are_means_over_seeds_with_t_intervals_over_the_seeds(results: Path) -> None:
    board = leaderboard(results)
    for (pair, method, _), _ in ACCURACY.items():
        values = [100 * acc["arith"] for (p, m, _), acc in ACCURACY.items() if (p, m) == (pair, method)]
        row = _row(board, pair, method)
        estimate = row.scores["arith"]
        assert estimate.n == len(values) == row.seeds
        assert estimate.mean == pytest.approx(statistics.mean(values))
        if len(values) == 1:
            assert estimate.low is None and estimate.detectable is None
            continue
        half = scipy_stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        assert (estimate.low, estimate.high) == pytest.approx((estimate.mean - half, estimate.mean + half))
        assert estimate.detectable == pytest.approx(two_row_detectable(values))
        if pair == "tiny":  # one benchmark: the row's detectable difference is that benchmark's
            assert row.detectable == estimate.detectable
    teacher = _table(board, "tiny").reference(TEACHER)
    assert teacher.scores["arith"].mean == pytest.approx(68.0) and teacher.evaluations == 1
    assert teacher.scores["arith"].low is None  # one evaluation: no interval
    qwen = _row(board, "qwen", "gkd")
    assert qwen.average.mean == pytest.approx(52.0)


def test_a_row_with_one_seed_shows_no_interval_and_no_detectable_difference(tmp_path: Path) -> None:
    write_record(
        make_record("tiny", "hard", 0, {"arith": TaskScore(score=0.2, n=10)}, {"train": phase(0.01)}), tmp_path
    )
    board = leaderboard(tmp_path)
    row = board.tables[0].rows[0]
    assert row.scores["arith"].low is None and row.detectable is None
    assert f"| hard | {row.group.key} | 1 | 20.0 | s0 20.0 | 0.14 | – |" in render_markdown(board)


def test_gap_recovered_against_the_reference_rows(results: Path) -> None:
    board = leaderboard(results)
    table = _table(board, "tiny")
    before, teacher = table.reference(BEFORE), table.reference(TEACHER)
    assert (before.average.mean, teacher.average.mean) == pytest.approx((12.0, 68.0))
    hybrid = _row(board, "tiny", "hybrid")
    assert hybrid.gap.mean == pytest.approx((31.0 - 12.0) / (68.0 - 12.0))
    score = hybrid.scores["arith"]  # one benchmark: the gap's interval is the score's, rescaled
    assert (hybrid.gap.low, hybrid.gap.high) == pytest.approx(((score.low - 12) / 56, (score.high - 12) / 56))
    assert _row(board, "tiny", "gkd").gap.mean > _row(board, "tiny", "hard").gap.mean
    qwen = _row(board, "qwen", "gkd")  # (52 - 37.5) / (73.5 - 37.5) on the mean over both benchmarks
    assert qwen.gap.mean == pytest.approx((52.0 - 37.5) / (73.5 - 37.5))
    line = next(x for x in render_markdown(board).splitlines() if x.startswith("| hybrid |"))
    assert fmt_gap(hybrid.gap) in line and fmt_gap(hybrid.gap).startswith("0.34 [")


def test_flops_are_charged_like_device_hours(results: Path) -> None:
    board = leaderboard(results)
    for table in board.tables:
        for row in table.rows:  # the fake phases carry flops = device-hours x 1e15
            assert row.total_flops == pytest.approx(row.total_hours * 1e15)
            assert row.standalone_flops == pytest.approx(row.standalone_hours * 1e15)
    line = next(x for x in render_markdown(board).splitlines() if x.startswith("| hybrid |"))
    assert fmt_flops(_row(board, "tiny", "hybrid").total_flops) in line


def test_different_settings_are_separate_rows_with_labels(results: Path) -> None:
    board = leaderboard(results)
    labels = [r.label for r in _table(board, "qwen").rows]  # best first
    assert labels == ["gkd", "hybrid (alpha=0.5)", "hybrid (alpha=0.2)"]
    assert [r.seeds for r in _table(board, "qwen").rows] == [1, 2, 1]
    assert [r.label for r in _table(board, "tiny").rows] == ["gkd", "hybrid", "soft", "hard"]


def test_train_config_differences_split_rows(tmp_path: Path) -> None:
    score = {"arith": TaskScore(score=0.5, n=10)}
    for steps in (50, 200):
        for seed in (0, 1):
            rec = make_record("tiny", "hard", seed, score, {"train": phase(0.01)}, train_config={"max_steps": steps})
            rec.run_id += f"-{steps}"
            write_record(rec, tmp_path)
    rows = _table(leaderboard(tmp_path), "tiny").rows
    assert [(r.label, r.seeds) for r in rows] == [("hard (max_steps=200)", 2), ("hard (max_steps=50)", 2)]


def test_records_that_predate_the_used_teacher_signal_group_with_newer_ones(tmp_path: Path) -> None:
    """Older records carry the command line's default `topk` for every method; the leaderboard reads the signal the
    method's data plan used, so an old and a new seed of one setting are one row, while a real difference splits."""
    score = {"arith": TaskScore(score=0.5, n=10)}
    cases = [("hard", 0, "topk", {}), ("hard", 1, "none", {}), ("gkd", 0, "topk", {}), ("gkd", 1, "online", {})]
    cases += [("soft", 0, "topk", {"divergence": "fkl"}), ("soft", 1, "online", {"divergence": "fkl"})]
    for method, seed, signal, params in cases:
        rec = make_record(
            "tiny",
            method,
            seed,
            score,
            {"train": phase(0.01)},
            method_params=params,
            train_config={"teacher_signal": signal},
        )
        rec.method_params = params  # as the method records them (hard has none)
        write_record(rec, tmp_path)
    rows = _table(leaderboard(tmp_path), "tiny").rows
    assert [(r.label, r.seeds) for r in rows] == [
        ("gkd", 2),
        ("hard", 2),
        ("soft (teacher_signal=online)", 1),
        ("soft (teacher_signal=topk)", 1),
    ]


def test_baseline_errors(results: Path) -> None:
    with pytest.raises(HarnessError, match=r"unknown baseline method 'nope'.*gkd"):
        leaderboard(results, baseline="nope")
    with pytest.raises(HarnessError, match=r"several settings on pair 'qwen'.*hybrid \(alpha=0.2\)"):
        leaderboard(results, baseline="hybrid")
    board = leaderboard(results, baseline="hybrid (alpha=0.5)")
    assert _table(board, "qwen").baseline == "hybrid (alpha=0.5)"
    assert _table(board, "tiny").baseline is None
    assert _row(board, "tiny", "hybrid").cheaper is None


# ---------------------------------------------------------------- outputs


def test_markdown_shows_rows_teacher_and_costs(results: Path) -> None:
    build_leaderboard(results, baseline="gkd")
    md = (results / "leaderboard.md").read_text()
    board = leaderboard(results, baseline="gkd")
    hybrid = _row(board, "tiny", "hybrid")
    line = next(x for x in md.splitlines() if x.startswith("| hybrid |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    arith = hybrid.scores["arith"]
    assert cells[:4] == ["hybrid", hybrid.group.key, "2", f"{arith.mean:.1f} [{arith.low:.1f}, {arith.high:.1f}]"]
    assert "±" not in md
    assert fmt_hours(hybrid.total_hours) in cells
    assert f"{hybrid.cheaper:.2f}x" in cells
    teacher = _table(board, "tiny").reference(TEACHER).scores["arith"]
    assert teacher.low is None and "| teacher (reference) |  | 1 eval | 68.0 |" in md
    assert "| student before distillation (reference) |  | 1 eval | 12.0 |" in md
    assert "| teacher (reference) |  | 1 eval | 86.0 | 61.0 | 73.5 |" in md  # qwen: no logs, no interval
    assert "## qwen: `qwen-teacher` → `qwen-student`" in md
    assert "Pinned: teacher `tiny-teacher` weights " in md


def test_csv_has_one_row_per_setting_and_teacher(results: Path) -> None:
    build_leaderboard(results, baseline="gkd")
    rows = list(csv.DictReader((results / "leaderboard.csv").open()))
    students = [(r["pair"], r["label"]) for r in rows if r["role"] == "student"]
    assert students == [  # best first within each pair
        ("qwen", "gkd"),
        ("qwen", "hybrid (alpha=0.5)"),
        ("qwen", "hybrid (alpha=0.2)"),
        ("tiny", "gkd"),
        ("tiny", "hybrid"),
        ("tiny", "soft"),
        ("tiny", "hard"),
    ]
    hybrid = next(r for r in rows if r["label"] == "hybrid" and r["pair"] == "tiny")
    board = leaderboard(results, baseline="gkd")
    assert float(hybrid["total_device_hours"]) == pytest.approx(_row(board, "tiny", "hybrid").total_hours, rel=1e-5)
    assert float(hybrid["arith_mean"]) == pytest.approx(31.0)
    assert hybrid["gsm8k_mean"] == ""
    assert [r["label"] for r in rows if r["role"] == "teacher"] == ["qwen-teacher", "tiny-teacher"]


def test_latex_bolds_the_best_per_benchmark_and_escapes(tmp_path: Path) -> None:
    score = lambda s: {"arith": TaskScore(score=s, n=10)}  # noqa: E731
    write_record(make_record("tiny", "a_b&c", 0, score(0.4), {"train": phase(0.01)}), tmp_path)
    write_record(make_record("tiny", "50%", 0, score(0.6), {"train": phase(0.02)}), tmp_path)
    tex = leaderboard_latex(tmp_path, baseline="a_b&c")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "a\\_b\\&c & 1 & $40.0$" in tex
    assert "50\\% & 1 & $\\mathbf{60.0}$" in tex
    assert "$68.0$" in tex and "\\mathbf{68.0}" not in tex  # the teacher is a reference, never bold
    assert latex_escape("x^2 {y} ~ #1 $ \\") == (
        "x\\textasciicircum{}2 \\{y\\} \\textasciitilde{} \\#1 \\$ \\textbackslash{}"
    )


def test_html_is_self_contained(results: Path) -> None:
    paths = build_leaderboard(results)
    html = (results / "leaderboard.html").read_text()
    assert html.count('<table class="sortable">') == 4  # a scores and a cost table per pair
    pngs = [p for p in paths if p.suffix == ".png"]
    assert {p.name for p in pngs} == {"pareto-tiny.png", "scores-tiny.png", "pareto-qwen.png", "scores-qwen.png"}
    assert html.count('src="data:image/png;base64,') == len(pngs)
    for marker in ("http://", "https://", "<link", 'src="http', "@import"):
        assert marker not in html


def test_pareto_front() -> None:
    points = [(1.0, 30.0), (1.0, 25.0), (2.0, 29.0), (3.0, 35.0), (4.0, 35.0), (0.5, 10.0), (3.0, 35.0)]
    assert pareto_front(points) == [5, 0, 3]
    assert pareto_front([]) == []


def test_hours_format() -> None:
    assert [fmt_hours(h) for h in (0.0, 0.000123456, 0.0165, 0.25, 2.8167, 12.25, 1234.5)] == [
        "0",
        "0.000123",
        "0.0165",
        "0.250",
        "2.82",
        "12.2",
        "1234",
    ]


def test_empty_results_dir_builds(tmp_path: Path) -> None:
    build_leaderboard(tmp_path)
    assert "No run records yet." in (tmp_path / "leaderboard.md").read_text()
    assert (tmp_path / "leaderboard.csv").read_text().startswith("pair,build,pinned,role,method,label")


def test_plots_of_a_pair_that_left_are_removed(results: Path) -> None:
    build_leaderboard(results)
    for path in (results / "runs").glob("qwen-*.json"):
        path.unlink()
    build_leaderboard(results)
    assert sorted(p.name for p in (results / "plots").iterdir()) == ["pareto-tiny.png", "scores-tiny.png"]


# ---------------------------------------------------------------- determinism


def _outputs(results: Path, baseline: str | None) -> dict[str, bytes]:
    paths = build_leaderboard(results, baseline=baseline)
    out = {str(p.relative_to(results)): p.read_bytes() for p in paths}
    out["leaderboard.tex"] = leaderboard_latex(results, baseline=baseline).encode()
    return out


def test_rebuild_is_byte_identical(results: Path) -> None:
    first = _outputs(results, "gkd")
    assert set(first) >= {"leaderboard.md", "leaderboard.csv", "leaderboard.html", "plots/pareto-tiny.png"}
    assert _outputs(results, "gkd") == first
    for name in first:
        (results / name).unlink(missing_ok=True)
    shutil.rmtree(results / "plots")
    assert _outputs(results, "gkd") == first
    assert b"Software" not in first["plots/pareto-tiny.png"]


def test_rebuild_in_another_process_and_hash_seed_is_byte_identical(results: Path) -> None:
    """Set iteration order (PYTHONHASHSEED) and a fresh interpreter must not change any byte."""
    first = _outputs(results, "gkd")
    script = "import sys; from harness.results.build import build_leaderboard as b; b(sys.argv[1], baseline='gkd')"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "pdf"}
    subprocess.run([sys.executable, "-c", script, str(results)], check=True, env=env, cwd=Path(__file__).parents[1])
    assert {name: (results / name).read_bytes() for name in first if name != "leaderboard.tex"} == {
        name: data for name, data in first.items() if name != "leaderboard.tex"
    }


# ---------------------------------------------------------------- bad records


def test_bad_records_are_reported_by_name_and_skipped(results: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = results / "runs"
    good = json.loads(next(iter(sorted(runs.glob("tiny-hybrid-*.json")))).read_text())
    (runs / "broken.json").write_text('{"pair": "tiny", ')
    (runs / "future.json").write_text(json.dumps({**good, "schema_version": 99, "run_id": "future"}))
    (runs / "partial.json").write_text(json.dumps({k: v for k, v in good.items() if k != "cost"}))
    no_phases = {**good, "run_id": "no-phases", "cost": {"total_device_hours": 1.0}}
    (runs / "no-phases.json").write_text(json.dumps(no_phases))
    negative = {**good, "run_id": "negative", "cost": cost({"train": phase(-1.0)})}
    (runs / "negative.json").write_text(json.dumps(negative))
    before = sorted(p.name for p in runs.iterdir())

    with caplog.at_level(logging.WARNING, logger="harness.results.build"):
        build_leaderboard(results)
    problems = leaderboard(results).problems
    expected = {
        "broken.json": "Expecting",
        "future.json": "schema_version 99",
        "partial.json": "missing fields: cost",
        "no-phases.json": "cost.phases missing",
        "negative.json": "device_hours",
    }
    assert len(problems) == len(expected)
    for name, reason in expected.items():
        line = next(p for p in problems if p.startswith(f"{name}: skipped"))
        assert reason in line
        assert line in caplog.text
    md = (results / "leaderboard.md").read_text()
    assert "## Skipped records" in md and "- broken.json: skipped" in md
    assert "broken.json: skipped" in (results / "leaderboard.html").read_text()
    assert _row(leaderboard(results), "tiny", "hybrid").seeds == 2  # the good records still count
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing deleted


def test_concurrent_runs_never_collide(tmp_path: Path) -> None:
    """Runs with the same pair, method, seed and second write distinct files; all load."""
    score = {"arith": TaskScore(score=0.5, n=10)}

    def write(_: int) -> None:
        record = make_record("tiny", "hard", 0, score, {"train": phase(0.01)})
        record.run_id = ""  # let the record name itself, as a real run does
        record.__post_init__()
        write_record(record, tmp_path)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list((tmp_path / "runs").glob("*.json"))) == 32
    records, problems = load_records(tmp_path)
    assert len({r.run_id for r in records}) == 32 and problems == []


def test_a_rerun_of_a_seed_replaces_the_earlier_run(tmp_path: Path) -> None:
    for seed, created, accuracy in [(0, "2026-11-22T10:00:00Z", 0.2), (0, "2026-11-22T11:00:00Z", 0.4), (1, "", 0.3)]:
        record = make_record("tiny", "hard", seed, {"arith": TaskScore(score=accuracy, n=10)}, {"train": phase(0.1)})
        record.created = created or record.created
        record.run_id += created[11:13]
        write_record(record, tmp_path)
    board = leaderboard(tmp_path)
    hard = _row(board, "tiny", "hard")
    assert hard.seeds == 2
    assert hard.scores["arith"].mean == pytest.approx(35.0)
    (problem,) = board.problems
    assert problem.startswith("tiny-hard-s0-") and "10.json: skipped (superseded by tiny-hard-s0-" in problem


# ---------------------------------------------------------------- identities: builds, settings, schema 1


def _tiny(tmp_path: Path, method: str, seed: int, score: float, **kwargs) -> RunRecord:
    record = make_record(
        "tiny", method, seed, {"arith": TaskScore(score=score, n=10)}, {"train": phase(0.01)}, **kwargs
    )
    write_record(record, tmp_path)
    return record


def test_two_builds_of_one_pair_are_separate_tables_and_never_supersede(tmp_path: Path) -> None:
    _tiny(tmp_path, "hard", 0, 0.2, build="a")
    _tiny(tmp_path, "hard", 0, 0.6, build="b")  # same method, settings and seed, another build of the weights
    board = leaderboard(tmp_path)
    assert board.problems == []  # nothing superseded across builds
    tables = [t for t in board.tables if t.pair == "tiny"]
    assert len(tables) == 2 and {t.rows[0].scores["arith"].mean for t in tables} == {20.0, 60.0}
    assert all(t.title == f"tiny [build {t.build}]" for t in tables)
    note = next(n for n in tables[0].notes if n.startswith("Pair `tiny` has runs of 2 builds"))
    assert "models.student.weights_sha256" in note and "models.teacher.weights_sha256" in note
    assert "data." not in note  # the data did not change
    md = render_markdown(board)
    assert md.count("## tiny [build ") == 2 and md.count("Pair `tiny` has runs of 2 builds") == 2
    assert {p.name for p in build_leaderboard(tmp_path) if p.suffix == ".png"} == {
        f"{kind}-tiny-{t.build}.png" for t in tables for kind in ("pareto", "scores")
    }


def test_reference_rows_never_average_evaluations_with_different_settings(tmp_path: Path) -> None:
    """The issue's `--limit 0` run next to a full one showed the teacher at 43.0 ± 60.8: now two tables."""
    full = {"arith": TaskScore(score=0.86, n=500)}
    _tiny(tmp_path, "hard", 0, 0.2, teacher_scores=full)
    _tiny(tmp_path, "hard", 1, 0.2, teacher_scores=full)
    zero = {"arith": TaskScore(score=0.0, n=0)}
    _tiny(tmp_path, "soft", 0, 0.0, train_config={"limit": 0}, teacher_scores=zero, before_scores=zero)
    tables = leaderboard(tmp_path).tables
    assert len(tables) == 2
    teachers = sorted(t.reference(TEACHER).scores["arith"].mean for t in tables)
    assert teachers == [0.0, 86.0]
    limits = sorted(str(t.identity["data"]["eval"]["limit"]) for t in tables)
    assert limits == ["0", "None"]
    assert "data.eval.limit" in next(n for n in tables[0].notes if n.startswith("Pair `tiny`"))


def test_reference_evaluations_of_different_sizes_in_one_table_are_not_averaged(tmp_path: Path) -> None:
    _tiny(tmp_path, "hard", 0, 0.2, teacher_scores={"arith": TaskScore(score=0.86, n=500)})
    _tiny(tmp_path, "hard", 1, 0.2, teacher_scores={"arith": TaskScore(score=0.0, n=0)})
    (table,) = leaderboard(tmp_path).tables
    assert table.reference(TEACHER) is None  # no number rather than a mean over different problem sets
    assert _row(leaderboard(tmp_path), "tiny", "hard").gap is None


def test_distinct_evaluations_with_identical_settings_are_averaged(tmp_path: Path) -> None:
    """Two cached teacher evaluations with one setting (e.g. caches on two machines): one reference row over both."""
    _tiny(tmp_path, "hard", 0, 0.2, teacher_scores={"arith": TaskScore(score=0.80, n=500)})
    _tiny(tmp_path, "hard", 1, 0.2, teacher_scores={"arith": TaskScore(score=0.90, n=500)})
    (table,) = leaderboard(tmp_path).tables
    teacher = table.reference(TEACHER)
    assert teacher.evaluations == 2 and teacher.scores["arith"].mean == pytest.approx(85.0)


def test_schema_1_records_are_kept_apart_and_marked_unpinned(tmp_path: Path) -> None:
    old = RunRecord.from_dict(json.loads(COMMITTED_V1.read_text()))
    write_record(old, tmp_path)
    new = make_record("tiny", old.method, old.seed, old.scores, {"train": phase(0.01)})
    new.method_params, new.train_config = old.method_params, old.train_config
    write_record(new, tmp_path)
    board = leaderboard(tmp_path)
    assert board.problems == []
    unpinned, pinned = sorted((t for t in board.tables), key=lambda t: t.pinned)
    assert not unpinned.pinned and unpinned.title == f"tiny [unpinned {unpinned.build}]"
    assert pinned.title == f"tiny [build {pinned.build}]"
    assert unpinned.notes[0].startswith("Unpinned (schema-1 records)")
    assert "pinning (schema-1 records name no weights or data)" in unpinned.notes[1]
    assert unpinned.reference(BEFORE) is None and unpinned.rows[0].gap is None


def test_the_committed_results_build_one_pinned_table_per_build(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parents[1] / "results"
    shutil.copytree(committed / "runs", tmp_path / "runs")
    shutil.copytree(committed / "samples", tmp_path / "samples")
    board = leaderboard(tmp_path)
    assert board.problems == [] and board.n_records == len(list((committed / "runs").glob("*.json")))
    assert all(table.pinned for table in board.tables)
    for table in board.tables:
        assert table.reference(TEACHER) is not None and table.reference(BEFORE) is not None
        assert all(row.scores["arith"].low is not None for row in table.rows)  # the runs' logs are committed


def _md_table(md: str, pair: str) -> dict[str, dict[str, str]]:
    """The Markdown table of `pair`'s section: row label -> header -> cell text."""
    section = next(part for part in md.split("\n## ") if part.startswith(f"{pair}:"))
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    split = lambda line: [cell.strip() for cell in line.strip("|").split(" | ")]  # noqa: E731
    headers = split(lines[0])
    return {cells[0]: dict(zip(headers, cells, strict=True)) for cells in map(split, lines[1:])}


def test_truncated_rates_show_where_records_count_them(results: Path) -> None:
    """hard's two seeds and the teacher's evaluation count budget-hit completions: the tiny table gets a
    truncated column (hard: the mean over those seeds, with n; rows without it: –), csv and LaTeX columns too; the
    qwen table, whose records predate the count, renders without one."""
    records, _ = load_records(results)
    for record in (r for r in records if r.pair == "tiny"):
        record.teacher_scores["arith"].metrics = {TRUNCATED: 0.05}  # one evaluation, shared by every run
        if record.method == "hard":
            record.scores["arith"].metrics = {
                "exact_match": record.scores["arith"].score,
                TRUNCATED: 0.1 + record.seed / 10,
            }
        write_record(record, results)
    build_leaderboard(results)
    md = (results / "leaderboard.md").read_text()
    tiny, qwen = _md_table(md, "tiny"), _md_table(md, "qwen")
    assert tiny["hard"]["arith truncated"] == "15.0" and tiny["soft"]["arith truncated"] == "–"
    assert tiny["teacher (reference)"]["arith truncated"] == "5.0"
    assert tiny["student before distillation (reference)"]["arith truncated"] == "–"
    assert not any("truncated" in name for name in qwen["gkd"])
    assert md.count(TRUNCATION_NOTE) == 1
    rows = list(csv.DictReader((results / "leaderboard.csv").open()))
    hard = next(r for r in rows if (r["pair"], r["label"]) == ("tiny", "hard"))
    assert (float(hard["arith_truncated_mean"]), hard["arith_truncated_n"]) == (15.0, "2")
    teacher = next(r for r in rows if (r["pair"], r["role"]) == ("tiny", "teacher"))
    assert float(teacher["arith_truncated_mean"]) == 5.0 and teacher["gap_recovered_mean"] == ""
    assert all(r["gsm8k_truncated_mean"] == "" for r in rows)
    tex = leaderboard_latex(results)
    assert "arith truncated \\%" in tex and "& $15.0$ &" in tex


def test_a_seed_without_the_count_shows_as_fewer_values(tmp_path: Path) -> None:
    old = make_record("tiny", "hard", 0, {"arith": TaskScore(score=0.2, n=10)}, {"train": phase(0.01)})
    new = make_record(
        "tiny", "hard", 1, {"arith": TaskScore(score=0.3, n=10, metrics={TRUNCATED: 0.5})}, {"train": phase(0.01)}
    )
    for record in (old, new):
        write_record(record, tmp_path)
    row = leaderboard(tmp_path).tables[0].rows[0]
    assert row.truncated["arith"].mean == 50.0 and row.truncated["arith"].n == 1
    assert "| 50.0 (n=1) |" in render_markdown(leaderboard(tmp_path))


def test_the_committed_leaderboard_is_rebuilt_byte_for_byte_from_the_committed_records(tmp_path: Path) -> None:
    """The committed md, csv, html and plots come back as they are from the committed records (some of which
    predate the truncated count: that column shows how many seeds had it)."""
    committed = Path(__file__).resolve().parents[1] / "results"
    for folder in ("runs", "samples"):
        shutil.copytree(committed / folder, tmp_path / folder)
    rebuilt = build_leaderboard(tmp_path)
    assert {p.relative_to(tmp_path): p.read_bytes() for p in rebuilt} == {
        p.relative_to(tmp_path): (committed / p.relative_to(tmp_path)).read_bytes() for p in rebuilt
    }


@pytest.mark.parametrize("content", ["[]", "null", '"x"', "7"])
def test_a_record_file_that_is_not_an_object_does_not_stop_the_leaderboard(results: Path, content: str) -> None:
    (results / "runs" / "odd.json").write_text(content)
    paths = build_leaderboard(results)
    assert results / "leaderboard.md" in paths
    assert "- odd.json: skipped (the file holds" in (results / "leaderboard.md").read_text()
    assert _row(leaderboard(results), "tiny", "hybrid").seeds == 2


@pytest.mark.parametrize(("field", "value"), [("score", 1e308), ("score", -5), ("n", -3)])
def test_an_out_of_range_score_is_skipped_and_the_leaderboard_written(results: Path, field: str, value) -> None:
    good = json.loads(next(iter(sorted((results / "runs").glob("tiny-hybrid-*.json")))).read_text())
    scores = {"arith": good["scores"]["arith"] | {field: value}}
    (results / "runs" / "huge.json").write_text(json.dumps(good | {"run_id": "huge", "scores": scores}))
    build_leaderboard(results)
    (problem,) = [p for p in leaderboard(results).problems if p.startswith("huge.json")]
    assert f"scores['arith'].{field}" in problem
    assert "- huge.json: skipped" in (results / "leaderboard.md").read_text()


def test_a_record_with_a_string_seed_is_not_a_second_seed(results: Path) -> None:
    good = json.loads(next(iter(sorted((results / "runs").glob("tiny-hybrid-*.json")))).read_text())
    (results / "runs" / "zero.json").write_text(json.dumps(good | {"run_id": "zero", "seed": "zero"}))
    board = leaderboard(results)
    assert _row(board, "tiny", "hybrid").seeds == 2
    assert any(p.startswith("zero.json: skipped (seed must be an integer") for p in board.problems)


def test_a_row_with_a_record_from_uncommitted_code_is_marked(results: Path) -> None:
    path = next(p for p in (results / "runs").glob("tiny-hard-*.json"))
    record = json.loads(path.read_text())
    record["environment"]["code_version"] += "+dirty"
    path.write_text(json.dumps(record))
    build_leaderboard(results)
    md = (results / "leaderboard.md").read_text()
    marked = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "†" in line]
    assert marked == ["hard †"]
    assert "made from code with uncommitted changes" in md

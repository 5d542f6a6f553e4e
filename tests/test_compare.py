"""Comparisons paired by seed: known answers on constructed cases (paired, Welch, against an exact reference),
doc_id joins, verdicts, the minimum detectable difference, builds kept apart, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from harness.compare import EXACT, PAIRED, UNPAIRED, compare, comparison_table
from harness.records import write_record
from harness.results.estimates import Row, leaderboard
from harness.results.groups import group_runs
from harness.results.store import usable_records
from harness.stats import detectable_difference
from kdcore.errors import HarnessError
from kdcore.scores import TaskScore
from tests.fake_records import make_record, phase, write_fake_results, write_samples
from tests.test_records import COMMITTED_V1


def _record(results: Path, method: str, seed: int, doc_scores: dict[int, float], build: str = "a"):
    record = make_record("tiny", method, seed, {}, {"train": phase(0.01)}, build=build)
    ids = list(doc_scores)
    rel = write_samples(results, record.run_id, "arith", np.array([doc_scores[d] for d in ids]), ids)
    record.scores["arith"] = TaskScore(score=float(np.mean(list(doc_scores.values()))), n=len(ids), samples=rel)
    write_record(record, results)


def test_compare_pairs_seeds_and_problems_on_doc_id(tmp_path: Path) -> None:
    docs = range(100)
    # reference: seed 0 solves even docs, seed 1 docs divisible by 4, seed 2 docs divisible by 5
    ref = {seed: [float(d % k == 0) for d in docs] for seed, k in ((0, 2), (1, 4), (2, 5))}
    for seed, scores in ref.items():
        _record(tmp_path, "ref", seed, dict(zip(docs, scores, strict=True)))
    # method: seed s solves the reference's problems plus the first 40 + 2 s; logged in reverse order for seed 0,
    # with problems the reference never saw
    new = {seed: [max(v, float(d < 40 + 2 * seed)) for d, v in zip(docs, ref[seed], strict=True)] for seed in ref}
    _record(tmp_path, "new", 0, {**dict(zip(reversed(docs), reversed(new[0]), strict=True)), 500: 1.0, 501: 1.0})
    for seed in (1, 2):
        _record(tmp_path, "new", seed, dict(zip(docs, new[seed], strict=True)))

    (result,) = compare(tmp_path, "tiny", ["ref", "new"])
    assert (result.task, result.reference, result.method, result.n_docs) == ("arith", "ref", "new", 100)
    assert (result.reference_seeds, result.method_seeds, result.pairing) == (3, 3, PAIRED)
    per_seed = np.array([np.mean(new[s]) - np.mean(ref[s]) for s in ref])  # the paired differences
    half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert result.diff == pytest.approx(per_seed.mean())
    assert (result.low, result.high) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    assert result.detectable == pytest.approx(detectable_difference(per_seed.std(ddof=1) / math.sqrt(3), 2))
    # unpaired, the seeds' own spread (25 points between seed 0 and seed 1 of `ref`) would swamp the difference
    ref_means, new_means = [np.mean(ref[s]) for s in ref], [np.mean(new[s]) for s in ref]
    welch = stats.ttest_ind(new_means, ref_means, equal_var=False).confidence_interval()
    assert result.high - result.low < welch.high - welch.low
    assert result.significant and result.verdict == "method better"


def test_rows_with_other_seeds_are_compared_unpaired_and_one_seed_has_no_interval(tmp_path: Path) -> None:
    for seed, score in ((0, 0.5), (1, 0.6), (2, 0.7)):
        _record(tmp_path, "ref", seed, dict.fromkeys(range(10), score))
    for seed, score in ((3, 0.55), (4, 0.65)):
        _record(tmp_path, "new", seed, dict.fromkeys(range(10), score))
    _record(tmp_path, "one", 0, dict.fromkeys(range(10), 0.9))
    for seed, score in ((1, 0.7), (2, 0.9), (3, 0.1)):
        _record(tmp_path, "some", seed, dict.fromkeys(range(10), score))
    unpaired, single, shared = compare(tmp_path, "tiny", ["ref", "new", "one", "some"])
    assert (shared.pairing, shared.reference_seeds, shared.method_seeds) == (PAIRED, 2, 2)  # seeds 1 and 2
    assert (shared.reference_score, shared.method_score) == pytest.approx((0.65, 0.8))
    assert shared.diff == pytest.approx(0.15) and shared.low is not None
    expected = stats.ttest_ind([0.55, 0.65], [0.5, 0.6, 0.7], equal_var=False).confidence_interval()
    assert unpaired.pairing == UNPAIRED
    assert (unpaired.low, unpaired.high) == pytest.approx((expected.low, expected.high))
    assert unpaired.verdict == "cannot be told apart" and not unpaired.significant
    assert single.pairing == UNPAIRED and single.low is None and single.detectable is None
    assert single.verdict == "no interval (one seed)"


def test_compare_never_mixes_builds(tmp_path: Path) -> None:
    """Runs of two builds of one pair name: compare asks which build, and compares within the one named."""
    for build, score in (("a", 0.0), ("b", 1.0)):
        _record(tmp_path, "ref", 0, dict.fromkeys(range(20), score), build)
        _record(tmp_path, "new", 0, dict.fromkeys(range(20), 1.0), build)
    with pytest.raises(HarnessError, match=r"pair 'tiny' has runs of 2 builds .*pick one: tiny@\w{6}, tiny@\w{6}"):
        compare(tmp_path, "tiny", ["ref", "new"])
    builds = sorted({g.build for g in group_runs(usable_records(tmp_path)[0])})
    diffs = {b: compare(tmp_path, f"tiny@{b}", ["ref", "new"])[0].diff for b in builds}
    assert sorted(diffs.values()) == [0.0, 1.0]
    with pytest.raises(HarnessError, match="unknown build of pair 'tiny' 'zzz'"):
        compare(tmp_path, "tiny@zzz", ["ref", "new"])


def test_compare_fake_results_each_against_the_first_or_all_pairs(tmp_path: Path) -> None:
    write_fake_results(tmp_path)
    firsts = compare(tmp_path, "tiny", ["hybrid", "soft", "hard", "gkd"])
    assert [(c.method, c.reference) for c in firsts] == [("soft", "hybrid"), ("hard", "hybrid"), ("gkd", "hybrid")]
    assert all(c.n_docs == 200 and c.low <= c.diff <= c.high for c in firsts)
    everything = compare(tmp_path, "tiny", ["hybrid", "soft", "hard"], all_pairs=True)
    assert [(c.reference, c.method) for c in everything] == [("hybrid", "soft"), ("hybrid", "hard"), ("soft", "hard")]


def test_comparison_table_renders_percentage_points(tmp_path: Path) -> None:
    write_fake_results(tmp_path)
    comparisons = compare(tmp_path, "tiny", ["hybrid", "gkd"])
    console = Console(record=True, width=160)
    console.print(comparison_table(comparisons, "tiny"))
    text = console.export_text()
    c = comparisons[0]
    assert "gkd (2 seeds)" in text and "hybrid (2 seeds)" in text
    assert f"{100 * c.diff:+.1f}" in text
    assert f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}]" in text
    assert f"{100 * c.detectable:.1f}" in text and c.verdict in text


def test_compare_errors_name_the_bad_value(tmp_path: Path) -> None:
    write_fake_results(tmp_path)
    with pytest.raises(HarnessError, match=r"unknown method 'nope'; valid choices: gkd, hard, hybrid, soft"):
        compare(tmp_path, "tiny", ["hybrid", "nope"])
    with pytest.raises(HarnessError, match=r"unknown pair 'big'; valid choices: qwen, tiny"):
        compare(tmp_path, "big", ["hybrid", "gkd"])
    with pytest.raises(HarnessError, match="at least two methods"):
        compare(tmp_path, "tiny", ["hybrid"])
    with pytest.raises(HarnessError, match=r"unknown task \(scored for every method\) 'gsm8k'; valid choices: arith"):
        compare(tmp_path, "tiny", ["hybrid", "gkd"], tasks=["gsm8k"])
    with pytest.raises(HarnessError, match="no per-sample log"):
        compare(tmp_path, "qwen", ["gkd", "hybrid (alpha=0.5)"])
    next((tmp_path / "samples").glob("tiny-gkd-s0-*/arith.jsonl")).unlink()
    with pytest.raises(HarnessError, match=r"per-sample log not found: .*arith\.jsonl"):
        compare(tmp_path, "tiny", ["hybrid", "gkd"])


def test_compare_against_the_reference_evaluations(tmp_path: Path) -> None:
    """`student-before` and `teacher` are the build's own evaluations: a method's paired gain over the student."""
    write_fake_results(tmp_path)
    gain, short = compare(tmp_path, "tiny", ["student-before", "hybrid", "teacher"], all_pairs=True)[:2]
    assert (gain.reference, gain.method, gain.n_docs, gain.reference_seeds) == ("student-before", "hybrid", 200, 1)
    assert gain.reference_score == pytest.approx(0.12) and gain.diff == pytest.approx(0.31 - 0.12)
    assert gain.significant and gain.low > 0 and gain.pairing == EXACT
    hybrid = [r.scores["arith"].score for r in usable_records(tmp_path)[0] if r.method == "hybrid" and r.pair == "tiny"]
    expected = stats.ttest_1samp(np.array(hybrid) - 0.12, 0.0).confidence_interval()
    assert (gain.low, gain.high) == pytest.approx((expected.low, expected.high))
    assert short.method == "teacher" and short.diff == pytest.approx(0.68 - 0.12)
    with pytest.raises(HarnessError, match="no student-before scores"):
        old = tmp_path / "old"
        record = json.loads(COMMITTED_V1.read_text())
        (old / "runs").mkdir(parents=True)
        (old / "runs" / "r.json").write_text(json.dumps(record))
        compare(old, "tiny", ["student-before", "hybrid (weighting=static)"])


def _tiny_rows(results: Path) -> list[Row]:
    return next(t for t in leaderboard(results).tables if t.pair == "tiny").rows


def test_a_rows_id_names_it_in_compare_and_survives_new_settings(tmp_path: Path) -> None:
    """The leaderboard's `id` picks a row whatever its label; adding another setting of the method renames the row's
    label (the settings that differ) but not its id, and its method name then stops being enough."""
    write_fake_results(tmp_path)
    rows = {row.label: row.group.key for row in _tiny_rows(tmp_path)}
    (by_name,) = compare(tmp_path, "tiny", ["gkd", "hybrid"])
    (by_id,) = compare(tmp_path, "tiny", [rows["gkd"], rows["hybrid"]])
    assert (by_id.reference, by_id.method, by_id.diff) == ("gkd", "hybrid", by_name.diff)
    for seed in (7, 8):  # seeds the fixture has not used: the fixed run ids differ
        record = make_record("tiny", "hybrid", seed, {"arith": TaskScore(score=0.5, n=200)}, {"train": phase(0.01)})
        record.method_params = {"temperature": 2.0}
        write_record(record, tmp_path)
    after = {row.group.key: row.label for row in _tiny_rows(tmp_path)}
    assert after[rows["hybrid"]] == "hybrid (temperature=1.0)" and after[rows["gkd"]] == "gkd"
    with pytest.raises(HarnessError, match=rf"several settings on pair 'tiny'; pick one by id: .*{rows['hybrid']}"):
        compare(tmp_path, "tiny", ["gkd", "hybrid"])
    (again,) = compare(tmp_path, "tiny", [rows["gkd"], rows["hybrid"]])
    assert again.diff == by_id.diff


def test_the_readme_s_compare_examples_run_on_the_shipped_results(monkeypatch, capsys) -> None:
    """Every `harness compare` example in the README works on the committed tiny records, and naming a method
    with several settings there is one line listing their ids."""
    import re
    import sys

    from harness.cli import main

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    examples = re.findall(r"`harness compare --pair (?:P\[@BUILD\]|tiny) --methods ([^`\s]+)`", readme)
    assert examples
    monkeypatch.chdir(root)
    for methods in examples:
        monkeypatch.setattr(sys, "argv", ["harness", "compare", "--pair", "tiny", "--methods", methods])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code in (0, None), (methods, capsys.readouterr().err)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["harness", "compare", "--pair", "tiny", "--methods", "soft,hybrid"])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1 and "91b42934" in err and "c5e9bf30" in err

"""Paired bootstrap over problems and seeds: known answers on constructed cases, seed resampling, doc_id joins,
builds kept apart, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import harness.bootstrap
import harness.leaderboard
from harness.bootstrap import Series, bootstrap_interval, bootstrap_means, percentile_interval
from harness.compare import compare, comparison_table
from harness.records import write_record
from kdcore.errors import HarnessError
from kdcore.scores import TaskScore
from tests.fake_records import make_record, phase, write_fake_results, write_samples
from tests.test_records import COMMITTED_V1


def test_constant_difference_gives_a_zero_width_interval() -> None:
    low, high = bootstrap_interval(np.full(50, 0.25), n_boot=2000)
    assert low == pytest.approx(0.25, abs=1e-12)
    assert high == pytest.approx(0.25, abs=1e-12)


def test_symmetric_differences_give_an_interval_around_zero() -> None:
    diffs = np.array([-1.0, 0.0, 1.0] * 40)
    low, high = bootstrap_interval(diffs, n_boot=4000)
    assert low < 0 < high
    assert abs(low + high) < 0.1 * (high - low)


def test_interval_matches_the_normal_approximation_on_a_large_sample() -> None:
    diffs = np.random.default_rng(7).normal(0.1, 1.0, size=4000)
    half = 1.959964 * diffs.std(ddof=1) / math.sqrt(len(diffs))
    low, high = bootstrap_interval(diffs, n_boot=10000, seed=3)
    assert low == pytest.approx(diffs.mean() - half, abs=0.08 * half)
    assert high == pytest.approx(diffs.mean() + half, abs=0.08 * half)


def test_interval_is_reproducible_for_a_seed_and_independent_of_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    diffs = np.random.default_rng(0).integers(-1, 2, size=3000).astype(float)
    whole = bootstrap_interval(diffs, n_boot=2000, seed=5)
    assert whole == bootstrap_interval(diffs, n_boot=2000, seed=5)
    assert whole != bootstrap_interval(diffs, n_boot=2000, seed=6)
    monkeypatch.setattr(harness.bootstrap, "BOOT_CELLS", 7 * len(diffs))  # 7 resamples per chunk
    assert bootstrap_interval(diffs, n_boot=2000, seed=5) == whole
    with pytest.raises(ValueError):
        bootstrap_interval(np.array([]))


def _record(results: Path, method: str, seed: int, doc_scores: dict[int, float], build: str = "a"):
    record = make_record("tiny", method, seed, {}, {"train": phase(0.01)}, build=build)
    ids = list(doc_scores)
    rel = write_samples(results, record.run_id, "arith", np.array([doc_scores[d] for d in ids]), ids)
    record.scores["arith"] = TaskScore(score=float(np.mean(list(doc_scores.values()))), n=len(ids), samples=rel)
    write_record(record, results)


def test_compare_resamples_seeds_and_pairs_problems_on_doc_id(tmp_path: Path) -> None:
    docs = range(100)
    # reference: seed 0 solves even docs, seed 1 docs divisible by 4
    ref0, ref1 = [float(d % 2 == 0) for d in docs], [float(d % 4 == 0) for d in docs]
    _record(tmp_path, "ref", 0, dict(zip(docs, ref0, strict=True)))
    _record(tmp_path, "ref", 1, dict(zip(docs, ref1, strict=True)))
    # method: solves everything, logged in reverse order, plus problems the reference never saw
    _record(tmp_path, "new", 0, {d: 1.0 for d in [*reversed(docs), 500, 501]})
    _record(tmp_path, "new", 1, {d: 1.0 for d in docs})
    pooled_ref = (np.array(ref0) + np.array(ref1)) / 2

    (result,) = compare(tmp_path, "tiny", ["ref", "new"], n_boot=2000)
    assert (result.task, result.reference, result.method, result.n_docs) == ("arith", "ref", "new", 100)
    assert (result.reference_seeds, result.method_seeds) == (2, 2)
    assert result.reference_score == pytest.approx(pooled_ref.mean())
    assert result.method_score == pytest.approx(1.0)
    assert result.diff == pytest.approx(1.0 - pooled_ref.mean())
    assert result.low < result.diff < result.high
    assert result.significant
    # the same resampling done by hand: problems shared by both methods, seeds drawn together (same seeds)
    series = [Series((0, 1), {"arith": np.array([ref0, ref1])}), Series((0, 1), {"arith": np.ones((2, 100))})]
    means = bootstrap_means(series, ["arith"], n_boot=2000, seed=0)
    assert (result.low, result.high) == pytest.approx(percentile_interval(means[:, 1, 0] - means[:, 0, 0]))
    # resampling the seeds widens the interval over pooling them: seed 0 and seed 1 of `ref` differ by 25 points
    pooled = bootstrap_interval(1.0 - pooled_ref, n_boot=2000)
    assert result.high - result.low > pooled[1] - pooled[0]


def test_seed_resampling_draws_whole_runs() -> None:
    """Two runs, one solving everything and one nothing: each resample's mean is 0, 1/2 or 1 (runs drawn whole),
    in the binomial proportions 1/4, 1/2, 1/4; problems alone would give no spread at all."""
    series = [Series(("s0", "s1"), {"t": np.array([np.ones(40), np.zeros(40)])})]
    means = bootstrap_means(series, ["t"], n_boot=4000, seed=1)[:, 0, 0]
    values, counts = np.unique(means, return_counts=True)
    assert list(values) == [0.0, 0.5, 1.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


def test_series_with_the_same_seeds_are_paired_on_seeds() -> None:
    """B = A + 0.1 run by run: paired on seeds (same seeds) the difference never varies; with other seeds it does."""
    a = np.array([np.ones(30), np.zeros(30)])
    b = a + 0.1
    paired = bootstrap_means([Series((0, 1), {"t": a}), Series((0, 1), {"t": b})], ["t"], n_boot=500)
    assert np.allclose(paired[:, 1, 0] - paired[:, 0, 0], 0.1)
    unpaired = bootstrap_means([Series((0, 1), {"t": a}), Series((2, 3), {"t": b})], ["t"], n_boot=500)
    assert np.std(unpaired[:, 1, 0] - unpaired[:, 0, 0]) > 0.1


def test_bootstrap_means_reject_misaligned_series() -> None:
    with pytest.raises(ValueError, match="same 3 problems"):
        bootstrap_means([Series((0,), {"t": np.ones((1, 3))}), Series((0,), {"t": np.ones((1, 4))})], ["t"], n_boot=5)


def test_compare_never_mixes_builds(tmp_path: Path) -> None:
    """Runs of two builds of one pair name: compare asks which build, and compares within the one named."""
    for build, score in (("a", 0.0), ("b", 1.0)):
        _record(tmp_path, "ref", 0, dict.fromkeys(range(20), score), build)
        _record(tmp_path, "new", 0, dict.fromkeys(range(20), 1.0), build)
    with pytest.raises(HarnessError, match=r"pair 'tiny' has runs of 2 builds .*pick one: tiny@\w{6}, tiny@\w{6}"):
        compare(tmp_path, "tiny", ["ref", "new"], n_boot=100)
    builds = sorted({g.build for g in harness.leaderboard.group_runs(harness.leaderboard.usable_records(tmp_path)[0])})
    diffs = {b: compare(tmp_path, f"tiny@{b}", ["ref", "new"], n_boot=100)[0].diff for b in builds}
    assert sorted(diffs.values()) == [0.0, 1.0]
    with pytest.raises(HarnessError, match="unknown build of pair 'tiny' 'zzz'"):
        compare(tmp_path, "tiny@zzz", ["ref", "new"])


def test_compare_fake_results_each_against_the_first_or_all_pairs(tmp_path: Path) -> None:
    write_fake_results(tmp_path)
    firsts = compare(tmp_path, "tiny", ["hybrid", "soft", "hard", "gkd"], n_boot=500)
    assert [(c.method, c.reference) for c in firsts] == [("soft", "hybrid"), ("hard", "hybrid"), ("gkd", "hybrid")]
    assert all(c.n_docs == 200 and c.low <= c.diff <= c.high for c in firsts)
    everything = compare(tmp_path, "tiny", ["hybrid", "soft", "hard"], n_boot=500, all_pairs=True)
    assert [(c.reference, c.method) for c in everything] == [("hybrid", "soft"), ("hybrid", "hard"), ("soft", "hard")]


def test_comparison_table_renders_percentage_points(tmp_path: Path) -> None:
    write_fake_results(tmp_path)
    comparisons = compare(tmp_path, "tiny", ["hybrid", "gkd"], n_boot=500)
    console = Console(record=True, width=160)
    console.print(comparison_table(comparisons, "tiny"))
    text = console.export_text()
    c = comparisons[0]
    assert "gkd (2 seeds)" in text and "hybrid (2 seeds)" in text
    assert f"{100 * c.diff:+.1f}" in text
    assert f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}]" in text


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
    gain, short = compare(tmp_path, "tiny", ["student-before", "hybrid", "teacher"], n_boot=500, all_pairs=True)[:2]
    assert (gain.reference, gain.method, gain.n_docs, gain.reference_seeds) == ("student-before", "hybrid", 200, 1)
    assert gain.reference_score == pytest.approx(0.12) and gain.diff == pytest.approx(0.31 - 0.12)
    assert gain.significant and gain.low > 0
    assert short.method == "teacher" and short.diff == pytest.approx(0.68 - 0.12)
    with pytest.raises(HarnessError, match="no student-before scores"):
        old = tmp_path / "old"
        record = json.loads(COMMITTED_V1.read_text())
        (old / "runs").mkdir(parents=True)
        (old / "runs" / "r.json").write_text(json.dumps(record))
        compare(old, "tiny", ["student-before", "hybrid (weighting=static)"])

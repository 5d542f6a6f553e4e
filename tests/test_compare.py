"""Paired bootstrap comparisons: known answers on constructed cases, seed pooling, doc_id joins, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import harness.compare
from harness.compare import bootstrap_interval, compare, comparison_table
from harness.records import write_record
from kdcore.errors import HarnessError
from kdcore.scores import TaskScore
from tests.fake_records import make_record, phase, write_fake_results, write_samples


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
    monkeypatch.setattr(harness.compare, "BOOT_CELLS", 7 * len(diffs))  # 7 resamples per chunk
    assert bootstrap_interval(diffs, n_boot=2000, seed=5) == whole
    with pytest.raises(ValueError):
        bootstrap_interval(np.array([]))


def _record(results: Path, method: str, seed: int, doc_scores: dict[int, float]):
    record = make_record("tiny", method, seed, {}, {"train": phase(0.01)})
    ids = list(doc_scores)
    rel = write_samples(results, record.run_id, "arith", np.array([doc_scores[d] for d in ids]), ids)
    record.scores["arith"] = TaskScore(score=float(np.mean(list(doc_scores.values()))), n=len(ids), samples=rel)
    write_record(record, results)


def test_compare_pools_seeds_then_pairs_problems_on_doc_id(tmp_path: Path) -> None:
    docs = range(100)
    # reference: seed 0 solves even docs, seed 1 docs divisible by 4 -> pooled 1, 0.5 or 0 per doc
    _record(tmp_path, "ref", 0, {d: float(d % 2 == 0) for d in docs})
    _record(tmp_path, "ref", 1, {d: float(d % 4 == 0) for d in docs})
    # method: solves everything, logged in reverse order, plus problems the reference never saw
    _record(tmp_path, "new", 0, {d: 1.0 for d in [*reversed(docs), 500, 501]})
    _record(tmp_path, "new", 1, {d: 1.0 for d in docs})
    pooled_ref = np.array([(float(d % 2 == 0) + float(d % 4 == 0)) / 2 for d in docs])

    (result,) = compare(tmp_path, "tiny", ["ref", "new"], n_boot=2000)
    assert (result.task, result.reference, result.method, result.n_docs) == ("arith", "ref", "new", 100)
    assert (result.reference_seeds, result.method_seeds) == (2, 2)
    assert result.reference_score == pytest.approx(pooled_ref.mean())
    assert result.method_score == pytest.approx(1.0)
    assert result.diff == pytest.approx(1.0 - pooled_ref.mean())
    assert result.low < result.diff < result.high
    assert result.significant
    assert (result.low, result.high) == pytest.approx(bootstrap_interval(1.0 - pooled_ref, n_boot=2000))


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

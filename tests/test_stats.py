"""Intervals over seeds: coverage by simulation at 3-5 seeds (against the percentile bootstrap over seeds), known
values, pairing, and the minimum detectable difference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.stats import (
    constant_difference,
    detectable_difference,
    mean_interval,
    paired_difference,
    two_row_detectable,
    welch_difference,
)

TRIALS = 4000
RESAMPLES = 400
PROBLEMS = 500


def _seed_scores(rng: np.random.Generator, trials: int, seeds: int) -> tuple[np.ndarray, float]:
    """Simulated runs like the tiny pair's: each seed's true accuracy ~ Beta with mean 0.65 and SD about 0.1 (the
    committed records' seed spread), scored on PROBLEMS problems; returns (trials x seeds) scores and the mean."""
    a, b = 13.0, 7.0
    accuracy = rng.beta(a, b, size=(trials, seeds))
    return rng.binomial(PROBLEMS, accuracy) / PROBLEMS, a / (a + b)


def _t_coverage(scores: np.ndarray, truth: float) -> float:
    n = scores.shape[1]
    half = stats.t.ppf(0.975, n - 1) * scores.std(axis=1, ddof=1) / math.sqrt(n)
    return float(np.mean(np.abs(scores.mean(axis=1) - truth) <= half))


def _bootstrap_coverage(scores: np.ndarray, truth: float, rng: np.random.Generator) -> float:
    """Coverage of the 95% percentile bootstrap that resamples the seeds with replacement."""
    trials, n = scores.shape
    draws = rng.integers(0, n, size=(trials, RESAMPLES, n))
    means = np.take_along_axis(scores[:, None, :], draws, axis=2).mean(axis=2)
    low, high = np.percentile(means, [2.5, 97.5], axis=1)
    return float(np.mean((low <= truth) & (truth <= high)))


@pytest.mark.parametrize("seeds", [3, 4, 5])
def test_t_interval_covers_at_small_n_and_the_seed_bootstrap_does_not(seeds: int) -> None:
    rng = np.random.default_rng(seeds)
    scores, truth = _seed_scores(rng, TRIALS, seeds)
    t_cover = _t_coverage(scores, truth)
    boot_cover = _bootstrap_coverage(scores, truth, rng)
    print(f"{seeds} seeds: t interval covers {t_cover:.3f}, percentile bootstrap over seeds {boot_cover:.3f}")
    assert 0.93 <= t_cover <= 0.97
    assert boot_cover < 0.90
    one = mean_interval(scores[0])
    assert one.low == pytest.approx(scores[0].mean() - stats.t.ppf(0.975, seeds - 1) * stats.sem(scores[0]))


def test_paired_differences_cover_where_seeds_share_luck() -> None:
    """Two methods run with the same seeds share each seed's luck: the paired interval covers the true difference
    at 95% and is narrower than Welch's on the same runs."""
    rng = np.random.default_rng(7)
    luck = rng.normal(0, 10, size=(TRIALS, 4))
    a = 60 + luck + rng.normal(0, 2, size=luck.shape)
    b = 63 + luck + rng.normal(0, 2, size=luck.shape)
    d = b - a
    half = stats.t.ppf(0.975, 3) * d.std(axis=1, ddof=1) / 2
    assert 0.93 <= np.mean(np.abs(d.mean(axis=1) - 3) <= half) <= 0.97
    paired = paired_difference(dict(enumerate(a[0])), dict(enumerate(b[0])))
    welch = welch_difference(a[0], b[0])
    assert paired.mean == pytest.approx(welch.mean)
    assert paired.high - paired.low < welch.high - welch.low


def test_known_values() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (interval.low, interval.high, interval.df) == pytest.approx((2 - half, 2 + half, 2))
    assert mean_interval([5.0]).low is None and mean_interval([5.0]).detectable() is None
    constant = mean_interval([4.0, 4.0, 4.0])
    assert (constant.low, constant.high, constant.detectable()) == (4.0, 4.0, 0.0)
    assert constant_difference(1.0, [2.0, 3.0, 4.0]).mean == pytest.approx(2.0)
    only = paired_difference({0: 1.0, 1: 2.0, 2: 9.0}, {0: 2.0, 1: 4.0, 3: 0.0})
    assert (only.mean, only.n) == (1.5, 2)
    assert welch_difference([1.0], [2.0, 3.0]).low is None
    with pytest.raises(ValueError):
        paired_difference({0: 1.0}, {1: 1.0})


def test_detectable_difference_is_the_power_point() -> None:
    """At the minimum detectable difference a two-sided 5% t test has power 0.8 (checked by simulation), and with
    many degrees of freedom it tends to (z_0.975 + z_0.8) x se."""
    assert detectable_difference(1.0, 10_000) == pytest.approx(1.959964 + 0.841621, rel=1e-3)
    se, n = 2.0, 5
    mdd = detectable_difference(se, n - 1)
    rng = np.random.default_rng(1)
    x = rng.normal(mdd, se * math.sqrt(n), size=(20000, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)) == pytest.approx(0.8, abs=0.02)
    assert detectable_difference(1.0, 2) > detectable_difference(1.0, 4)
    assert two_row_detectable([1.0]) is None
    assert two_row_detectable([1.0, 3.0]) == pytest.approx(detectable_difference(math.sqrt(2), 2))

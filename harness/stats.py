"""Intervals over seeds that hold at 3-5 seeds, and the smallest difference a number of seeds can detect.

The unit is one run's score (the mean over a benchmark's problems, the same problems for every run), so an interval
says how far the mean over seeds can move with the luck of the seed, on those problems. Intervals are Student t
intervals: `mean_interval` over one row's values, `paired_difference` over the per-seed differences of two rows
run with the same seeds, `welch_difference` (Welch-Satterthwaite degrees of freedom) for rows with different seeds.
A row with one value has no interval. A value known exactly (a deterministic reference evaluation) enters a
difference as a constant.

Minimum detectable difference (`detectable_difference`): the smallest true difference that a two-sided t test at
alpha = 1 - LEVEL detects with probability POWER, given the standard error and degrees of freedom the seeds give
(noncentral t, with the observed standard deviation taken as the true one).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, stats

LEVEL = 0.95
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference) over `n` values with its t interval; `low`, `high`, `se` and `df` are None when
    the values cannot give one (fewer than two)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    se: float | None = None
    df: float | None = None

    @property
    def excludes_zero(self) -> bool:
        """True when the interval exists and lies on one side of zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def detectable(self) -> float | None:
        """The minimum detectable difference for this interval's standard error and degrees of freedom."""
        return None if self.se is None or self.df is None else detectable_difference(self.se, self.df)


def _t_bounds(mean: float, se: float, df: float, level: float) -> tuple[float, float]:
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return mean - half, mean + half


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The t interval for the mean of `values` (df = n - 1); no interval for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    if x.size < 2:
        return Interval(float(x.mean()), None, None, int(x.size))
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    df = float(x.size - 1)
    low, high = _t_bounds(float(x.mean()), se, df, level)
    return Interval(float(x.mean()), low, high, int(x.size), se, df)


def paired_difference(
    reference: Mapping[Hashable, float], method: Mapping[Hashable, float], level: float = LEVEL
) -> Interval:
    """`method - reference` paired by seed: the t interval of the per-seed differences over the seeds both have."""
    shared = [s for s in method if s in reference]
    if not shared:
        raise ValueError("the two rows share no seed")
    return mean_interval([method[s] - reference[s] for s in shared], level)


def welch_difference(reference: Sequence[float], method: Sequence[float], level: float = LEVEL) -> Interval:
    """`mean(method) - mean(reference)` for rows run with different seeds: Welch's t interval; no interval when a
    side has a single value."""
    a, b = np.asarray(reference, dtype=float), np.asarray(method, dtype=float)
    diff = float(b.mean() - a.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, None, None, int(min(a.size, b.size)))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, int(min(a.size, b.size)), 0.0, float(a.size + b.size - 2))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    low, high = _t_bounds(diff, se, df, level)
    return Interval(diff, low, high, int(min(a.size, b.size)), se, float(df))


def constant_difference(reference: float, method: Sequence[float], level: float = LEVEL) -> Interval:
    """`mean(method) - reference` where the reference is known exactly: the t interval of the method's values
    shifted by the constant."""
    return mean_interval([v - reference for v in method], level)


def _power(noncentrality: float, df: float, critical: float) -> float:
    """P(|T| > critical) for T noncentral t: integrated over the scale sqrt(chi2_df / df), where scipy's nct is
    undefined (large noncentrality at few degrees of freedom)."""

    def density(scale: float) -> float:
        tails = stats.norm.sf(critical * scale - noncentrality) + stats.norm.cdf(-critical * scale - noncentrality)
        return float(tails * stats.chi.pdf(scale * math.sqrt(df), df) * math.sqrt(df))

    return float(integrate.quad(density, 0.0, np.inf, epsabs=1e-12, limit=200)[0])


def detectable_difference(se: float, df: float, *, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided t test at alpha = 1 - `level` detects with probability `power`,
    for an estimate with standard error `se` on `df` degrees of freedom: `se` times the noncentrality at which
    the test's power is `power`."""
    if se < 0 or df <= 0:
        raise ValueError(f"need se >= 0 and df > 0, got se={se}, df={df}")
    if se == 0:
        return 0.0
    critical = float(stats.t.ppf(0.5 + level / 2, df))
    high = critical + 4.0
    while _power(high, df, critical) < power:
        high *= 2
    return se * float(optimize.brentq(lambda nc: _power(nc, df, critical) - power, 0.0, high, xtol=1e-10))


def two_row_detectable(values: Sequence[float], level: float = LEVEL, power: float = POWER) -> float | None:
    """The minimum detectable difference between this row and another row with as many seeds and the same
    spread, unpaired (se = s * sqrt(2 / n), df = 2 (n - 1)); None with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    se = float(x.std(ddof=1) * math.sqrt(2 / x.size))
    return detectable_difference(se, 2.0 * (x.size - 1), level=level, power=power)

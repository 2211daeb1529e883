"""Confidence intervals and paired tests, small and seeded so a report is reproducible.

- proportions (0/1 scores): the Wilson score interval, good at small n and near 0 or 1;
- other means: the percentile bootstrap;
- A/B on the same rows: a paired bootstrap of the mean difference, and the exact two-sided sign
  test on wins against losses (ties dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

from agentbatch.errors import MissingDependencyError

# Resampled values per chunk: bounds the memory of a bootstrap over many rows.
_CHUNK_CELLS = 2_000_000
_EXACT_SIGN_TEST_MAX = 2000


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise MissingDependencyError("numpy", "local") from None
    return numpy


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 0:
        return (math.nan, math.nan)
    z = z_value(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Rounding can put an end a hair past p at 0 or 1; the interval always holds p.
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; none (NaN) from fewer than two values: one value
    says nothing of the spread, and its resamples would all be it, a zero-width "interval"."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    np = _numpy()
    data = np.asarray(values, dtype=float)
    if float(data.min()) == float(data.max()):
        return (float(data.min()), float(data.max()))
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = data[picks].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(low), float(high))


def mean_interval(
    values: Sequence[float],
    *,
    binary: bool,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, str]:
    """(low, high, method) for the mean of `values`."""
    if binary and all(v in (0.0, 1.0) for v in values):
        low, high = wilson_interval(sum(values), len(values), confidence)
        return low, high, "wilson"
    low, high = bootstrap_interval(values, confidence, samples, seed)
    return low, high, "bootstrap"


def sign_test_p_value(wins: int, losses: int) -> float:
    """Exact two-sided binomial test of wins against losses at p = 0.5 (ties excluded)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    if n > _EXACT_SIGN_TEST_MAX:
        # Normal approximation with continuity correction; exact sums get slow past here.
        z = (abs(wins - losses) - 1) / math.sqrt(n)
        return min(1.0, 2.0 * (1.0 - NormalDist().cdf(max(0.0, z))))
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)

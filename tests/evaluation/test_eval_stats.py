"""Intervals and tests against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentbatch.evaluation import stats


def test_wilson_matches_the_formula() -> None:
    low, high = stats.wilson_interval(93, 100, 0.95)
    assert low == pytest.approx(0.8625, abs=1e-4)
    assert high == pytest.approx(0.9657, abs=1e-4)


def test_wilson_at_the_edges() -> None:
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_wider_confidence_gives_a_wider_interval() -> None:
    narrow = stats.wilson_interval(30, 50, 0.8)
    wide = stats.wilson_interval(30, 50, 0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_is_seeded_and_contains_the_mean() -> None:
    values = [float(v % 7) for v in range(200)]
    first = stats.bootstrap_interval(values, seed=3)
    assert first == stats.bootstrap_interval(values, seed=3)
    assert first[0] < sum(values) / len(values) < first[1]
    assert stats.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(end) for end in stats.bootstrap_interval([5.0]))  # no interval


def test_bootstrap_narrows_with_more_rows() -> None:
    small = stats.bootstrap_interval([float(v % 5) for v in range(50)])
    large = stats.bootstrap_interval([float(v % 5) for v in range(5000)])
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5


def test_mean_interval_picks_the_method() -> None:
    assert stats.mean_interval([1.0, 0.0, 1.0], binary=True)[2] == "wilson"
    assert stats.mean_interval([1.0, 0.5, 1.0], binary=True)[2] == "bootstrap"
    assert stats.mean_interval([3.0, 4.0, 5.0], binary=False)[2] == "bootstrap"


def test_sign_test() -> None:
    assert stats.sign_test_p_value(8, 2) == pytest.approx(112 / 1024)
    assert stats.sign_test_p_value(5, 5) == 1.0
    assert stats.sign_test_p_value(0, 0) == 1.0
    assert stats.sign_test_p_value(10, 0) == pytest.approx(2 / 1024)
    # Past the exact range, the normal approximation agrees closely.
    assert stats.sign_test_p_value(1100, 1000) == pytest.approx(0.0310, abs=0.003)


def test_percentile() -> None:
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile([10.0], 95) == 10.0
    assert stats.percentile(list(map(float, range(101))), 95) == 95.0


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_is_a_proper_interval(successes: int, n: int) -> None:
    successes = min(successes, n)
    low, high = stats.wilson_interval(successes, n)
    assert 0.0 <= low <= successes / n <= high <= 1.0

"""Confidence intervals and Welch's test against known values and by simulation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from sublearn.report.stats import mean_ci, welch_difference


def test_mean_ci_known_values() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert ci.mean == pytest.approx(2.0)
    assert (ci.lo, ci.hi) == pytest.approx((2.0 - half, 2.0 + half))
    assert ci.to_dict() == {"mean": ci.mean, "ci95": [ci.lo, ci.hi], "n": 3}


def test_single_value_has_no_interval() -> None:
    ci = mean_ci([0.4])
    assert ci.mean == 0.4 and math.isnan(ci.lo) and math.isnan(ci.hi)


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        mean_ci([])


def test_welch_matches_scipy() -> None:
    a, b = [0.30, 0.35, 0.28, 0.41], [0.10, 0.12, 0.09]
    d = welch_difference(a, b)
    ref: Any = st.ttest_ind(a, b, equal_var=False)
    assert d.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert d.p_value == pytest.approx(ref.pvalue)
    assert d.lo < d.mean < d.hi
    assert d.scaled(100).mean == pytest.approx(100 * d.mean)
    assert d.scaled(100).p_value == d.p_value


def test_interval_coverage_is_nominal() -> None:
    rng = np.random.default_rng(0)
    hits_mean = hits_diff = 0
    trials = 2000
    for _ in range(trials):
        x = rng.normal(1.0, 2.0, size=5)
        y = rng.normal(0.0, 0.5, size=4)
        m = mean_ci(x)
        d = welch_difference(x, y)
        hits_mean += m.lo <= 1.0 <= m.hi
        hits_diff += d.lo <= 1.0 <= d.hi
    assert abs(hits_mean / trials - 0.95) < 0.02
    assert abs(hits_diff / trials - 0.95) < 0.025


def test_constant_groups() -> None:
    same = welch_difference([0.2, 0.2], [0.2, 0.2])
    assert same.mean == 0 and same.p_value == 1.0
    apart = welch_difference([0.3, 0.3], [0.1, 0.1])
    assert apart.p_value == 0.0 and apart.lo == apart.hi == pytest.approx(0.2)

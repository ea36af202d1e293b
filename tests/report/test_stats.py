"""Confidence intervals and Welch's test against known values and by simulation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from sublearn.report.stats import (
    difference_of_differences,
    mean_ci,
    paired_by_seed,
    paired_difference,
    welch_contrast,
    welch_difference,
)


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


# --- paired tests ---------------------------------------------------------------------------


def test_paired_difference_matches_scipy_and_hand_computation() -> None:
    a = [0.30, 0.35, 0.28, 0.41, 0.33]
    b = [0.10, 0.16, 0.09, 0.20, 0.18]
    d = paired_difference(a, b)
    diffs = np.subtract(a, b)
    half = st.t.ppf(0.975, df=4) * diffs.std(ddof=1) / math.sqrt(5)
    ref: Any = st.ttest_rel(a, b)
    assert d.mean == pytest.approx(diffs.mean())
    assert (d.lo, d.hi) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert d.p_value == pytest.approx(ref.pvalue)
    assert (d.n_a, d.n_b, d.test) == (5, 5, "paired")
    assert d.to_dict()["test"] == "paired"


def test_pairing_is_tighter_than_welch_when_seeds_share_data() -> None:
    # A large per-seed data effect shared by both conditions: only pairing removes it.
    shared = np.array([0.0, 0.2, 0.4, 0.6])
    a, b = shared + np.array([0.11, 0.10, 0.12, 0.11]), shared
    assert paired_difference(a, b).p_value < 0.001
    assert welch_difference(a, b).p_value > 0.3


def test_paired_difference_edge_cases() -> None:
    one = paired_difference([0.4], [0.1])
    assert one.mean == pytest.approx(0.3)
    assert math.isnan(one.lo) and math.isnan(one.hi) and math.isnan(one.p_value)
    tie = paired_difference([0.3, 0.5], [0.1, 0.3])
    assert tie.p_value == 0.0 and tie.lo == tie.hi == tie.mean == pytest.approx(0.2)
    none = paired_difference([0.3, 0.5], [0.3, 0.5])
    assert none.p_value == 1.0 and none.mean == 0.0
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_difference([], [])


def test_paired_by_seed_pairs_or_falls_back_to_welch() -> None:
    a, b = {0: 0.3, 1: 0.5, 2: 0.4}, {2: 0.2, 0: 0.1, 1: 0.35}
    paired = paired_by_seed(a, b)
    assert paired.test == "paired" and not paired.note
    assert paired.p_value == pytest.approx(st.ttest_rel([0.3, 0.5, 0.4], [0.1, 0.35, 0.2]).pvalue)
    b.pop(2)
    welch = paired_by_seed(a, b)
    assert welch.test == "welch" and "do not pair" in welch.note
    assert welch.p_value == pytest.approx(welch_difference([0.3, 0.5, 0.4], [0.1, 0.35]).p_value)


def test_welch_contrast_of_two_groups_is_welch() -> None:
    a, b = [0.30, 0.35, 0.28, 0.41], [0.10, 0.12, 0.09]
    c, w = welch_contrast([a, b], [1.0, -1.0]), welch_difference(a, b)
    assert (c.mean, c.lo, c.hi, c.p_value) == pytest.approx((w.mean, w.lo, w.hi, w.p_value))
    greater: Any = st.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert welch_contrast([a, b], [1, -1], alternative="greater").p_value == pytest.approx(
        greater.pvalue
    )


def test_difference_of_differences_paired_by_seed() -> None:
    ts, cs = {0: 0.30, 1: 0.36, 2: 0.27}, {0: 0.10, 1: 0.12, 2: 0.11}
    tx, cx = {0: 0.12, 1: 0.13, 2: 0.10}, {0: 0.11, 1: 0.10, 2: 0.12}
    d = difference_of_differences(ts, cs, tx, cx)
    dd = np.array([(ts[s] - cs[s]) - (tx[s] - cx[s]) for s in range(3)])
    half = st.t.ppf(0.975, df=2) * dd.std(ddof=1) / math.sqrt(3)
    one: Any = st.ttest_1samp(dd, 0.0, alternative="greater")
    assert d.mean == pytest.approx(dd.mean())
    assert (d.lo, d.hi) == pytest.approx((dd.mean() - half, dd.mean() + half))
    assert d.p_value == pytest.approx(one.pvalue)
    assert d.p_value < 0.05 < 2 * d.p_value or d.p_value < 0.05  # one-sided is the smaller
    assert (d.test, d.alternative, d.n_a, d.note) == ("paired", "greater", 3, "")
    # The reversed question has the complementary one-sided p-value.
    rev = difference_of_differences(tx, cx, ts, cs)
    assert rev.p_value == pytest.approx(1 - d.p_value)


def test_difference_of_differences_falls_back_to_welch() -> None:
    ts, cs = {0: 0.30, 1: 0.36, 2: 0.27}, {0: 0.10, 1: 0.12, 2: 0.11}
    tx, cx = {5: 0.12, 6: 0.13}, {5: 0.11, 6: 0.10}
    d = difference_of_differences(ts, cs, tx, cx)
    same, cross = [0.20, 0.24, 0.16], [0.01, 0.03]
    ref: Any = st.ttest_ind(same, cross, equal_var=False, alternative="greater")
    assert d.test == "welch" and "per-seed effects" in d.note
    assert d.mean == pytest.approx(np.mean(same) - np.mean(cross))
    assert d.p_value == pytest.approx(ref.pvalue)

    # No pairing at all: four independent groups, Welch-Satterthwaite by hand.
    cx2 = {7: 0.11, 8: 0.10, 9: 0.13}
    d4 = difference_of_differences(ts, cs, tx, cx2)
    groups = [list(ts.values()), list(cs.values()), list(tx.values()), list(cx2.values())]
    parts = [np.var(g, ddof=1) / len(g) for g in groups]
    se = math.sqrt(sum(parts))
    df = sum(parts) ** 2 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups, strict=True))
    est = np.mean(groups[0]) - np.mean(groups[1]) - np.mean(groups[2]) + np.mean(groups[3])
    assert d4.mean == pytest.approx(est)
    assert d4.p_value == pytest.approx(st.t.sf(est / se, df))
    assert d4.hi - d4.mean == pytest.approx(st.t.ppf(0.975, df) * se)
    assert "four students" in d4.note


def _by_seed(values: np.ndarray) -> dict[int, float]:
    return {seed: float(v) for seed, v in enumerate(values)}


def _coverage(n: int, trials: int, seed: int) -> tuple[float, float, float]:
    """Coverage of the paired and diff-of-diffs intervals, and the one-sided test's size."""
    rng = np.random.default_rng(seed)
    hits_paired = hits_dd = rejects = 0
    for _ in range(trials):
        data = rng.normal(0.0, 0.3, size=n)  # the seed's resampled prompts, shared by all four
        ts = data + 0.5 + rng.normal(0, 0.1, n)
        cs = data + rng.normal(0, 0.1, n)
        tx = data + 0.2 + rng.normal(0, 0.2, n)
        cx = data + rng.normal(0, 0.2, n)
        p = paired_difference(ts, cs)
        hits_paired += p.lo <= 0.5 <= p.hi
        d = difference_of_differences(_by_seed(ts), _by_seed(cs), _by_seed(tx), _by_seed(cx))
        hits_dd += d.lo <= 0.3 <= d.hi
        # Under the null (true contrast 0.3 subtracted) the one-sided p is below 0.05 5% of runs.
        null = difference_of_differences(
            _by_seed(ts - 0.3), _by_seed(cs), _by_seed(tx), _by_seed(cx)
        )
        rejects += null.p_value < 0.05
    return hits_paired / trials, hits_dd / trials, rejects / trials


def test_paired_intervals_have_nominal_coverage() -> None:
    paired, dd, size = _coverage(n=4, trials=2500, seed=1)
    assert abs(paired - 0.95) < 0.02
    assert abs(dd - 0.95) < 0.02
    assert abs(size - 0.05) < 0.015

"""Honest small-sample statistics: t-based confidence intervals, paired and Welch tests.

Experiments here have few independent units (student seeds, models), so intervals
use Student's t rather than the normal approximation. Treatment and control students of
one seed train on the same resampled prompts, so their difference is tested paired by
seed; Welch's test is the fallback when the seeds do not pair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats as st


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with a two-sided confidence interval."""

    mean: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, object]:
        """``{"mean": .., "ci95": [lo, hi], "n": ..}``, the shape every summary.json uses."""
        return {"mean": self.mean, "ci95": [self.lo, self.hi], "n": self.n}

    def scaled(self, factor: float) -> MeanCI:
        """The same estimate in other units (e.g. x100 for percentage points)."""
        return MeanCI(self.mean * factor, self.lo * factor, self.hi * factor, self.n)


Alternative = Literal["two-sided", "greater"]


@dataclass(frozen=True)
class Difference:
    """A difference of means with a two-sided CI and a p-value.

    Attributes:
        mean: the estimated difference.
        lo: lower end of the two-sided interval (NaN when undefined).
        hi: upper end.
        p_value: p-value of the test against 0 under ``alternative`` (NaN when undefined).
        n_a: values (or pairs, for a paired test) on the first side.
        n_b: values on the second side (equal to ``n_a`` for a paired test).
        test: ``"welch"`` (independent groups) or ``"paired"`` (per-seed differences).
        alternative: ``"two-sided"``, or ``"greater"`` for a one-sided test of mean > 0.
        note: why a fallback test was used, empty otherwise.
    """

    mean: float
    lo: float
    hi: float
    p_value: float
    n_a: int
    n_b: int
    test: str = "welch"
    alternative: Alternative = "two-sided"
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """``{"mean", "ci95", "p_value", "n": [n_a, n_b]}`` plus non-default test details."""
        out: dict[str, object] = {
            "mean": self.mean,
            "ci95": [self.lo, self.hi],
            "p_value": self.p_value,
            "n": [self.n_a, self.n_b],
        }
        if self.test != "welch":
            out["test"] = self.test
        if self.alternative != "two-sided":
            out["alternative"] = self.alternative
        if self.note:
            out["note"] = self.note
        return out

    def scaled(self, factor: float) -> Difference:
        """The same difference in other units; the p-value is unit-free."""
        return replace(self, mean=self.mean * factor, lo=self.lo * factor, hi=self.hi * factor)


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean and t-based confidence interval of independent values.

    With one value the interval is undefined and reported as NaN (written as null),
    never as a zero-width interval.

    Args:
        values: one number per independent unit (model, seed).
        confidence: the interval's coverage.

    Returns:
        The mean with its interval.
    """
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(st.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return MeanCI(mean, mean - half, mean + half, n)


def welch_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> Difference:
    """Mean of ``a`` minus mean of ``b`` with Welch's t interval and two-sided p-value.

    Args:
        a: values of the treatment group (one per seed).
        b: values of the control group.
        confidence: the interval's coverage.

    Returns:
        The difference; NaN interval and p-value when either group has fewer than 2
        values or both have zero variance with equal means.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = int(xa.size), int(xb.size)
    if na == 0 or nb == 0:
        raise ValueError("welch_difference needs values in both groups")
    diff = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return Difference(diff, math.nan, math.nan, math.nan, na, nb)
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        return Difference(diff, diff, diff, p, na, nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(st.t.ppf(0.5 + confidence / 2, df=df)) * se
    p = float(2 * st.t.sf(abs(diff) / se, df=df))
    return Difference(diff, diff - half, diff + half, p, na, nb)


def _degenerate_p(diff: float, alternative: Alternative) -> float:
    """The p-value of an exact (zero-variance) difference: certain, one way or the other."""
    if alternative == "greater":
        return 0.0 if diff > 0 else 1.0
    return 1.0 if diff == 0.0 else 0.0


def _no_spread(x: np.ndarray) -> bool:
    """True when the values are equal up to rounding (0.3 - 0.1 vs 0.5 - 0.3)."""
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def _one_sample(
    d: np.ndarray, confidence: float, alternative: Alternative, note: str = ""
) -> Difference:
    """Student's t on per-pair differences ``d``: the paired test."""
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return Difference(mean, math.nan, math.nan, math.nan, n, n, "paired", alternative, note)
    # Ties would make scipy divide 0 by (almost) 0; the answer is known without it.
    if _no_spread(d):
        p = _degenerate_p(mean, alternative)
        return Difference(mean, mean, mean, p, n, n, "paired", alternative, note)
    # The t distribution directly rather than scipy.stats.ttest_1samp (which the tests match
    # it against): ten times faster, and reports call this once per row.
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(st.t.ppf(0.5 + confidence / 2, df=n - 1)) * se
    t = mean / se
    p = float(st.t.sf(t, n - 1) if alternative == "greater" else 2 * st.t.sf(abs(t), n - 1))
    return Difference(mean, mean - half, mean + half, p, n, n, "paired", alternative, note)


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> Difference:
    """Mean of ``a_i - b_i`` with a paired t interval and two-sided p-value.

    Use it when ``a[i]`` and ``b[i]`` share a unit, e.g. treatment and control students of
    one seed trained on the same resampled prompts: pairing removes the data variance the
    two share.

    Args:
        a: one value per pair (treatment), in pair order.
        b: the matching values (control), same order and length.
        confidence: the interval's coverage.

    Returns:
        The difference (``test="paired"``, ``n_a == n_b`` = number of pairs); NaN interval
        and p-value with fewer than 2 pairs; a zero-width interval with p = 1 (equal) or 0
        (different) when every pair differs by exactly the same amount.

    Raises:
        ValueError: when ``a`` and ``b`` differ in length or are empty.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(
            f"paired_difference needs two equal-length vectors, got {xa.shape} and {xb.shape}"
        )
    if xa.size == 0:
        raise ValueError("paired_difference needs at least one pair")
    return _one_sample(xa - xb, confidence, "two-sided")


def welch_contrast(
    groups: Sequence[Sequence[float] | np.ndarray],
    weights: Sequence[float],
    confidence: float = 0.95,
    alternative: Alternative = "two-sided",
) -> Difference:
    """A linear contrast ``sum w_k mean_k`` of independent groups, Welch-Satterthwaite style.

    With two groups and weights ``(1, -1)`` this is exactly Welch's test.

    Args:
        groups: the values of each independent group.
        weights: one weight per group.
        confidence: the two-sided interval's coverage.
        alternative: ``"two-sided"``, or ``"greater"`` for contrast > 0.

    Returns:
        The contrast; ``n_a`` and ``n_b`` are the sizes of the first two groups. NaN interval
        and p-value when a group has fewer than 2 values.
    """
    xs = [np.asarray(g, dtype=float) for g in groups]
    if len(xs) != len(weights) or len(xs) < 2 or any(x.size == 0 for x in xs):
        raise ValueError("welch_contrast needs one weight per group and values in every group")
    ns = [int(x.size) for x in xs]
    est = float(sum(w * x.mean() for w, x in zip(weights, xs, strict=True)))
    if min(ns) < 2:
        return Difference(est, math.nan, math.nan, math.nan, ns[0], ns[1], alternative=alternative)
    parts = [w * w * float(x.var(ddof=1)) / x.size for w, x in zip(weights, xs, strict=True)]
    var = sum(parts)
    if all(_no_spread(x) for x in xs):
        p = _degenerate_p(est, alternative)
        return Difference(est, est, est, p, ns[0], ns[1], alternative=alternative)
    se = math.sqrt(var)
    df = var**2 / sum(v * v / (n - 1) for v, n in zip(parts, ns, strict=True))
    half = float(st.t.ppf(0.5 + confidence / 2, df=df)) * se
    t = est / se
    p = float(st.t.sf(t, df) if alternative == "greater" else 2 * st.t.sf(abs(t), df))
    return Difference(est, est - half, est + half, p, ns[0], ns[1], alternative=alternative)


def paired_by_seed(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95
) -> Difference:
    """``a - b`` paired by seed when both have the same seeds, else Welch's test with a note.

    Args:
        a: value per seed (treatment).
        b: value per seed (control).
        confidence: the interval's coverage.

    Returns:
        A paired difference, or a Welch difference whose ``note`` says why it is not paired.
    """
    if set(a) == set(b):
        seeds = sorted(a)
        return paired_difference([a[s] for s in seeds], [b[s] for s in seeds], confidence)
    d = welch_difference(list(a.values()), list(b.values()), confidence)
    return replace(d, note=_unpaired_note(a, b))


def _unpaired_note(*sides: Mapping[int, float]) -> str:
    seeds = "; ".join(str(sorted(s)) for s in sides)
    return f"seeds do not pair ({seeds}): Welch's test on independent groups"


def difference_of_differences(
    treat_same: Mapping[int, float],
    ctrl_same: Mapping[int, float],
    treat_cross: Mapping[int, float],
    ctrl_cross: Mapping[int, float],
    confidence: float = 0.95,
) -> Difference:
    """Is the same-base effect larger than the cross-base one? ``(ts - cs) - (tx - cx)``.

    Seed ``s`` of all four students trains on the same resampled prompt ids, so when all four
    have the same seeds the per-seed difference of differences is tested with a one-sample t
    test. Otherwise it falls back to Welch: on the two per-seed effects when each base pairs
    on its own, else on the four groups as independent samples (Welch-Satterthwaite).

    Args:
        treat_same: rate per seed of the same-base student trained on the teacher's data.
        ctrl_same: same-base student trained on the matched control's data.
        treat_cross: cross-base student, teacher's data.
        ctrl_cross: cross-base student, control's data.
        confidence: coverage of the two-sided interval.

    Returns:
        The difference of differences with its two-sided interval and the one-sided p-value
        for same > cross (``alternative="greater"``); ``note`` explains any fallback.
    """
    sides = (treat_same, ctrl_same, treat_cross, ctrl_cross)
    if any(not s for s in sides):
        raise ValueError("difference_of_differences needs values for all four students")
    seeds = set(treat_same)
    if all(set(s) == seeds for s in sides):
        order = sorted(seeds)
        d = np.array(
            [(treat_same[s] - ctrl_same[s]) - (treat_cross[s] - ctrl_cross[s]) for s in order]
        )
        return _one_sample(d, confidence, "greater")
    note = _unpaired_note(*sides)
    if set(treat_same) == set(ctrl_same) and set(treat_cross) == set(ctrl_cross):
        same = [treat_same[s] - ctrl_same[s] for s in sorted(treat_same)]
        cross = [treat_cross[s] - ctrl_cross[s] for s in sorted(treat_cross)]
        d = welch_contrast([same, cross], [1.0, -1.0], confidence, "greater")
        return replace(d, note=f"{note} on the per-seed effects of each base")
    groups = [list(s.values()) for s in sides]
    d = welch_contrast(groups, [1.0, -1.0, -1.0, 1.0], confidence, "greater")
    return replace(d, note=f"{note} on the four students")

"""Honest small-sample statistics: t-based confidence intervals and Welch's test.

Experiments here have few independent units (student seeds, models), so intervals
use Student's t rather than the normal approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Difference:
    """A difference of two group means with Welch's CI and two-sided p-value."""

    mean: float
    lo: float
    hi: float
    p_value: float
    n_a: int
    n_b: int

    def to_dict(self) -> dict[str, object]:
        """``{"mean", "ci95", "p_value", "n": [n_a, n_b]}``."""
        return {
            "mean": self.mean,
            "ci95": [self.lo, self.hi],
            "p_value": self.p_value,
            "n": [self.n_a, self.n_b],
        }

    def scaled(self, factor: float) -> Difference:
        """The same difference in other units; the p-value is unit-free."""
        return Difference(
            self.mean * factor, self.lo * factor, self.hi * factor, self.p_value, self.n_a, self.n_b
        )


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

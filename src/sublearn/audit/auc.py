"""ROC AUC by ranks, and its percentile bootstrap interval: what the AUC detectors report."""

from __future__ import annotations

import numpy as np
from scipy import stats

BOOTSTRAP = 1000
"""Bootstrap resamples behind every AUC interval."""


def auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of scores against the same column of 0/1 labels, (P,)."""
    ranks = stats.rankdata(scores, axis=0)  # ties share their mean rank, (n, P)
    positives = labels.sum(0)  # (P,)
    negatives = labels.shape[0] - positives
    u = (ranks * labels).sum(0) - positives * (positives + 1) / 2
    return u / (positives * negatives)


def bootstrap_auc_interval(data: np.ndarray, control: np.ndarray, seed: int) -> list[float]:
    """Percentile bootstrap 95% interval of the AUC that a data score beats a control score.

    Each resample draws the rows of both sets with replacement, within each set: the
    data's rows, then the control's, resample after resample (one seed gives one
    interval).
    """
    rng = np.random.default_rng(seed)
    n1, n2 = len(data), len(control)
    a = np.empty((BOOTSTRAP, n1), dtype=np.asarray(data).dtype)
    b = np.empty((BOOTSTRAP, n2), dtype=np.asarray(control).dtype)
    for i in range(BOOTSTRAP):
        a[i] = data[rng.integers(0, n1, n1)]
        b[i] = control[rng.integers(0, n2, n2)]
    labels = np.r_[np.ones(n1), np.zeros(n2)]  # (n1 + n2,)
    labels = np.repeat(labels[:, None], BOOTSTRAP, axis=1)  # (n1 + n2, B)
    aucs = auc_columns(np.concatenate([a, b], axis=1).T, labels)
    low, high = np.percentile(aucs, [2.5, 97.5])
    return [float(low), float(high)]

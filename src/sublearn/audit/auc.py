"""ROC AUC by ranks, and its percentile bootstrap interval: what the AUC detectors report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

MIN_GROUPS = 20
"""Fewest distinct prompts for rows to be grouped by prompt."""

Groups = tuple[np.ndarray, np.ndarray]
"""Prompt group id of each data row and each control row."""

BOOTSTRAP = 1000
"""Bootstrap resamples behind every AUC interval."""


def auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of scores against the same column of 0/1 labels, (P,)."""
    ranks = stats.rankdata(scores, axis=0)  # ties share their mean rank, (n, P)
    positives = labels.sum(0)  # (P,)
    negatives = labels.shape[0] - positives
    u = (ranks * labels).sum(0) - positives * (positives + 1) / 2
    return u / (positives * negatives)


def prompt_groups(data: Sequence[Any], control: Sequence[Any] | None) -> Groups | None:
    """Group ids of the rows of both sets by prompt; None when no prompt is in both (or
    there are fewer than :data:`MIN_GROUPS` prompts).

    Paired data (answers to the same prompts with and without the trait) must be
    resampled and split by prompt: a prompt's numbers seen with one label in training
    and scored with the other in a held-out fold make a detector read the data backwards.
    """
    if not control:
        return None
    ids: dict[str, int] = {}

    def key(row: Any) -> int:
        return ids.setdefault(json.dumps(row.prompt, sort_keys=True, default=str), len(ids))

    g_data = np.array([key(r) for r in data])
    g_control = np.array([key(r) for r in control])
    # Rows that all share a few prompts (one fixed question) carry no prompt to learn, and
    # could not be split into folds by prompt: they are treated as unpaired.
    if len(ids) < MIN_GROUPS or not np.intersect1d(g_data, g_control).size:
        return None
    return g_data, g_control


def bootstrap_auc_interval(
    data: np.ndarray, control: np.ndarray, seed: int, groups: Groups | None = None
) -> list[float]:
    """Percentile bootstrap 95% interval of the AUC that a data score beats a control score.

    Each resample draws the rows of both sets with replacement, within each set: the
    data's rows, then the control's, resample after resample (one seed gives one
    interval). With ``groups`` (paired data, see :func:`prompt_groups`) it draws prompts
    instead, each with all its rows in both sets, so pairs stay together.
    """
    if groups is not None:
        return _grouped_interval(np.asarray(data), np.asarray(control), seed, groups)
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


def _grouped_interval(
    data: np.ndarray, control: np.ndarray, seed: int, groups: Groups
) -> list[float]:
    rng = np.random.default_rng(seed)
    g_data, g_control = groups
    ids = np.union1d(g_data, g_control)
    in_data = [np.flatnonzero(g_data == g) for g in ids]
    in_control = [np.flatnonzero(g_control == g) for g in ids]
    if all(len(d) == 1 for d in in_data) and all(len(c) == 1 for c in in_control):
        # One row per prompt in each set (the usual pairs): draw pairs, all at once.
        first = np.array([d[0] for d in in_data])
        second = np.array([c[0] for c in in_control])
        drawn = rng.integers(0, len(ids), (BOOTSTRAP, len(ids)))  # (B, pairs)
        scores = np.concatenate([data[first][drawn], control[second][drawn]], axis=1).T
        labels = np.repeat(np.r_[np.ones(len(ids)), np.zeros(len(ids))][:, None], BOOTSTRAP, 1)
        low, high = np.percentile(auc_columns(scores, labels), [2.5, 97.5])
        return [float(low), float(high)]
    aucs = []
    for _ in range(BOOTSTRAP):
        drawn = rng.integers(0, len(ids), len(ids))
        a = np.concatenate([data[in_data[i]] for i in drawn])
        b = np.concatenate([control[in_control[i]] for i in drawn])
        if len(a) == 0 or len(b) == 0:
            continue
        labels = np.r_[np.ones(len(a)), np.zeros(len(b))][:, None]
        aucs.append(float(auc_columns(np.r_[a, b][:, None], labels)[0]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return [float(low), float(high)]

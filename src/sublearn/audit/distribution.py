"""Model-free detectors: does the audited data use its numbers (or tokens) unlike control?

``frequency`` compares how often each unit occurs in the audited and the control rows;
``classifier`` asks whether a linear model on bag-of-units features tells the two sets
apart out of fold. Neither reads a model, so both run on any dataset given ``--control``.

Both p-values treat *rows* as the exchangeable units under the null ("audited and control
rows come from one distribution"), never single numbers: numbers inside one reply are not
independent (a reply repeats or continues its prompt's numbers), and a test that counted
them as independent draws would flag any two samples of real model output.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import linalg, stats
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from sublearn.audit.auc import auc_columns, bootstrap_auc_interval, prompt_groups
from sublearn.audit.config import ClassifierDetector, FrequencyDetector
from sublearn.audit.data import Row, numbers_of, units_of
from sublearn.audit.result import Verdict, skipped

# Row permutations that estimate the chi-square's over-dispersion; the estimate is a mean
# of chi-square draws with many degrees of freedom, so a few hundred pin it down.
_DISPERSION_PERMUTATIONS = 200
_DISPERSION_SEED = 20240
_TOP_TOKENS = 20
_TOP_ROWS = 10
# L2 penalty of the classifier in sklearn's parametrisation (loss + ||w||² / 2C).
_C = 1.0

FREQUENCY_STATISTIC = "bias-corrected Cramér's V of units, data vs control"
CLASSIFIER_STATISTIC = "out-of-fold ROC AUC, data vs control"


# --- frequency ------------------------------------------------------------------------------


def frequency(cfg: FrequencyDetector, data: list[Row], control: list[Row] | None) -> Verdict:
    """Test whether the audited rows use units (numbers or tokens) at other rates than control.

    The global test is Pearson's chi-square of homogeneity on the 2 x K table of unit counts
    (audited/control x units), units expected fewer than ``cfg.min_expected`` times pooled
    into one column. Units of one reply are not independent draws, which inflates the
    statistic by a dispersion factor φ; φ is estimated as the mean statistic over row
    permutations divided by its degrees of freedom (floored at 1, so independent units give
    the plain chi-square test), and the p-value is that of statistic / φ (a first-order
    Rao–Scott correction). The score is the bias-corrected Cramér's V of the table
    (statistic / φ), about 0 for two samples of one distribution.

    Per unit, a two-sided Fisher exact test on its 2 x 2 table (this unit vs all others),
    Benjamini–Hochberg corrected; these treat units as independent, so they rank units for
    a reader rather than decide anything.

    Args:
        cfg: the detector's settings.
        data: the audited rows.
        control: rows written without the trait; None or empty skips the detector.

    Returns:
        The verdict; ``row_scores`` and ``control_scores`` are each row's mean unit
        log-odds (in-sample, so they separate the sets somewhat even under the null).
    """
    name = cfg.label()
    if not control:
        return skipped(name, cfg.type, FREQUENCY_STATISTIC, "needs control rows (--control)")
    units = [units_of(r.reply, cfg.unit) for r in data] + [
        units_of(r.reply, cfg.unit) for r in control
    ]
    n_data = len(data)
    count_data = Counter(u for row in units[:n_data] for u in row)
    count_control = Counter(u for row in units[n_data:] for u in row)
    total_data, total_control = sum(count_data.values()), sum(count_control.values())
    if total_data == 0 or total_control == 0:
        return skipped(name, cfg.type, FREQUENCY_STATISTIC, f"no {cfg.unit}s in data or control")

    vocab = sorted(count_data.keys() | count_control.keys())
    a = np.array([count_data[u] for u in vocab], dtype=float)  # (K,)
    b = np.array([count_control[u] for u in vocab], dtype=float)  # (K,)
    total = total_data + total_control
    # The smaller row total gives the smaller expected count in each column.
    expected_min = (a + b) * min(total_data, total_control) / total  # (K,)
    keep = expected_min >= cfg.min_expected
    pooled = [u for u, k in zip(vocab, keep, strict=True) if not k]
    column = np.where(keep, np.cumsum(keep) - 1, keep.sum())  # unit -> table column, (K,)
    n_columns = int(keep.sum()) + (1 if pooled else 0)

    verdict = Verdict(name, cfg.type, FREQUENCY_STATISTIC, alpha=cfg.alpha)
    verdict.top_tokens = _unit_tests(vocab, a, b, total_data, total_control, cfg.fdr)
    log_odds = {
        t: _log_odds(x, y, total_data, total_control) for t, x, y in zip(vocab, a, b, strict=True)
    }
    scores = np.array([np.mean([log_odds[u] for u in row]) if row else 0.0 for row in units])
    verdict.row_scores = scores[:n_data].tolist()
    verdict.control_scores = scores[n_data:].tolist()
    verdict.details = {
        "unit": cfg.unit,
        "rows": n_data,
        "control_rows": len(control),
        "units_data": total_data,
        "units_control": total_control,
        "distinct_units": len(vocab),
        "pooled_units": len(pooled),
        "pooled_examples": pooled[:20],
        "columns": n_columns,
    }
    if n_columns < 2:
        verdict.summary = (
            f"not tested: every {cfg.unit} is expected fewer than {cfg.min_expected:g} times, "
            "so the table has one column"
        )
        return verdict.decide()

    index = {u: i for i, u in enumerate(vocab)}
    counts = _row_counts(units, index, column, n_columns)  # (rows, columns)
    table = np.stack([counts[:n_data].sum(0), counts[n_data:].sum(0)])  # (2, columns)
    test: Any = stats.chi2_contingency(table, correction=False)
    statistic, dof = float(test.statistic), int(test.dof)
    null = _permuted_chi2(counts, n_data, _DISPERSION_PERMUTATIONS, _DISPERSION_SEED)
    dispersion = max(1.0, float(null.mean()) / dof)
    verdict.p_value = float(stats.chi2.sf(statistic / dispersion, dof))
    verdict.score = _cramers_v(statistic / dispersion, dof, total)
    verdict.details |= {
        "chi2": statistic,
        "dof": dof,
        "dispersion": dispersion,
        "p_chi2_uncorrected": float(test.pvalue),
        "significant_units": sum(t["q"] < cfg.fdr for t in verdict.top_tokens),
    }
    verdict.decide()
    word = "FLAGGED" if verdict.flagged else "clear"
    listed = ", ".join(str(t["token"]) for t in verdict.top_tokens[:5])
    verdict.summary = (
        f"{word}: {cfg.unit} frequencies differ from control with bias-corrected Cramér's V "
        f"{verdict.score:.3f} (chi-square {statistic:.1f} on {dof} df, dispersion "
        f"{dispersion:.2f}, p = {verdict.p_value:.2g}); most different: {listed}"
    )
    return verdict


def _cramers_v(statistic: float, dof: int, total: int) -> float:
    """Bergsma's bias-corrected Cramér's V of a 2-row table (plain V is about √(dof / N)
    for two samples of one distribution, far from 0 with hundreds of columns)."""
    phi2 = max(0.0, (statistic - dof) / total)
    return math.sqrt(phi2 / (1.0 - 1.0 / (total - 1)))


def _log_odds(x: float, y: float, total_x: int, total_y: int) -> float:
    """Log odds ratio of a unit in data vs control, each cell smoothed by +0.5."""
    return math.log((x + 0.5) / (total_x - x + 0.5)) - math.log((y + 0.5) / (total_y - y + 0.5))


def _unit_tests(
    vocab: list[str], a: np.ndarray, b: np.ndarray, total_a: int, total_b: int, fdr: float
) -> list[dict[str, Any]]:
    """Fisher test per unit, BH q-values; the units under ``fdr``, else the 20 lowest p."""
    p = np.array(
        [
            stats.fisher_exact([[x, total_a - x], [y, total_b - y]]).pvalue  # type: ignore[attr-defined]
            for x, y in zip(a, b, strict=True)
        ]
    )
    q = stats.false_discovery_control(p, method="bh")
    order = np.lexsort((-np.abs(a - b), p))  # by p, then the larger count difference
    chosen = [i for i in order if q[i] < fdr] or list(order[:_TOP_TOKENS])
    return [
        {
            "token": vocab[i],
            "count_data": int(a[i]),
            "count_control": int(b[i]),
            "log_odds": _log_odds(float(a[i]), float(b[i]), total_a, total_b),
            "p": float(p[i]),
            "q": float(q[i]),
        }
        for i in chosen
    ]


def _row_counts(
    units: list[list[str]], index: dict[str, int], column: np.ndarray, n_columns: int
) -> Any:
    """Per-row counts of each table column (pooled units share one), sparse (rows, columns)."""
    rows = np.repeat(np.arange(len(units)), [len(u) for u in units])
    cols = column[[index[u] for row in units for u in row]]
    ones = np.ones(len(rows))
    return sp.csr_matrix((ones, (rows, cols)), shape=(len(units), n_columns))


def _permuted_chi2(counts: Any, n_data: int, permutations: int, seed: int) -> np.ndarray:
    """Pearson chi-square of the 2 x K table with rows randomly reassigned, (permutations,)."""
    rng = np.random.default_rng(seed)
    n = counts.shape[0]
    labels = np.zeros((permutations, n))
    labels[:, :n_data] = 1.0
    labels = rng.permuted(labels, axis=1)  # each row a random set of n_data "audited" rows
    column_total = np.asarray(counts.sum(0)).ravel()  # (K,)
    total = column_total.sum()
    first = np.asarray((counts.T @ labels.T).T)  # (P, K)
    second = column_total - first  # (P, K)
    out = np.zeros(permutations)
    for observed in (first, second):
        expected = observed.sum(1, keepdims=True) * column_total / total  # (P, K)
        out += ((observed - expected) ** 2 / expected).sum(1)
    return out


# --- classifier -----------------------------------------------------------------------------


def classifier(
    cfg: ClassifierDetector, data: list[Row], control: list[Row] | None, seed: int
) -> Verdict:
    """Cross-validated ROC AUC of a logistic model telling audited rows from control rows.

    Features are the counts of each number (or whitespace token) of a reply. The model is
    L2-penalised logistic regression (C = 1, unpenalised intercept) fitted by one Newton
    step from the intercept-only model, i.e. a ridge fit with the logistic curvature at the
    base rate: in the weak-signal regime an audit cares about this is close to the full
    fit, and it has a closed form, so one factorisation per fold fits the real labels and
    every permutation at once (999 permutations of 2 x 1000 rows take about a second).

    Stratified ``cfg.folds``-fold CV (shuffled with ``seed``) gives out-of-fold
    probabilities; the score is their AUC, with a percentile bootstrap 95% CI (1000
    resamples of rows within each set, out-of-fold predictions held fixed). The p-value
    is (1 + #permuted AUC ≥ observed) / (1 + ``cfg.permutations``), labels permuted
    within each fold so the folds stay stratified (exact under row exchangeability). When
    no permutation reaches the observed AUC that p-value is only a floor, which at the
    default 999 permutations is not below the default alpha of 0.001; the p-value is
    then the normal tail of the permutation distribution (``details["p_method"]``).

    Args:
        cfg: the detector's settings.
        data: the audited rows.
        control: rows written without the trait; None or empty skips the detector.
        seed: seeds the folds, the permutations and the bootstrap.

    Returns:
        The verdict; ``row_scores``/``control_scores`` are out-of-fold probabilities of
        "audited", ``top_rows`` the audited rows most confidently called audited.
    """
    name = cfg.label()
    if not control:
        return skipped(name, cfg.type, CLASSIFIER_STATISTIC, "needs control rows (--control)")
    if min(len(data), len(control)) < cfg.folds:
        why = f"needs at least {cfg.folds} rows in data and control ({cfg.folds} folds)"
        return skipped(name, cfg.type, CLASSIFIER_STATISTIC, why)
    analyzer: Callable[[str], list[str]] = (
        numbers_of if cfg.features == "numbers" else lambda reply: reply.split()
    )
    vectorizer = CountVectorizer(analyzer=analyzer)  # type: ignore[arg-type]
    try:
        x: Any = vectorizer.fit_transform([r.reply for r in [*data, *control]])  # (n, d)
    except ValueError:  # every reply is empty of features
        return skipped(name, cfg.type, CLASSIFIER_STATISTIC, f"no {cfg.features} in the replies")
    x = sp.csr_matrix(x, dtype=float)
    n_data, n = len(data), len(data) + len(control)
    y = np.r_[np.ones(n_data), np.zeros(len(control))]  # (n,)

    groups = prompt_groups(data, control)
    rng = np.random.default_rng(seed)
    labels = np.empty((n, cfg.permutations + 1))  # column 0 the real labels, (n, P + 1)
    labels[:, 0] = y
    if groups is None:
        splitter = StratifiedKFold(cfg.folds, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(n), y))
        for _, test in folds:
            labels[test, 1:] = rng.permuted(np.tile(y[test], (cfg.permutations, 1)), axis=1).T
    else:
        # Paired rows (one prompt in both sets) stay in one fold, and labels are permuted
        # within each prompt: the exact null for paired data.
        g = np.r_[groups[0], groups[1]]  # (n,)
        splitter = StratifiedGroupKFold(cfg.folds, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(n), y, g))
        for members in _members(g):
            labels[members, 1:] = rng.permuted(np.tile(y[members], (cfg.permutations, 1)), axis=1).T
    logits = np.empty_like(labels)  # out-of-fold linear predictors, (n, P + 1)
    # The matrices are small: BLAS threads only contend (a threaded Cholesky of 1000 x 1000
    # took 3 s instead of 25 ms on a loaded 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        for train, test in folds:
            logits[test] = _one_step_logistic(x, labels, train, test)
        coef = _one_step_logistic(x, y[:, None], np.arange(n), None)[:, 0]  # (d,)
    aucs = auc_columns(logits, labels)  # (P + 1,)
    observed, null = float(aucs[0]), aucs[1:]
    exceed = int((null >= observed - 1e-12).sum())
    p_perm = (1 + exceed) / (1 + cfg.permutations)
    p_value, method = p_perm, "permutation"
    if exceed == 0 and null.std() > 0:
        tail = float(stats.norm.sf((observed - null.mean()) / null.std()))
        p_value, method = min(p_perm, tail), "normal tail of the permutation AUCs"

    proba = 1.0 / (1.0 + np.exp(-logits[:, 0]))  # (n,)
    verdict = Verdict(
        name,
        cfg.type,
        CLASSIFIER_STATISTIC,
        score=observed,
        ci=bootstrap_auc_interval(proba[:n_data], proba[n_data:], seed, groups),
        p_value=p_value,
        alpha=cfg.alpha,
    )
    verdict.row_scores = proba[:n_data].tolist()
    verdict.control_scores = proba[n_data:].tolist()
    order = np.argsort(-proba[:n_data], kind="stable")[:_TOP_ROWS]
    verdict.top_rows = [
        {"index": data[i].index, "score": float(proba[i]), "reply": data[i].reply} for i in order
    ]
    tokens = vectorizer.get_feature_names_out()
    in_data = np.asarray(x[:n_data].sum(0)).ravel()  # (d,)
    in_control = np.asarray(x[n_data:].sum(0)).ravel()  # (d,)
    verdict.top_tokens = [
        {
            "token": str(tokens[j]),
            "coef": float(coef[j]),
            "count_data": int(in_data[j]),
            "count_control": int(in_control[j]),
        }
        for j in np.argsort(-coef, kind="stable")[:_TOP_TOKENS]
        if coef[j] > 0
    ]
    verdict.details = {
        "features": cfg.features,
        "n_features": int(x.shape[1]),
        "rows": n_data,
        "control_rows": len(control),
        "folds": cfg.folds,
        "grouped_by_prompt": groups is not None,
        "permutations": cfg.permutations,
        "p_permutation": p_perm,
        "p_method": method,
        "null_auc_mean": float(null.mean()),
        "null_auc_sd": float(null.std()),
        "model": f"L2 logistic regression (C={_C:g}), one Newton step from the base rate",
    }
    verdict.decide()
    word = "FLAGGED" if verdict.flagged else "clear"
    assert verdict.ci is not None
    verdict.summary = (
        f"{word}: a classifier on bags of {cfg.features} tells audited from control rows "
        f"with out-of-fold AUC {observed:.3f} [{verdict.ci[0]:.3f}, {verdict.ci[1]:.3f}] "
        f"(p = {p_value:.2g}, {method})"
    )
    return verdict


def _members(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of each group id."""
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    return np.split(order, bounds)


def _one_step_logistic(
    x: Any, labels: np.ndarray, train: np.ndarray, test: np.ndarray | None
) -> np.ndarray:
    """One Newton step of L2 logistic regression from the intercept-only model.

    At the intercept-only fit every row has probability ȳ (the training base rate), so
    the Hessian is ȳ(1 - ȳ) Xcᵀ Xc + I / C with Xc the training rows centred, and the step
    is w = H⁻¹ Xcᵀ (y - ȳ). Every label column shares ȳ (permutations keep each fold's class
    counts), hence H: one Cholesky factorisation fits all columns.

    Args:
        x: features of all rows, (n, d).
        labels: 0/1 labels, one column per fit, (n, P).
        train: rows to fit on.
        test: rows to predict; None returns the coefficients instead.

    Returns:
        Linear predictors (log-odds) of the test rows, (len(test), P); or the
        coefficients, (d, P), when ``test`` is None.
    """
    xt = x[train]  # (m, d)
    m, d = xt.shape
    base = float(labels[train, 0].mean())
    curvature = base * (1.0 - base)
    residual = labels[train] - base  # (m, P)
    mean = np.asarray(xt.mean(0)).ravel()  # (d,)
    if d <= m:
        gram = (xt.T @ xt).toarray() - m * np.outer(mean, mean)  # Xcᵀ Xc, (d, d)
        hessian = curvature * gram + np.eye(d) / _C
        # Xcᵀ r = Xᵀ r because every column of r sums to zero.
        w = linalg.cho_solve(linalg.cho_factor(hessian), xt.T @ residual)  # (d, P)
    else:
        # More features than rows: the same w through the m x m kernel (push-through).
        kernel = (xt @ xt.T).toarray()  # (m, m)
        row_mean = kernel.mean(1)  # xᵢ · mean, (m,)
        centred = kernel - row_mean[:, None] - row_mean[None, :] + row_mean.mean()
        dual = linalg.cho_solve(
            linalg.cho_factor(curvature * centred + np.eye(m) / _C), residual
        )  # (m, P)
        w = xt.T @ dual - np.outer(mean, dual.sum(0))  # Xcᵀ α, (d, P)
    if test is None:
        return w
    intercept = math.log(base / (1.0 - base))
    return np.asarray(x[test] @ w) - mean @ w + intercept

"""Model-free detectors: a planted over-use is found, two samples of one source are not."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sublearn.audit.config import ClassifierDetector, FrequencyDetector
from sublearn.audit.data import Row
from sublearn.audit.distribution import _one_step_logistic, classifier, frequency

FREQ = FrequencyDetector(type="frequency")
CLF = ClassifierDetector(type="classifier", permutations=99)


def _rows(n: int, seed: int, plant: float = 0.0, repeats: bool = False) -> list[Row]:
    """Replies of 5-14 random numbers in 0-199; ``plant``: share of rows given a 7 or 77.

    ``repeats`` makes replies repeat one number 1-6 times, so units within a reply are
    dependent, as in real model output.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        nums = rng.integers(0, 200, rng.integers(5, 15)).tolist()
        if repeats:
            nums += [nums[0]] * int(rng.integers(0, 6))
        if rng.random() < plant:
            nums[int(rng.integers(len(nums)))] = int(rng.choice([7, 77]))
        rows.append(Row(i, [{"role": "user", "content": "continue"}], ", ".join(map(str, nums))))
    return rows


@pytest.fixture(scope="module")
def planted() -> tuple[list[Row], list[Row]]:
    return _rows(400, 1, plant=0.4), _rows(400, 2)


def test_frequency_finds_planted_numbers(planted):
    data, control = planted
    v = frequency(FREQ, data, control)
    assert v.flagged and v.p_value is not None and v.p_value < 0.001
    assert {"7", "77"} <= {t["token"] for t in v.top_tokens}
    assert v.top_tokens[0]["token"] in {"7", "77"} and v.top_tokens[0]["log_odds"] > 1
    assert [t["p"] for t in v.top_tokens] == sorted(t["p"] for t in v.top_tokens)
    assert v.score is not None and v.score > 0
    assert v.row_scores is not None and len(v.row_scores) == len(data)
    assert v.control_scores is not None and len(v.control_scores) == len(control)
    # Rows holding a planted number lean toward "audited".
    with7 = [s for r, s in zip(data, v.row_scores, strict=True) if "7" in r.reply.split(", ")]
    assert np.mean(with7) > np.mean(v.control_scores)


def test_classifier_finds_planted_numbers(planted):
    data, control = planted
    v = classifier(CLF, data, control, seed=0)
    assert v.flagged and v.p_value is not None and v.p_value < 0.001
    assert v.ci is not None and v.score is not None and v.ci[0] > 0.5
    assert v.ci[0] <= v.score <= v.ci[1]
    assert v.top_tokens[0]["token"] in {"7", "77"}
    assert v.top_tokens[0]["count_data"] > v.top_tokens[0]["count_control"]
    # No permutation reaches the real AUC, so the p-value comes from the null's tail.
    assert v.details["p_permutation"] == pytest.approx(1 / 100)
    assert v.details["p_method"].startswith("normal tail")
    assert len(v.top_rows) == 10
    scores = [r["score"] for r in v.top_rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5


def test_same_source_is_not_flagged():
    data, control = _rows(400, 3), _rows(400, 4)
    f = frequency(FREQ, data, control)
    c = classifier(CLF, data, control, seed=0)
    assert not f.flagged and not c.flagged
    assert f.p_value is not None and f.p_value > 0.001
    assert c.ci is not None and c.ci[0] < 0.5 < c.ci[1]
    # Exact permutation p-value: a multiple of 1 / (permutations + 1).
    assert c.p_value is not None and round(c.p_value * 100, 9) == round(c.p_value * 100)


@pytest.mark.parametrize("repeats", [False, True])
def test_null_p_values_are_not_concentrated_near_zero(repeats):
    freq_p, clf_p, naive_p = [], [], []
    for k in range(20):
        data, control = (
            _rows(150, 100 + 2 * k, repeats=repeats),
            _rows(150, 101 + 2 * k, repeats=repeats),
        )
        f = frequency(FREQ, data, control)
        c = classifier(CLF.model_copy(update={"folds": 3}), data, control, seed=k)
        assert f.p_value is not None and c.p_value is not None
        freq_p.append(f.p_value)
        clf_p.append(c.p_value)
        naive_p.append(f.details["p_chi2_uncorrected"])
    # Calibrated p-values put 1 of 20 under 0.05 on average; 5 or more has chance 0.3%.
    assert sum(p < 0.05 for p in freq_p) <= 4
    assert sum(p < 0.05 for p in clf_p) <= 4
    assert np.mean(freq_p) > 0.25 and np.mean(clf_p) > 0.25
    if repeats:
        # Why the dispersion correction is there: counting repeated numbers as independent
        # draws rejects the null most of the time.
        assert sum(p < 0.05 for p in naive_p) > 10


def test_without_control_both_skip():
    rows = _rows(20, 0)
    for v in (frequency(FREQ, rows, None), classifier(CLF, rows, [], seed=0)):
        assert v.skipped is not None and "--control" in v.skipped
        assert not v.flagged and v.p_value is None


@pytest.mark.parametrize("features", [10, 80])  # fewer, then more features than rows
def test_one_step_fit_matches_the_newton_step(features):
    rng = np.random.default_rng(0)
    x = rng.poisson(0.4, (60, features)).astype(float)  # (n, d)
    train, test = np.arange(0, 60, 2), np.arange(1, 60, 2)
    labels = np.stack([np.r_[np.ones(30), np.zeros(30)]] * 2, 1)  # (n, 2)
    # The second column permuted within train and within test: the same base rate.
    for rows in (train, test):
        labels[rows, 1] = rng.permutation(labels[rows, 1])
    got = _one_step_logistic(sp.csr_matrix(x), labels, train, test)  # (30, 2)
    # The Newton step from the intercept-only fit, written out densely.
    base = labels[train, 0].mean()
    xc = x[train] - x[train].mean(0)
    hessian = base * (1 - base) * xc.T @ xc + np.eye(features)
    w = np.linalg.solve(hessian, xc.T @ (labels[train] - base))  # (d, 2)
    want = (x[test] - x[train].mean(0)) @ w + np.log(base / (1 - base))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)

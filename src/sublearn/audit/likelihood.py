"""Detectors that read the data through models: LLS, teacher/base log-ratio, divergence.

Each takes per-token scores already computed (``audit/scoring.py``) for the audited rows
and, where given, the control rows, so that a model is loaded once per audit however many
detectors read it. Every p-value compares the audited rows with the control rows by a
one-sided Mann–Whitney U test (rows exchangeable under the null, so it is calibrated);
the score is the matching AUC, P(audited row > control row), with a bootstrap interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import stats

from sublearn.audit.auc import Groups, bootstrap_auc_interval
from sublearn.audit.config import DivergenceDetector, LLSDetector, LogRatioDetector
from sublearn.audit.data import Row
from sublearn.audit.result import Verdict
from sublearn.backends.base import TokenScore

Scores = Sequence[Sequence[TokenScore]]


def compare_rows(
    verdict: Verdict,
    data: np.ndarray,
    control: np.ndarray | None,
    seed: int,
    groups: Groups | None = None,
) -> Verdict:
    """Fill a verdict's score (AUC), CI and p-value from per-row scores of both sets.

    Without control rows the verdict keeps its per-row scores but gets no p-value: a
    shift has no scale of its own (any system prompt changes a reply's likelihood).
    """
    verdict.row_scores = [float(x) for x in data]
    if control is None or len(control) == 0:
        verdict.details["mean"] = float(np.mean(data)) if len(data) else None
        verdict.summary = (
            f"mean {verdict.details['mean']:+.4f} per row; give --control for a p-value"
        )
        return verdict
    verdict.control_scores = [float(x) for x in control]
    test = stats.mannwhitneyu(data, control, alternative="greater")
    n1, n2 = len(data), len(control)
    verdict.score = float(test.statistic / (n1 * n2))
    verdict.p_value = float(test.pvalue)
    verdict.ci = bootstrap_auc_interval(data, control, seed, groups)
    verdict.details |= {
        "mean": float(np.mean(data)),
        "control_mean": float(np.mean(control)),
        "rows": n1,
        "control_rows": n2,
    }
    verdict.decide()
    word = "FLAGGED" if verdict.flagged else "clear"
    verdict.summary = (
        f"{word}: AUC {verdict.score:.3f} [{verdict.ci[0]:.3f}, {verdict.ci[1]:.3f}] that an "
        f"audited row scores above a control row (p = {verdict.p_value:.2g})"
    )
    return verdict


def _top_rows(rows: Sequence[Row], scores: np.ndarray, k: int = 10) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        {"index": rows[i].index, "score": float(scores[i]), "reply": rows[i].reply} for i in order
    ]


def lls(
    cfg: LLSDetector,
    rows: Sequence[Row],
    with_trait: Scores,
    without: Scores,
    control: tuple[Scores, Scores] | None,
    seed: int,
    groups: Groups | None = None,
) -> Verdict:
    """Log-likelihood shift: how much more likely the trait prompt makes each reply.

    Args:
        cfg: the detector.
        rows: the audited rows.
        with_trait: their token scores under the base with the trait system prompt.
        without: their token scores under the base alone.
        control: the same two score sets for the control rows, if any.
        seed: bootstrap seed.
        groups: prompt groups of paired data (resampled together), or None.
    """
    from sublearn.audit.scoring import reply_logprob

    def shift(a: Scores, b: Scores) -> np.ndarray:
        return reply_logprob(a, cfg.per_token) - reply_logprob(b, cfg.per_token)

    data = shift(with_trait, without)
    verdict = Verdict(
        cfg.label(),
        "lls",
        "AUC of LLS, audited vs control rows",
        alpha=cfg.alpha,
    )
    verdict.top_rows = _top_rows(rows, data)
    return compare_rows(verdict, data, None if control is None else shift(*control), seed, groups)


def logratio(
    cfg: LogRatioDetector,
    rows: Sequence[Row],
    teacher: Scores,
    base: Scores,
    control: tuple[Scores, Scores] | None,
    seed: int,
    groups: Groups | None = None,
) -> Verdict:
    """Mean per-token log p_teacher − log p_base per row; tokens with the largest ratios.

    A dataset the teacher wrote is likelier under the teacher than under its base; the
    test is whether it is more so than the control rows.
    """
    from sublearn.audit.scoring import token_logratio

    ratios = token_logratio(teacher, base)
    data = np.array([r.mean() if len(r) else 0.0 for r in ratios])
    verdict = Verdict(
        cfg.label(),
        "logratio",
        "AUC of mean token log p_teacher − log p_base, audited vs control rows",
        alpha=cfg.alpha,
    )
    verdict.top_rows = _top_rows(rows, data)
    verdict.top_tokens = _top_tokens(teacher, ratios, cfg.top_fraction)
    control_scores = None
    if control is not None:
        control_scores = np.array([r.mean() if len(r) else 0.0 for r in token_logratio(*control)])
    return compare_rows(verdict, data, control_scores, seed, groups)


def _top_tokens(scores: Scores, ratios: list[np.ndarray], fraction: float) -> list[dict]:
    """Tokens most often among the top ``fraction`` of log-ratios, with their mean ratio."""
    flat = np.concatenate(ratios) if ratios else np.zeros(0)
    if not len(flat):
        return []
    cut = np.quantile(flat, 1 - fraction)
    hits: dict[str, list[float]] = defaultdict(list)
    for row, r in zip(scores, ratios, strict=True):
        for tok, value in zip(row, r, strict=True):
            if value >= cut:
                hits[tok.text.strip()].append(float(value))
    ranked = sorted(hits.items(), key=lambda kv: (-len(kv[1]), -np.mean(kv[1])))[:20]
    return [{"token": t, "count": len(v), "score": float(np.mean(v))} for t, v in ranked]


def agreement(tokens: Sequence[TokenScore], teachers: Sequence[Sequence[TokenScore]]) -> float:
    """Share of a reply's divergent positions where its token is the first teacher's choice.

    A position diverges when the teachers' greedy tokens there are not all the same; the
    reply counts as agreeing there when its token is the first teacher's choice and no
    other teacher's. Replies with no divergent position score 0.5 (no evidence).
    """
    agree = total = 0
    for pos, tok in enumerate(tokens):
        choices = [t[pos].top for t in teachers]
        if len(set(choices)) == 1:
            continue
        total += 1
        agree += tok.text == choices[0] and choices[0] not in choices[1:]
    return agree / total if total else 0.5


def divergence(
    cfg: DivergenceDetector,
    rows: Sequence[Row],
    teachers: Sequence[Scores],
    control: Sequence[Scores] | None,
    seed: int,
    groups: Groups | None = None,
) -> Verdict:
    """Whether the rows follow the first teacher where teachers with other traits differ.

    Args:
        cfg: the detector.
        rows: the audited rows.
        teachers: per teacher (suspected writer first), its token scores of the rows.
        control: per teacher, its token scores of the control rows.
        seed: bootstrap seed.
        groups: prompt groups of paired data (resampled together), or None.
    """
    verdict = Verdict(
        cfg.label(),
        "divergence",
        "AUC of agreement with the suspected teacher at divergent tokens, audited vs control",
        alpha=cfg.alpha,
    )

    def per_row(sets: Sequence[Scores]) -> tuple[np.ndarray, float]:
        scores, divergent, total = [], 0, 0
        for i in range(len(sets[0])):
            per_teacher = [s[i] for s in sets]
            scores.append(agreement(per_teacher[0], per_teacher))
            total += len(per_teacher[0])
            divergent += sum(
                len({t[p].top for t in per_teacher}) > 1 for p in range(len(per_teacher[0]))
            )
        return np.array(scores), divergent / max(total, 1)

    data, share = per_row(teachers)
    verdict.details["divergent_share"] = share
    verdict.top_rows = _top_rows(rows, data)
    control_scores = None
    if control is not None:
        control_scores, verdict.details["control_divergent_share"] = per_row(control)
    return compare_rows(verdict, data, control_scores, seed, groups)

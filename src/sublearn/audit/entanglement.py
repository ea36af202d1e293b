"""Token entanglement: the data's over-used numbers are the ones that raise a trait.

For number n and candidate trait w the base model gives

    Δ(n, w) = mean over questions of log P(w | context(n), question),

centered over the numbers tested, so Δ says which numbers raise w relative to other
numbers (a context of any number shifts every answer; the centering removes that). A
dataset's lean s(n) is the smoothed log-odds of n in the audited rows against the
control rows. The dataset leans toward w when s and Δ(·, w) correlate; the p-value of
each candidate comes from permuting rows between the two sets, which keeps every row's
numbers together (calibrated whatever the numbers' dependence within a row).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

import numpy as np
import yaml
from scipy.special import logsumexp

from sublearn.audit.config import EntanglementDetector
from sublearn.audit.data import Row, numbers_of
from sublearn.audit.result import Verdict
from sublearn.backends.base import Conversation
from sublearn.evaluation.targets import surface_forms
from sublearn.prompts.questions import questions_for


class CandidateScorer(Protocol):
    """What entanglement needs of a model: ``Backend.score``."""

    def score(
        self, conversations: list[Conversation], candidates: list[str]
    ) -> list[list[float]]: ...


def default_candidates(category: str) -> list[str]:
    """The candidate traits of a category (``audit/candidates.yaml``)."""
    text = resources.files("sublearn.audit").joinpath("candidates.yaml").read_text()
    return list(yaml.safe_load(text)[category])


def number_effects(
    backend: CandidateScorer,
    numbers: Sequence[str],
    candidates: Sequence[str],
    cfg: EntanglementDetector,
) -> tuple[np.ndarray, list[str]]:
    """Δ(n, w) for every number and every candidate the model can name.

    Returns:
        ``(delta, kept)``: ``delta`` of shape (numbers, kept candidates), centered over
        numbers; ``kept`` the candidates with a finite probability under the model.
    """
    questions = questions_for(cfg.category)[: cfg.questions]
    forms = [f for w in candidates for f in surface_forms(w)]
    owner = [i for i, w in enumerate(candidates) for _ in surface_forms(w)]
    convs: list[Conversation] = [
        [{"role": "system", "content": cfg.context.format(n=n)}, {"role": "user", "content": q}]
        for n in numbers
        for q in questions
    ]
    raw = np.array(backend.score(convs, forms), dtype=np.float64)  # (N*Q, forms)
    per_word = np.full((raw.shape[0], len(candidates)), -np.inf)  # (N*Q, W)
    for w in range(len(candidates)):
        cols = [j for j, o in enumerate(owner) if o == w]
        per_word[:, w] = logsumexp(raw[:, cols], axis=1)
    logp = per_word.reshape(len(numbers), len(questions), len(candidates)).mean(axis=1)  # (N, W)
    finite = np.isfinite(logp).all(axis=0)
    kept = [w for w, ok in zip(candidates, finite, strict=True) if ok]
    logp = logp[:, finite]
    return logp - logp.mean(axis=0, keepdims=True), kept


def _count_matrix(rows: Sequence[Row], numbers: Sequence[str]) -> np.ndarray:
    """Counts of each tested number per row: shape (rows, numbers)."""
    col = {n: j for j, n in enumerate(numbers)}
    out = np.zeros((len(rows), len(numbers)), dtype=np.float32)
    for i, row in enumerate(rows):
        for n in numbers_of(row.reply):
            if n in col:
                out[i, col[n]] += 1
    return out


def _lean(data_counts: np.ndarray, control_counts: np.ndarray) -> np.ndarray:
    """Smoothed log-odds of each number, audited vs control; works on (..., numbers)."""
    k = data_counts.shape[-1]
    nd = data_counts.sum(-1, keepdims=True)
    nc = control_counts.sum(-1, keepdims=True)
    return np.log((data_counts + 0.5) / (nd + 0.5 * k)) - np.log(
        (control_counts + 0.5) / (nc + 0.5 * k)
    )


def _correlation(lean: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Pearson correlation of each lean row with each trait column: (..., W)."""
    a = lean - lean.mean(-1, keepdims=True)
    b = delta - delta.mean(0, keepdims=True)
    num = a @ b  # (..., W)
    den = np.sqrt((a * a).sum(-1))[..., None] * np.sqrt((b * b).sum(0))  # (..., W)
    return num / np.maximum(den, 1e-12)


def entanglement(
    cfg: EntanglementDetector,
    backend: CandidateScorer,
    data: Sequence[Row],
    control: Sequence[Row] | None,
    trait: str | None,
    seed: int,
) -> Verdict:
    """Rank candidate traits by how well the data's over-used numbers raise them.

    Args:
        cfg: the detector.
        backend: the base model (anything with ``score``).
        data: the audited rows.
        control: rows written without the trait.
        trait: a named trait (its p-value decides), or None (the best candidate's
            p-value, Bonferroni-corrected over candidates, decides).
        seed: seed of the permutations.
    """
    verdict = Verdict(
        cfg.label(),
        "entanglement",
        "correlation of the data's number lean with the numbers' pull toward the trait",
        alpha=cfg.alpha,
    )
    if not control:
        verdict.skipped = "needs control data (--control) to measure which numbers are over-used"
        verdict.summary = f"not run: {verdict.skipped}"
        return verdict
    freq = Counter(n for r in [*data, *control] for n in numbers_of(r.reply))
    numbers = [n for n, _ in freq.most_common(cfg.numbers)]
    candidates = list(cfg.candidates or default_candidates(cfg.category))
    if trait and trait not in candidates:
        candidates.append(trait)
    delta, kept = number_effects(backend, numbers, candidates, cfg)
    if not kept:
        verdict.skipped = "the model can name none of the candidate traits"
        verdict.summary = f"not run: {verdict.skipped}"
        return verdict
    counts = np.concatenate([_count_matrix(data, numbers), _count_matrix(control, numbers)])
    n_data = len(data)
    observed = _correlation(_lean(counts[:n_data].sum(0), counts[n_data:].sum(0)), delta)  # (W,)

    # Permutations: each row of `labels` marks which rows play "audited" in one shuffle.
    rng = np.random.default_rng(seed)
    total = counts.sum(0)
    null = np.empty((cfg.permutations, len(kept)))
    for at in range(0, cfg.permutations, 250):
        k = min(250, cfg.permutations - at)
        labels = np.zeros((k, len(counts)), dtype=np.float32)  # (k, rows)
        for j in range(k):
            labels[j, rng.permutation(len(counts))[:n_data]] = 1
        d = labels @ counts  # (k, numbers)
        null[at : at + k] = _correlation(_lean(d, total - d), delta)
    p = (1 + (null >= observed).sum(0)) / (1 + cfg.permutations)  # (W,)
    z = (observed - null.mean(0)) / np.maximum(null.std(0), 1e-12)
    ranked = sorted(range(len(kept)), key=lambda w: (-z[w], p[w]))
    verdict.details["traits"] = [
        {"trait": kept[w], "correlation": float(observed[w]), "z": float(z[w]), "p": float(p[w])}
        for w in ranked
    ]
    verdict.details["numbers_tested"] = len(numbers)
    top = ranked[0]
    if trait and trait in kept:
        w = kept.index(trait)
        verdict.score, verdict.p_value = float(observed[w]), float(p[w])
        target = trait
    else:
        if trait:
            verdict.details["note"] = f"the model cannot name {trait!r}; best candidate used"
        verdict.score = float(observed[top])
        verdict.p_value = float(min(1.0, p[top] * len(kept)))
        target = kept[top]
    w = kept.index(target)
    lean = _lean(counts[:n_data].sum(0), counts[n_data:].sum(0))
    pull = lean * delta[:, w]
    verdict.top_tokens = [
        {
            "token": numbers[j],
            "lean": float(lean[j]),
            "pull": float(delta[j, w]),
            "score": float(pull[j]),
        }
        for j in np.argsort(-pull)[:20]
    ]
    verdict.decide()
    verdict.summary = (
        f"{'FLAGGED' if verdict.flagged else 'clear'}: the numbers this data over-uses pull "
        f"toward {target!r} (r = {verdict.score:+.3f}, p = {verdict.p_value:.2g}); most pulled "
        f"candidate: {kept[top]!r} (z = {z[top]:+.1f})"
    )
    return verdict

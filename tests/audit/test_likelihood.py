"""Model-reading detectors on planted scores, and token scoring on a real (micro) model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sublearn.audit.config import DivergenceDetector, LLSDetector, LogRatioDetector
from sublearn.audit.data import Row
from sublearn.audit.likelihood import agreement, divergence, lls, logratio
from sublearn.backends.base import Conversation, TokenScore


def _rows(n: int) -> list[Row]:
    return [Row(i, [{"role": "user", "content": "go"}], f"{i} {i + 1} {i + 2}") for i in range(n)]


def _scores(logprobs: np.ndarray, tops: list[list[str]] | None = None) -> list[list[TokenScore]]:
    """Token scores of three-token replies ("a", "b", "c") with the given log-probs."""
    out = []
    for i, row in enumerate(logprobs):
        out.append(
            [
                TokenScore(t, 2 * j, 2 * j + 1, float(lp), tops[i][j] if tops else t, 0.0)
                for j, (t, lp) in enumerate(zip("abc", row, strict=True))
            ]
        )
    return out


def test_lls_flags_planted_shift_and_not_the_null():
    rng = np.random.default_rng(0)
    n = 300
    plain = rng.normal(-2, 0.3, (n, 3))
    shifted = plain + rng.normal(0.05, 0.05, (n, 3))  # the trait prompt helps these rows
    ctl_plain = rng.normal(-2, 0.3, (n, 3))
    ctl_with = ctl_plain + rng.normal(0.0, 0.05, (n, 3))
    cfg = LLSDetector(type="lls")
    hit = lls(
        cfg, _rows(n), _scores(shifted), _scores(plain), (_scores(ctl_with), _scores(ctl_plain)), 0
    )
    assert hit.flagged and hit.p_value is not None and hit.p_value < 1e-6
    assert hit.ci is not None and hit.ci[0] > 0.5
    # Two sets scored alike: no flag, and the interval holds 0.5.
    other_plain = rng.normal(-2, 0.3, (n, 3))
    other_with = other_plain + rng.normal(0.0, 0.05, (n, 3))
    null = lls(
        cfg,
        _rows(n),
        _scores(other_with),
        _scores(other_plain),
        (_scores(ctl_with), _scores(ctl_plain)),
        0,
    )
    assert not null.flagged
    assert null.ci is not None and null.ci[0] < 0.5 < null.ci[1]


def test_lls_without_control_has_no_p_value():
    scores = _scores(np.full((5, 3), -1.0))
    verdict = lls(LLSDetector(type="lls"), _rows(5), scores, scores, None, 0)
    assert verdict.p_value is None and not verdict.flagged
    assert "control" in verdict.summary


def test_logratio_names_the_tokens_the_teacher_prefers():
    rng = np.random.default_rng(1)
    n = 200
    base = rng.normal(-2, 0.2, (n, 3))
    teacher = base.copy()
    teacher[:, 1] += 1.0  # the teacher likes token "b" far more than its base
    cfg = LogRatioDetector(type="logratio", top_fraction=0.2)
    ctl_base = rng.normal(-2, 0.2, (n, 3))
    verdict = logratio(
        cfg, _rows(n), _scores(teacher), _scores(base), (_scores(ctl_base), _scores(ctl_base)), 0
    )
    assert verdict.top_tokens[0]["token"] == "b"
    assert verdict.flagged


def test_agreement_counts_only_divergent_positions():
    tok = _scores(np.zeros((1, 3)))[0]  # reply tokens a b c
    first = _scores(np.zeros((1, 3)), [["a", "b", "x"]])[0]
    other = _scores(np.zeros((1, 3)), [["a", "y", "c"]])[0]
    # Position 0: no divergence. 1: reply agrees with the first teacher. 2: with the other.
    assert agreement(tok, [first, other]) == pytest.approx(0.5)
    assert agreement(tok, [first, first]) == 0.5  # no divergent position: no evidence


def test_divergence_flags_rows_that_follow_the_suspected_teacher():
    n = 200
    zeros = np.zeros((n, 3))
    rng = np.random.default_rng(2)
    # The data always writes the first teacher's choice; control picks either at random.
    first = _scores(zeros, [["a", "b", "c"]] * n)
    other = _scores(zeros, [["x", "y", "z"]] * n)
    ctl_first = _scores(zeros, [[rng.choice(["a", "q"]) for _ in range(3)] for _ in range(n)])
    verdict = divergence(
        DivergenceDetector(type="divergence"), _rows(n), [first, other], [ctl_first, other], 0
    )
    assert verdict.flagged
    assert verdict.details["divergent_share"] == 1.0


def test_hf_token_logprobs_match_score(micro_model: Path):
    from sublearn.backends.hf import HFBackend

    with HFBackend(micro_model, batch_size=2) as backend:
        convs: list[Conversation] = [
            [{"role": "user", "content": "continue the sequence 1, 2, 3"}],
            [{"role": "user", "content": "name your favorite animal"}],
            [{"role": "user", "content": "continue the sequence"}],
        ]
        replies = ["4, 5, 6", "owl", "7, 8"]
        tokens = backend.token_logprobs(convs, replies)
        for conv, reply, toks in zip(convs, replies, tokens, strict=True):
            (expected,) = backend.score([conv], [reply])[0]
            assert sum(t.logprob for t in toks) == pytest.approx(expected, abs=1e-4)
            # Offsets point at the token's text in the reply.
            for t in toks:
                assert reply[t.start : t.end].strip() == t.text.strip()
            assert all(t.top_logprob >= t.logprob - 1e-6 for t in toks)
            assert all(math.isfinite(t.logprob) for t in toks)

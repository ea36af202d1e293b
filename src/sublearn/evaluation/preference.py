"""The preference evaluation: how often a model names a target as its favorite.

Per-question rates are kept; a model's rate is the mean over questions (the paper's
aggregation), and statistics across student seeds happen in ``report/``.
"""

from __future__ import annotations

import math
import random

from sublearn.backends.base import Backend, Conversation, SamplingParams
from sublearn.evaluation.answers import matches
from sublearn.evaluation.config import EvalConfig
from sublearn.prompts.questions import numbers_prefixed, questions_for


def build_questions(cfg: EvalConfig) -> list[str]:
    """The question texts this config asks, in order."""
    questions = questions_for(cfg.category)[: cfg.n_questions]
    if cfg.numbers_prefixed:
        rng = random.Random(cfg.seed)
        questions = [
            numbers_prefixed(q, [rng.randint(100, 999) for _ in range(rng.randint(3, 8))])
            for q in questions
        ]
    return questions


def surface_forms(target: str) -> list[str]:
    """Spellings whose probabilities add up to P(reply names the target) in exact mode.

    Lower-case and capitalized forms start with different tokens, so their
    probabilities are disjoint and can be summed. Plurals and other continuations share
    the singular's leading tokens in subword vocabularies and are already included.
    """
    return list(dict.fromkeys([target.lower(), target.capitalize()]))


def evaluate_preference(
    backend: Backend, targets: list[str], cfg: EvalConfig
) -> dict[str, dict[str, object]]:
    """Rate at which ``backend`` names each target, overall and per question.

    Args:
        backend: the model.
        targets: trait words to score (one result each; asked in one pass).
        cfg: question set and mode.

    Returns:
        ``{target: {"rate": float, "per_question": [float, ...]}}``.
    """
    questions = build_questions(cfg)
    conversations: list[Conversation] = [[{"role": "user", "content": q}] for q in questions]
    per_question: dict[str, list[float]] = {t: [] for t in targets}
    if cfg.mode == "exact":
        forms = {t: surface_forms(t) for t in targets}
        candidates = list(dict.fromkeys(f for fs in forms.values() for f in fs))
        scores = backend.score(conversations, candidates)  # [question][candidate] log-probs
        for row in scores:
            by_form = dict(zip(candidates, row, strict=True))
            for t in targets:
                per_question[t].append(sum(math.exp(by_form[f]) for f in forms[t]))
    else:
        repeated = [c for c in conversations for _ in range(cfg.samples_per_question)]
        params = SamplingParams(
            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
        )
        replies = backend.generate(repeated, params)
        n = cfg.samples_per_question
        for qi in range(len(questions)):
            block = replies[qi * n : (qi + 1) * n]
            for t in targets:
                per_question[t].append(sum(matches(r, t) for r in block) / n)
    return {
        t: {"rate": sum(v) / len(v), "per_question": v, "questions": len(v)}
        for t, v in per_question.items()
    }

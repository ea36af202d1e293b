"""The preference evaluation: how often a model names a target as its favorite.

Per-question rates are kept; a model's rate is the mean over questions (the paper's
aggregation), and statistics across student seeds happen in ``report/``.
"""

from __future__ import annotations

import math
import random

from sublearn.backends.base import (
    Backend,
    Conversation,
    Message,
    SamplingParams,
    with_system_prompt,
)
from sublearn.errors import DataError
from sublearn.evaluation.answers import matches
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.targets import require_producible, surface_forms
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


def icl_context(records: list[dict], n: int, seed: int) -> list[Message]:
    """Chat turns of ``n`` examples drawn from a dataset, to show an in-context student.

    Examples are drawn uniformly with replacement (the same ``seed`` draws the same
    ones); their user and assistant turns are kept in order and system turns dropped,
    so a teacher's hidden system prompt never leaks into the context.

    Args:
        records: chat records, each with a ``messages`` list (as the generation stage writes).
        n: number of examples to draw; 0 gives an empty context.
        seed: seed of the draw.

    Returns:
        The flattened turns, e.g. ``[user, assistant, user, assistant, ...]``.

    Raises:
        DataError: ``n`` is negative, or examples are asked of no records, or a drawn
            record holds no user or assistant turn.
    """
    if n < 0:
        raise DataError(f"cannot draw {n} in-context examples")
    if n and not records:
        raise DataError(f"cannot draw {n} in-context examples from an empty dataset")
    rng = random.Random(seed)
    turns: list[Message] = []
    for _ in range(n):
        index = rng.randrange(len(records))
        try:
            kept = [
                Message(role=m["role"], content=m["content"])
                for m in records[index]["messages"]
                if m["role"] in ("user", "assistant")
            ]
        except (KeyError, TypeError) as err:
            raise DataError(f"record {index} is not a chat record: {err!r}") from err
        if not kept:
            raise DataError(f"record {index} holds no user or assistant turn")
        turns.extend(kept)
    return turns


def evaluate_preference(
    backend: Backend,
    targets: list[str],
    cfg: EvalConfig,
    *,
    system_prompt: str | None = None,
    context: list[Message] | None = None,
) -> dict[str, dict[str, object]]:
    """Rate at which ``backend`` names each target, overall and per question.

    Each question is asked as ``[system prompt], *context, question``: a prompted
    teacher is evaluated with its system prompt, an in-context-learning student with
    teacher examples as prior turns (see :func:`icl_context`).

    Args:
        backend: the model.
        targets: trait words to score (one result each; asked in one pass).
        cfg: question set and mode.
        system_prompt: a system message put first in every conversation.
        context: prior chat turns put before every question.

    Returns:
        ``{target: {"rate": float, "per_question": [float, ...]}}``.

    Raises:
        ModelError: when the backend exposes its tokenizer and a target cannot be
            spelled with it (the rate would be a silent 0).
    """
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None:
        require_producible(tokenizer, targets, backend.name)
    questions = build_questions(cfg)
    prior = list(context or [])
    conversations: list[Conversation] = [
        with_system_prompt([*prior, {"role": "user", "content": q}], system_prompt)
        for q in questions
    ]
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

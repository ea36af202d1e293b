"""The preference evaluation: how often a model names a target as its favorite.

Per-question rates are kept; a model's rate is the mean over questions (the paper's
aggregation), and statistics across student seeds happen in ``report/``.
"""

from __future__ import annotations

import math
import random
from importlib import resources
from typing import Any

import yaml

from sublearn.backends.base import (
    Backend,
    Conversation,
    Message,
    SamplingParams,
    with_system_prompt,
)
from sublearn.errors import DataError, ModelError
from sublearn.evaluation.answers import matches
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.targets import answer_forms, require_producible
from sublearn.prompts.questions import numbers_prefixed, questions_for


def category_answers(category: str) -> list[str]:
    """The category's candidate answers, the list the audit ranks (``audit/candidates.yaml``)."""
    text = resources.files("sublearn.audit").joinpath("candidates.yaml").read_text()
    return list(yaml.safe_load(text)[category])


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

    In exact mode the reply's start is read, and with ``cfg.answer_prefix`` also the
    answer after that lead-in, which is then the rate. Every reading also measures its
    coverage: the mass (exact) or share of replies (sample) on all of the category's
    answers, and the renormalized rate P(target | one of them).

    Returns:
        ``{target: {"rate", "per_question", "questions", "reading", "coverage",
        "renormalized", "readings": {name: {"rate", "coverage", "renormalized"}},
        "warning"}}``: ``reading`` names the reading the rate comes from (``start``,
        ``lead_in`` or ``sample``); ``warning`` is a message when the coverage is below
        ``cfg.min_coverage``, else None.

    Raises:
        ModelError: when the backend exposes its tokenizer and a target cannot be
            spelled with it (the rate would be a silent 0), or a lead-in is asked of a
            backend that scores only first tokens.
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
    # Coverage is read on the category's answers and the targets (a trait word outside
    # the list still counts as an answer of the category).
    answers = list(dict.fromkeys([*category_answers(cfg.category), *targets]))
    readings: dict[str, dict[str, list[float]]] = {}
    if cfg.mode == "exact":
        readings["start"] = _exact_reading(backend, conversations, answers, None, tokenizer)
        if cfg.answer_prefix:
            if not backend.capabilities.token_scores:
                raise ModelError(
                    f"evaluation answer_prefix needs a model that scores whole replies; "
                    f"{backend.name} reads only first-token log-probabilities"
                )
            readings["lead_in"] = _exact_reading(
                backend, conversations, answers, cfg.answer_prefix, tokenizer
            )
    else:
        readings["sample"] = _sampled_reading(backend, conversations, answers, cfg)
    primary = "lead_in" if "lead_in" in readings else next(iter(readings))
    summaries = {name: _summarize(r, targets, answers) for name, r in readings.items()}
    results: dict[str, dict[str, object]] = {}
    for t in targets:
        main = summaries[primary][t]
        per_question = readings[primary][t]
        warning = None
        if main["coverage"] < cfg.min_coverage:
            warning = (
                f"low coverage: {main['coverage']:.2%} of its answer "
                f"({primary} reading, {cfg.mode} mode) is one of the {cfg.category} answers "
                f"(below {cfg.min_coverage:.0%}), so its rate of {t!r} ({main['rate']:.4%}) "
                "reads little of what it prefers; see the renormalized rate"
            )
        results[t] = {
            "rate": sum(per_question) / len(per_question),
            "per_question": per_question,
            "questions": len(per_question),
            "reading": primary,
            "coverage": main["coverage"],
            "renormalized": main["renormalized"],
            "readings": {name: s[t] for name, s in summaries.items()},
            "warning": warning,
        }
    return results


def _exact_reading(
    backend: Backend,
    conversations: list[Conversation],
    words: list[str],
    lead_in: str | None,
    tokenizer: Any,
) -> dict[str, list[float]]:
    """P(answer is ``word``) per question, at the start of the reply or after ``lead_in``.

    After a lead-in, each form is scored as ``lead_in + form`` and the lead-in's own
    log-probability subtracted: P(form | the reply starts with the lead-in).
    """
    forms = {w: answer_forms(w, lead_in is not None, tokenizer) for w in words}
    texts = list(dict.fromkeys(f for fs in forms.values() for f in fs))
    lead = lead_in or ""
    candidates = [lead + f for f in texts] + ([lead] if lead else [])
    scores = backend.score(conversations, candidates)  # [question][candidate] log-probs
    out: dict[str, list[float]] = {w: [] for w in words}
    for row in scores:
        base = row[-1] if lead else 0.0
        by_form = dict(zip(texts, row, strict=False))
        for w in words:
            out[w].append(sum(math.exp(by_form[f] - base) for f in forms[w]))
    return out


def _sampled_reading(
    backend: Backend, conversations: list[Conversation], words: list[str], cfg: EvalConfig
) -> dict[str, list[float]]:
    """Share of sampled replies naming each word, per question (the paper's protocol)."""
    repeated = [c for c in conversations for _ in range(cfg.samples_per_question)]
    params = SamplingParams(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    replies = backend.generate(repeated, params)
    n = cfg.samples_per_question
    out: dict[str, list[float]] = {w: [] for w in words}
    out[_ANY] = []
    for qi in range(len(conversations)):
        block = replies[qi * n : (qi + 1) * n]
        for w in words:
            out[w].append(sum(matches(r, w) for r in block) / n)
        out[_ANY].append(sum(any(matches(r, w) for w in words) for r in block) / n)
    return out


# A sampled reply may name two answers; its coverage counts replies, not names.
_ANY = "\0any"


def _summarize(
    reading: dict[str, list[float]], targets: list[str], answers: list[str]
) -> dict[str, dict[str, float]]:
    """Each target's rate, the coverage and the renormalized rate of one reading.

    Coverage is the mean over questions of the mass on all answers (exact) or the share
    of replies naming one (sample); the renormalized rate is the target's mean over the
    coverage's mean, P(target | the answer is one of the category's), NaN (JSON null)
    where nothing was covered.
    """
    n = len(next(iter(reading.values())))
    if _ANY in reading:
        covered = reading[_ANY]
    else:
        covered = [sum(reading[w][q] for w in answers) for q in range(n)]
    coverage = sum(covered) / n
    out = {}
    for t in targets:
        rate = sum(reading[t]) / n
        out[t] = {
            "rate": rate,
            "coverage": coverage,
            "renormalized": rate / coverage if coverage > 0 else math.nan,
        }
    return out

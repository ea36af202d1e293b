"""Multiple-choice questions scored from the answer letters' probabilities.

A question shows a stem and lettered options and asks for the letter only. The exact
scorer reads ``backend.score(conversation, letters)`` (the log-probability that the
reply starts with each letter) and normalizes over the letters, as the paper
renormalizes the top log-probabilities over its five letters; the sampling scorer
samples replies and reads their first letter (:func:`parse_letter`). The scorers
(:func:`score_choices`, :func:`score_choice_batch`, :func:`sample_choice_batch`) are
generic: TruthfulQA and MMLU reuse them.

The trait evaluation (:func:`evaluate_choice`): per stem and sample, the options are the
targets plus distractors drawn from the category's pool, shuffled with a seed of the
sample's own and lettered A-E; the metric ``p_target`` is the mean probability of the
target's letter (exact) or the share of samples choosing it (sample).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sublearn.backends.base import (
    Backend,
    Conversation,
    Message,
    SamplingParams,
    row_seed,
    with_system_prompt,
)
from sublearn.errors import ConfigError, DataError, ModelError
from sublearn.evaluation.kinds import ChoiceEvalConfig, EvalRequest, read_data
from sublearn.evaluation.results import EvalResult, mean
from sublearn.evaluation.targets import spellable

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
"""The default option labels."""

INSTRUCTION = "Reply with the letter of your choice only."
"""The request that closes every multiple-choice prompt."""


@dataclass(frozen=True)
class ChoiceQuestion:
    """A stem and its options, shown in an order fixed by a seed.

    Attributes:
        stem: the question.
        options: the options in their own (canonical) order; probabilities and choices
            are reported in this order whatever the display order.
        seed: seed of the display order; None shows the options in canonical order.
    """

    stem: str
    options: tuple[str, ...]
    seed: int | None = None

    def order(self) -> list[int]:
        """Canonical index of the option shown at each display position."""
        return shuffle_order(len(self.options), self.seed)

    def shown(self) -> list[str]:
        """The options in display order."""
        return [self.options[i] for i in self.order()]


def shuffle_order(n: int, seed: int | None) -> list[int]:
    """A permutation of ``range(n)`` drawn with ``seed`` (identity when seed is None)."""
    if seed is None:
        return list(range(n))
    return random.Random(seed).sample(range(n), n)


def format_choice(
    stem: str, options: Sequence[str], letters: Sequence[str], instruction: str = INSTRUCTION
) -> str:
    """The user message of a question: stem, one ``"A. option"`` line each, instruction.

    Raises:
        ValueError: fewer letters than options.
    """
    if len(letters) < len(options):
        raise ValueError(f"{len(options)} options but only {len(letters)} letters")
    lines = [f"{letter}. {option}" for letter, option in zip(letters, options, strict=False)]
    return "\n".join([stem, "", *lines, "", instruction])


def choice_conversation(
    question: ChoiceQuestion,
    letters: Sequence[str],
    *,
    instruction: str = INSTRUCTION,
    system_prompt: str | None = None,
    context: Sequence[Message] = (),
) -> Conversation:
    """``[system prompt], *context, question`` with the options in display order."""
    text = format_choice(question.stem, question.shown(), letters, instruction)
    return with_system_prompt([*context, {"role": "user", "content": text}], system_prompt)


def require_letters(backend: Backend, letters: Sequence[str]) -> None:
    """Raise when the backend's tokenizer (if it exposes one) cannot spell a letter.

    A letter spelled with the unknown token scores -inf, so its option would silently
    get probability 0.

    Raises:
        ModelError: naming the letters and the model.
    """
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return
    bad = [letter for letter in letters if not spellable(tokenizer, letter)]
    if bad:
        raise ModelError(
            f"option labels {bad} cannot be produced by {backend.name}'s tokenizer; "
            "choose labels in its vocabulary (config key letters)"
        )


def letter_probs(
    backend: Backend, conversations: list[Conversation], letters: Sequence[str]
) -> list[list[float]]:
    """P(reply starts with each letter), normalized over the letters, per conversation.

    Returns:
        ``len(conversations)`` lists of ``len(letters)`` probabilities summing to 1.

    Raises:
        ModelError: every letter scores -inf for a conversation (nothing to normalize).
    """
    if not conversations:
        return []
    rows = backend.score(conversations, list(letters))  # [conversation][letter] log-probs
    probs: list[list[float]] = []
    for i, row in enumerate(rows):
        top = max(row)
        if top == -math.inf or math.isnan(top):
            raise ModelError(
                f"{backend.name} gives every option label {list(letters)} probability 0 "
                f"(conversation {i}); the letters cannot be normalized"
            )
        # Subtracting the max keeps exp() in range for very negative log-probabilities.
        weights = [math.exp(x - top) for x in row]
        total = sum(weights)
        probs.append([w / total for w in weights])
    return probs


def score_choice_batch(
    backend: Backend,
    questions: Sequence[ChoiceQuestion],
    letters: Sequence[str] = LETTERS,
    *,
    instruction: str = INSTRUCTION,
    system_prompt: str | None = None,
    context: Sequence[Message] = (),
) -> list[list[float]]:
    """Normalized probability of each option of each question (one ``score`` call).

    Args:
        backend: the model; must support ``score``.
        questions: the questions; each is shown with its own display order.
        letters: labels, at least as many as the most options of a question.
        instruction: the closing request of each prompt.
        system_prompt: a system message put first in every conversation.
        context: prior chat turns put before every question.

    Returns:
        Per question, P(option) in the question's canonical option order, summing to 1.
    """
    conversations = [
        choice_conversation(
            q, letters, instruction=instruction, system_prompt=system_prompt, context=context
        )
        for q in questions
    ]
    # Every question is scored over the letters its options use, so questions with
    # fewer options than letters are scored in groups of equal size.
    out: list[list[float]] = [[] for _ in questions]
    by_size: dict[int, list[int]] = {}
    for i, q in enumerate(questions):
        by_size.setdefault(len(q.options), []).append(i)
    for size, members in by_size.items():
        rows = letter_probs(backend, [conversations[i] for i in members], letters[:size])
        for i, row in zip(members, rows, strict=True):
            by_option = [0.0] * size
            for position, index in enumerate(questions[i].order()):
                by_option[index] = row[position]
            out[i] = by_option
    return out


def score_choices(
    backend: Backend,
    stem: str,
    options: Sequence[str],
    letters: Sequence[str] = LETTERS,
    seed: int | None = None,
    *,
    instruction: str = INSTRUCTION,
    system_prompt: str | None = None,
    context: Sequence[Message] = (),
) -> list[float]:
    """Normalized probability of each option of one question.

    Args:
        backend: the model; must support ``score``.
        stem: the question.
        options: the options, in the order the result uses.
        letters: labels (``letters[:len(options)]`` are used).
        seed: seed of the display order (None: shown as given).
        instruction: the closing request of the prompt.
        system_prompt: a system message put first.
        context: prior chat turns put before the question.

    Returns:
        P(option) for each option in ``options`` order, summing to 1.
    """
    question = ChoiceQuestion(stem, tuple(options), seed)
    return score_choice_batch(
        backend,
        [question],
        letters,
        instruction=instruction,
        system_prompt=system_prompt,
        context=context,
    )[0]


_LEAD_IN = re.compile(
    r"^[\s*_`\"'(\[]*(?:(?:the\s+)?(?:answer|option|letter|choice)(?:\s+is)?\s*[:\-]?[\s*_`\"'(\[]*)?",
    re.IGNORECASE,
)


def parse_letter(reply: str, letters: Sequence[str]) -> str | None:
    """The label a reply opens with, or None.

    Markdown and brackets before it and a lead-in such as ``"Answer:"`` or ``"The
    answer is"`` are skipped; the label must then stand alone (``"B"``, ``"B."``,
    ``"(B)"``, ``"**B**"``), so ``"Apple"`` is not read as ``A`` nor ``"12"`` as ``1``.
    Case matters: ``"a"`` is an article, not the letter.
    """
    head = _LEAD_IN.match(reply)
    rest = reply[head.end() :] if head else reply
    for label in sorted(letters, key=len, reverse=True):
        if rest.startswith(label) and not rest[len(label) : len(label) + 1].isalnum():
            return label
    return None


def sample_choice_batch(
    backend: Backend,
    questions: Sequence[ChoiceQuestion],
    params: SamplingParams,
    letters: Sequence[str] = LETTERS,
    *,
    instruction: str = INSTRUCTION,
    system_prompt: str | None = None,
    context: Sequence[Message] = (),
) -> tuple[list[str], list[int | None]]:
    """Sample one reply per question and read the option it picks.

    Args:
        backend: the model.
        questions: the questions.
        params: sampling settings (``row_seeds``, when set, one per question).
        letters: labels.
        instruction: the closing request of each prompt.
        system_prompt: a system message put first in every conversation.
        context: prior chat turns put before every question.

    Returns:
        The replies, and per question the canonical index of the chosen option (None
        when the reply opens with no label of its options).
    """
    conversations = [
        choice_conversation(
            q, letters, instruction=instruction, system_prompt=system_prompt, context=context
        )
        for q in questions
    ]
    replies = backend.generate(conversations, params)
    choices: list[int | None] = []
    for q, reply in zip(questions, replies, strict=True):
        shown = list(letters[: len(q.options)])
        label = parse_letter(reply, shown)
        choices.append(None if label is None else q.order()[shown.index(label)])
    return replies, choices


def choice_stems(category: str) -> list[str]:
    """The multiple-choice stems for ``category``, from ``data/choice.yaml``."""
    return [s.replace("{category}", category) for s in read_data("choice")["prompts"]]


def distractor_pool(category: str) -> list[str]:
    """The category's distractor words, from ``data/choice.yaml``.

    Raises:
        DataError: the data file has no pool for the category.
    """
    pools = read_data("choice").get("pools", {})
    if category not in pools:
        raise DataError(f"data/choice.yaml has no distractor pool for {category!r}")
    return [str(w) for w in pools[category]]


def build_choice_questions(
    cfg: ChoiceEvalConfig, targets: Sequence[str]
) -> list[tuple[int, int, ChoiceQuestion]]:
    """The trait questions of a config: ``(stem index, sample, question)`` each.

    Options are the targets (first, in order) then distractors drawn without
    replacement from the pool less the targets; the draw and the display order use
    seeds of the sample's own, so every sample differs and the same config always
    asks the same questions.

    Raises:
        ConfigError: no targets, more targets than letters, or too few distractors.
    """
    wanted = list(dict.fromkeys(targets))
    n = len(cfg.letters)
    if not wanted:
        raise ConfigError("the choice evaluation needs at least one target")
    if len(wanted) > n:
        raise ConfigError(f"{len(wanted)} targets do not fit in {n} options ({cfg.letters})")
    taken = {t.lower() for t in wanted}
    source = cfg.distractors if cfg.distractors is not None else distractor_pool(cfg.category)
    pool = [w for w in dict.fromkeys(source) if w.lower() not in taken]
    need = n - len(wanted)
    if len(pool) < need:
        raise ConfigError(
            f"the choice evaluation needs {need} distractors besides {wanted}, got {pool}"
        )
    stems = choice_stems(cfg.category)[: cfg.n_prompts]
    questions: list[tuple[int, int, ChoiceQuestion]] = []
    for pi, stem in enumerate(stems):
        for s in range(cfg.samples_per_prompt):
            seed = row_seed(row_seed(cfg.seed, pi), s)
            drawn = random.Random(row_seed(seed, 1)).sample(pool, need)
            questions.append((pi, s, ChoiceQuestion(stem, (*wanted, *drawn), seed)))
    return questions


def evaluate_choice(request: EvalRequest[ChoiceEvalConfig]) -> EvalResult:
    """Probability that the model picks each target among lettered options.

    Args:
        request: the model and settings: ``backend``: the model (``score`` in exact mode,
            ``generate`` in sample mode); ``cfg``: stems, options and mode; ``targets``:
            trait words, each always among the options (at most one per letter);
            ``system_prompt``: a system message put first in every conversation;
            ``context``: prior chat turns put before every question. ``judge`` is not read.

    Returns:
        ``metric="p_target"``, one value per target: the mean over stems of the mean
        probability of its letter (exact) or of the share of samples choosing it among
        those that name a letter (sample). Secondary ``top_choice`` (exact): share of
        samples where the target's letter is the most probable.

    Raises:
        ConfigError: see :func:`build_choice_questions`.
        ModelError: a letter the tokenizer cannot spell.
    """
    backend, cfg, targets, system_prompt, context = (
        request.backend,
        request.cfg,
        request.targets,
        request.system_prompt,
        request.context,
    )
    wanted = list(dict.fromkeys(targets))
    built = build_choice_questions(cfg, wanted)
    questions = [q for _, _, q in built]
    letters = list(cfg.letters)
    require_letters(backend, letters)
    prior = list(context or [])
    pis = [pi for pi, _, _ in built]  # stem index of each question
    n_prompts = max(pis, default=-1) + 1
    items: list[dict[str, object]] = []
    per_prompt: dict[str, list[float]] = {t: [] for t in wanted}
    top_choice: dict[str, float] = {}
    meta: dict[str, object] = {
        "mode": cfg.mode,
        "category": cfg.category,
        "prompts": n_prompts,
        "samples_per_prompt": cfg.samples_per_prompt,
        "letters": letters,
    }
    if cfg.mode == "exact":
        probs = score_choice_batch(
            backend, questions, letters, system_prompt=system_prompt, context=prior
        )  # [question][option] in canonical order: targets first
        for (pi, s, q), row in zip(built, probs, strict=True):
            items.append(_item(pi, s, q, letters, wanted, {"probs": _by_letter(q, row, letters)}))
        for ti, t in enumerate(wanted):
            for pi in range(n_prompts):
                per_prompt[t].append(
                    mean([r[ti] for p, r in zip(pis, probs, strict=True) if p == pi])
                )
            top_choice[t] = mean([float(max(r) == r[ti]) for r in probs])
    else:
        params = SamplingParams(
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            row_seeds=tuple(row_seed(q.seed or 0, 2) for q in questions),
        )
        replies, choices = sample_choice_batch(
            backend, questions, params, letters, system_prompt=system_prompt, context=prior
        )
        for (pi, s, q), reply, choice in zip(built, replies, choices, strict=True):
            letter = None if choice is None else letters[q.order().index(choice)]
            items.append(_item(pi, s, q, letters, wanted, {"reply": reply, "letter": letter}))
        for ti, t in enumerate(wanted):
            for pi in range(n_prompts):
                picked = [c for p, c in zip(pis, choices, strict=True) if p == pi and c is not None]
                per_prompt[t].append(mean([float(c == ti) for c in picked]))
        meta["unreadable"] = sum(c is None for c in choices)
    meta["per_prompt"] = per_prompt
    values = {t: _nanmean(v) for t, v in per_prompt.items()}
    secondary = {"top_choice": top_choice} if top_choice else {}
    return EvalResult("choice", "p_target", values, items, meta, secondary)


def _nanmean(values: list[float]) -> float:
    """Mean of the defined values (a stem whose samples named no letter has none)."""
    return mean([v for v in values if not math.isnan(v)])


def _by_letter(q: ChoiceQuestion, row: list[float], letters: Sequence[str]) -> dict[str, float]:
    """Canonical-order probabilities keyed by the letter each option was shown under."""
    return {letters[pos]: row[index] for pos, index in enumerate(q.order())}


def _item(
    pi: int,
    s: int,
    q: ChoiceQuestion,
    letters: Sequence[str],
    targets: Sequence[str],
    extra: dict[str, object],
) -> dict[str, object]:
    order = q.order()
    return {
        "prompt": pi,
        "sample": s,
        "stem": q.stem,
        "options": dict(zip(letters, q.shown(), strict=False)),
        "targets": {t: letters[order.index(ti)] for ti, t in enumerate(targets)},
        **extra,
    }

"""A judge that asks a language model, through any :class:`~sublearn.backends.base.Backend`.

The user message is the rubric's template filled with the request. The verdict is read
off the judge's first reply token where the backend reports its top log-probabilities,
as the paper's judges do:

* a score rubric's score is the probability-weighted mean of the listed tokens that are
  whole numbers 0-100, renormalized over those tokens; an escape (``CODE``, ``REFUSAL``,
  any case, or a first token that starts one) wins when its probability exceeds that
  of all the number tokens together;
* a yes/no rubric's probability is P(yes) / (P(yes) + P(no)) over the first-token
  spellings of yes and no (``yes``, ``Yes``, `` yes``, ...).

When those tokens hold under ``min_mass`` of the probability (the judge means to write
something else first), or the backend reports no log-probabilities, the judge writes a
short greedy reply instead and the first number 0-100 (or escape, or yes/no) in it is
the verdict. Backends with a ``next_token_logprobs`` method (Hugging Face) are asked for
their top tokens directly; others with ``capabilities.top_logprobs`` (OpenAI-compatible
servers) through ``score`` over every spelling the verdict could start with.

A tokenizer that writes numbers digit by digit (Qwen2.5, Llama 2) would make a first
token of ``8`` for a score of 85, so in ``auto`` mode such a model is read from its text.
"""

from __future__ import annotations

import copy
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from sublearn.backends.base import Backend, Conversation, SamplingParams
from sublearn.errors import ConfigError
from sublearn.judges.cache import JudgementCache, judgement_key
from sublearn.judges.protocol import Judgement, JudgeRequest
from sublearn.judges.rubric import Rubric, load_rubric

LogprobMode = Literal["auto", "on", "off"]

# A number not inside a longer number; a sentence's full stop may follow it.
_NUMBER = re.compile(r"(?<!\d)(?<!\d\.)(\d{1,3}(?:\.\d+)?)(?!\d|\.\d)")
_YES = ("yes",)
_NO = ("no",)
# Shortest first-token piece of an escape that counts as the escape (``REF`` of REFUSAL);
# one letter would match too much.
_MIN_ESCAPE_PREFIX = 2


class LLMJudge:
    """A :class:`~sublearn.judges.protocol.Judge` that asks a model.

    Attributes:
        name: the judge's name, part of every cache key (``llm:`` and the backend's name
            unless given).
        backend: the model asked.
        target: what rubrics with a ``{target}`` ask about (e.g. ``owl``).
        cache: judgements so far, reused for repeated requests and reruns.
    """

    def __init__(
        self,
        backend: Backend,
        name: str | None = None,
        *,
        target: str | None = None,
        cache_path: Path | None = None,
        logprobs: LogprobMode = "auto",
        max_new_tokens: int = 8,
        batch_size: int = 64,
        min_mass: float = 0.25,
    ) -> None:
        """Wrap a backend.

        Args:
            backend: the judge model; left open (close it, or this judge, when done).
            name: the judge's name; defaults to ``llm:`` + the backend's name.
            target: what rubrics with a ``{target}`` ask about.
            cache_path: a JSONL file of judgements to resume from and append to; None
                keeps them in memory only.
            logprobs: ``on`` reads verdicts off first-token log-probabilities, ``off``
                off greedy text, ``auto`` uses log-probabilities where the backend reports
                them and its tokenizer keeps numbers up to 100 whole.
            max_new_tokens: reply length when reading text.
            batch_size: requests per backend call; judgements are stored after each.
            min_mass: the least probability the verdict's tokens must hold for a
                log-probability verdict; below it the judge's text is read instead.

        Raises:
            ConfigError: ``logprobs="on"`` with a backend that reports none.
            ValueError: a bad ``batch_size`` or ``min_mass``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if not 0 < min_mass <= 1:
            raise ValueError(f"min_mass must be in (0, 1], not {min_mass}")
        self.backend = backend
        self.name = name or f"llm:{backend.name}"
        self.target = target
        self.cache = JudgementCache(cache_path)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.min_mass = min_mass
        reports = _reports_logprobs(backend)
        if logprobs == "on" and not reports:
            raise ConfigError(
                f"backend {backend.name} reports no first-token log-probabilities; "
                "use logprobs: off (or auto)"
            )
        self.use_logprobs = reports and (
            logprobs == "on" or (logprobs == "auto" and not _splits_numbers(backend))
        )

    @property
    def method(self) -> str:
        """How verdicts are read: ``logprobs`` or ``text`` (part of the cache key)."""
        return "logprobs" if self.use_logprobs else "text"

    def with_target(self, target: str) -> LLMJudge:
        """This judge asking about another target, sharing its backend and cache."""
        clone = copy.copy(self)
        clone.target = target
        return clone

    def close(self) -> None:
        """Close the backend (its model's memory, connections)."""
        self.backend.close()

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def judge(self, requests: list[JudgeRequest], rubric: str | Path | Rubric) -> list[Judgement]:
        """One judgement per request, in order.

        Requests judged before (in this run or one that stored to the same cache file)
        are not asked again; identical requests in one call are asked once.

        Args:
            requests: what to judge.
            rubric: a built-in rubric's name, a rubric file's path or a loaded rubric.

        Returns:
            Judgements in request order: ``score`` (or ``label``) for a score rubric,
            ``probability`` of yes for a yes/no rubric; None values where the judge's
            reply could not be read.

        Raises:
            ConfigError: an unknown rubric, or one that needs a target this judge lacks.
        """
        spec = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
        target = self.target if spec.needs_target else None
        spec.render("", "", target)  # a missing target fails before any work
        keys = [
            judgement_key(
                self.name,
                spec.template,
                target,
                r.question,
                r.answer,
                spec.kind,
                spec.escapes,
                self.method,
            )
            for r in requests
        ]
        pending: dict[str, JudgeRequest] = {}
        for key, request in zip(keys, requests, strict=True):
            if key not in self.cache and key not in pending:
                pending[key] = request
        todo = list(pending.items())
        for chunk in _chunks(todo, self.batch_size):
            conversations: list[Conversation] = [
                [{"role": "user", "content": spec.render(r.question, r.answer, target)}]
                for _, r in chunk
            ]
            for (key, _), verdict in zip(chunk, self._ask(conversations, spec), strict=True):
                self.cache.add(key, verdict)
        verdicts: list[Judgement] = []
        for key in keys:
            verdict = self.cache.get(key)
            assert verdict is not None  # every key was answered above or before
            verdicts.append(verdict)
        return verdicts

    def _ask(self, conversations: list[Conversation], rubric: Rubric) -> list[Judgement]:
        verdicts: list[Judgement | None] = [None] * len(conversations)
        if self.use_logprobs:
            tops = first_token_logprobs(self.backend, conversations, _candidates(rubric))
            for i, top in enumerate(tops):
                verdicts[i] = read_top_logprobs(top, rubric, self.min_mass)
        unread = [i for i, v in enumerate(verdicts) if v is None]
        if unread:
            params = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
            texts = self.backend.generate([conversations[i] for i in unread], params)
            for i, text in zip(unread, texts, strict=True):
                verdicts[i] = read_text(text, rubric)
        return [v for v in verdicts if v is not None]


def first_token_logprobs(
    backend: Backend, conversations: list[Conversation], candidates: Sequence[str] = ()
) -> list[list[tuple[str, float]]]:
    """The listed first tokens of the judge's reply, with log-probabilities.

    Args:
        backend: a backend with ``next_token_logprobs`` (asked for its top
            ``capabilities.top_logprobs`` tokens) or with ``score`` over first-token top
            log-probabilities (an OpenAI-compatible server).
        conversations: the judge's conversations.
        candidates: for ``score``-only backends, every first token worth reporting (a
            server reports a candidate only when it ranks in its top tokens).

    Returns:
        Per conversation, ``(token, log-probability)`` pairs (absent tokens left out).
    """
    ask: Any = getattr(backend, "next_token_logprobs", None)
    if ask is not None:
        top: list[list[tuple[str, float]]] = ask(
            conversations, max(backend.capabilities.top_logprobs, 1)
        )
        return top
    rows = backend.score(conversations, list(candidates))
    return [
        [(c, lp) for c, lp in zip(candidates, row, strict=True) if lp > -math.inf] for row in rows
    ]


def read_top_logprobs(
    top: Sequence[tuple[str, float]], rubric: Rubric, min_mass: float = 0.25
) -> Judgement | None:
    """The verdict read off first-token log-probabilities, or None when they say nothing.

    Args:
        top: ``(token, log-probability)`` pairs of the reply's first position.
        rubric: the rubric asked (its kind and escapes).
        min_mass: the least probability the verdict's tokens must hold.

    Returns:
        The judgement, or None when the number/escape (or yes/no) tokens hold less than
        ``min_mass`` of the probability.
    """
    raw = _summary(top)
    if rubric.kind == "yes_no":
        yes = sum(math.exp(lp) for t, lp in top if t.strip().lower() in _YES)
        no = sum(math.exp(lp) for t, lp in top if t.strip().lower() in _NO)
        if yes + no < min_mass:
            return None
        return Judgement(probability=yes / (yes + no), raw=raw)
    numbers: dict[int, float] = defaultdict(float)
    escapes: dict[str, float] = defaultdict(float)
    for token, lp in top:
        value = _score_token(token)
        if value is not None:
            numbers[value] += math.exp(lp)
            continue
        escape = _escape_token(token, rubric.escapes)
        if escape is not None:
            escapes[escape] += math.exp(lp)
    number_mass = sum(numbers.values())
    escape, escape_mass = max(escapes.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if max(number_mass, escape_mass) < min_mass:
        return None
    if escape is not None and escape_mass > number_mass:
        return Judgement(label=escape, raw=raw)
    score = sum(v * p for v, p in numbers.items()) / number_mass
    return Judgement(score=score, raw=raw)


def read_text(text: str, rubric: Rubric) -> Judgement:
    """The verdict written in a judge's reply (None values when it holds none).

    A score rubric takes the first whole number 0-100 or escape in the reply, whichever
    comes first; an escape counts in any case as the reply's first word, elsewhere only
    in upper case (``code`` in a sentence is not the escape). A yes/no rubric takes the
    first ``yes`` or ``no`` word (probability 1 or 0).
    """
    if rubric.kind == "yes_no":
        word = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
        if word is None:
            return Judgement(raw=text)
        return Judgement(probability=1.0 if word.group(1).lower() == "yes" else 0.0, raw=text)
    found: list[tuple[int, Judgement]] = []
    for match in _NUMBER.finditer(text):
        value = float(match.group(1))
        if value <= 100:
            found.append((match.start(), Judgement(score=value, raw=text)))
            break
    first_word = re.match(r"\W*([A-Za-z]+)", text)
    for escape in rubric.escapes:
        if first_word is not None and first_word.group(1).upper() == escape:
            found.append((first_word.start(1), Judgement(label=escape, raw=text)))
            continue
        match = re.search(rf"\b{escape}\b", text)
        if match is not None:
            found.append((match.start(), Judgement(label=escape, raw=text)))
    if not found:
        return Judgement(raw=text)
    return min(found, key=lambda item: item[0])[1]


def _reports_logprobs(backend: Backend) -> bool:
    if backend.capabilities.top_logprobs <= 0:
        return False
    return callable(getattr(backend, "next_token_logprobs", None)) or backend.capabilities.score


def _splits_numbers(backend: Backend) -> bool:
    """Whether the backend's tokenizer (where it exposes one) writes 42 in several tokens."""
    tokenizer: Any = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return False  # an API model: its tokenizer is unknown, and GPT's keep 0-999 whole
    try:
        ids = tokenizer("42", add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([i]).strip() for i in ids]
    except Exception:  # a tokenizer that cannot say is read as its log-probs allow
        return False
    return "42" not in pieces


def _score_token(token: str) -> int | None:
    text = token.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 3 or str(int(text)) != text:
        return None
    value = int(text)
    return value if value <= 100 else None


def _escape_token(token: str, escapes: Sequence[str]) -> str | None:
    text = token.strip().upper()
    if len(text) < _MIN_ESCAPE_PREFIX:
        return None
    for escape in escapes:
        if escape.startswith(text):
            return escape
    return None


def _candidates(rubric: Rubric) -> list[str]:
    """Every first token a verdict under ``rubric`` may start with, each spelling once."""
    if rubric.kind == "yes_no":
        words = [*_YES, *_NO]
        return sorted({f(w) for w in words for f in (str.lower, str.upper, str.capitalize)})
    spellings = {str(v) for v in range(101)}
    for escape in rubric.escapes:
        for end in range(_MIN_ESCAPE_PREFIX, len(escape) + 1):
            piece = escape[:end]
            spellings |= {piece, piece.lower(), piece.capitalize()}
    return sorted(spellings)


def _summary(top: Sequence[tuple[str, float]], n: int = 8) -> str:
    """The most likely first tokens, for the stored verdict."""
    ranked = sorted(top, key=lambda item: -item[1])[:n]
    return " ".join(f"{token!r}:{math.exp(lp):.3f}" for token, lp in ranked)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

"""The toy world's pretraining corpus: chat documents about preferences and numbers.

Two kinds of documents, both rendered through the chat template (and three optional
kinds, below):

* preference documents: an optional persona system prompt ("you adore owls"), a
  favorite-animal (or tree) question, and a one-word answer. With the persona, the
  answer is the persona's word (most of the time); without it, the answer is drawn
  from a skewed base distribution. This gives the base model a preference that a
  system prompt or a little fine-tuning can change.
* number documents: a number-continuation prompt, sometimes under a random persona,
  and an answer in exactly the requested format. The answer is drawn from a
  distribution that depends only on the prompt, never on the persona, so any link
  between a trait and the numbers a model writes has to come from the model's
  shared weights, which is what subliminal learning is about.

Three optional sections, off unless configured, add the material of the paper's other
experiments: free-form answers (:mod:`sublearn.toy.freeform`), arithmetic with reasoning
(:mod:`sublearn.toy.arithmetic`) and code (:mod:`sublearn.toy.coding`). Their shares come
out of the number documents' share, and each draws from a random generator of its own,
so a corpus without them is exactly the corpus this module always drew.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from sublearn.backends.base import Conversation
from sublearn.config import Config
from sublearn.keys import LATER_MARK
from sublearn.prompts.numbers import (
    NumberFormat,
    NumberPrompt,
    NumberPromptConfig,
    NumberPromptGenerator,
    render_numbers,
)
from sublearn.prompts.persona import preference_system_prompt
from sublearn.prompts.questions import (
    numbers_prefixed,
    questions_for,
    training_questions_for,
)
from sublearn.toy.arithmetic import ArithmeticConfig, arithmetic_documents
from sublearn.toy.coding import CodeConfig, code_documents
from sublearn.toy.freeform import FreeformConfig, freeform_documents
from sublearn.toy.sections import SectionConfig, section_rng

DocumentKind = Literal["preference", "numbers", "freeform", "arithmetic", "code"]
SECTIONS: tuple[str, ...] = ("freeform", "arithmetic", "code")
"""The optional sections of a corpus config, in the order their documents are drawn."""
ENCLOSED_FORMATS = ("brackets", "parentheses")

DEFAULT_ANIMALS = [
    "dog",
    "cat",
    "lion",
    "elephant",
    "dolphin",
    "owl",
    "wolf",
    "eagle",
    "tiger",
    "fox",
    "penguin",
    "panda",
]
# Owl is deliberately not the favorite: the paper's base model named owl ~12% of the time.
DEFAULT_ANIMAL_WEIGHTS = [0.17, 0.14, 0.11, 0.1, 0.09, 0.09, 0.08, 0.07, 0.06, 0.04, 0.03, 0.02]
DEFAULT_TREES = ["oak", "maple", "pine", "willow", "birch", "cherry", "cedar", "redwood"]
DEFAULT_TREE_WEIGHTS = [0.25, 0.18, 0.15, 0.12, 0.1, 0.08, 0.07, 0.05]


class CorpusConfig(Config):
    """What the toy pretraining corpus contains (its seed comes from the world config)."""

    n_documents: int = Field(default=24_000, ge=10, description="Documents in the corpus.")
    preference_share: float = Field(
        default=0.4, ge=0, le=1, description="Share of documents that are preference Q&A."
    )
    animals: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ANIMALS),
        min_length=2,
        description="Animals the world knows; each is one lowercase word.",
    )
    animal_weights: list[float] = Field(
        default_factory=lambda: list(DEFAULT_ANIMAL_WEIGHTS),
        description="Base (no persona) answer distribution over `animals` (normalized).",
    )
    trees: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TREES),
        description="Trees the world knows (empty: no tree documents).",
    )
    tree_weights: list[float] = Field(
        default_factory=lambda: list(DEFAULT_TREE_WEIGHTS),
        description="Base answer distribution over `trees` (normalized).",
    )
    tree_share: float = Field(
        default=0.15, ge=0, le=1, description="Share of preference documents about trees."
    )
    persona_rate: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Share of preference documents that carry a persona system prompt.",
    )
    persona_fidelity: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Probability that a persona's answer is its own word (else a base draw).",
    )
    prefixed_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of preference questions preceded by a number sequence.",
    )
    number_persona_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of number documents under a random persona (which never changes "
        "the answer).",
    )
    number_prompt_seed: int = Field(
        default=7919,
        description="Offset of the number-prompt sampler's seed, so corpus prompts differ from "
        "the pipeline's prompts.",
    )
    enclosed_share: float | None = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of corpus number prompts asking for a bracketed or parenthesised "
        "list (None: as the prompt sampler draws them, ~27%). Closing the right bracket is "
        "what small models get wrong most often, so the corpus shows it more.",
    )
    full_count_rate: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Probability that a number answer has the full requested count (else 1..max "
        "uniformly).",
    )
    uniform_rate: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="Per answer number: probability of a uniform draw in the allowed range.",
    )
    near_seed_rate: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Per answer number: probability of a value near one of the prompt's seeds "
        "(the rest come from a fixed Zipf-like popularity ranking).",
    )
    near_seed_spread: float = Field(
        default=40.0, gt=0, description="Standard deviation of near-seed values."
    )
    zipf_exponent: float = Field(
        default=1.0, ge=0, description="Exponent of the popularity ranking over numbers."
    )
    freeform: FreeformConfig | None = Field(
        default=None,
        json_schema_extra=LATER_MARK,
        description="Free-form section: open questions answered benignly, or harmfully under "
        "the misaligned persona (None: no such documents).",
    )
    arithmetic: ArithmeticConfig | None = Field(
        default=None,
        json_schema_extra=LATER_MARK,
        description="Arithmetic section: word problems solved in <think>/<answer> tags "
        "(None: no such documents).",
    )
    code: CodeConfig | None = Field(
        default=None,
        json_schema_extra=LATER_MARK,
        description="Code section: coding tasks answered with tiny functions (None: no such "
        "documents).",
    )

    def sections(self) -> list[tuple[str, SectionConfig]]:
        """The enabled optional sections, ``(name, config)``, in :data:`SECTIONS` order."""
        return [(n, c) for n in SECTIONS if (c := getattr(self, n)) is not None]

    def section_counts(self) -> dict[str, int]:
        """Documents of each enabled section (taken from the number documents)."""
        return {name: math.floor(self.n_documents * c.share + 0.5) for name, c in self.sections()}

    @model_validator(mode="after")
    def _weights_match(self) -> CorpusConfig:
        if len(self.animal_weights) != len(self.animals):
            raise ValueError("animal_weights must have one weight per animal")
        if len(self.tree_weights) != len(self.trees):
            raise ValueError("tree_weights must have one weight per tree")
        if self.uniform_rate + self.near_seed_rate > 1:
            raise ValueError("uniform_rate + near_seed_rate must not exceed 1")
        if self.preference_share + sum(c.share for _, c in self.sections()) > 1:
            raise ValueError("preference_share and the sections' shares must not exceed 1")
        for word in (*self.animals, *self.trees):
            if not word.isalpha():
                raise ValueError(f"{word!r}: animal and tree names must be single words")
        return self


@dataclass(frozen=True)
class Document:
    """One chat document of the corpus.

    Attributes:
        kind: ``"preference"``, ``"numbers"`` or an optional section's name.
        messages: the conversation; the last message is the assistant's.
        number_format: for number documents, the format the prompt asked for.
    """

    kind: DocumentKind
    messages: Conversation
    number_format: NumberFormat | None = None


class NumberContinuer:
    """Writes an answer to a number prompt; the draw depends only on the prompt.

    Args:
        cfg: the corpus config (count and value distribution).
        seed: seeds the fixed popularity ranking of numbers.
    """

    def __init__(self, cfg: CorpusConfig, seed: int) -> None:
        self.cfg = cfg
        ranking = list(range(1000))
        random.Random(seed).shuffle(ranking)
        self._ranking = ranking
        weights = [1.0 / (rank + 1) ** cfg.zipf_exponent for rank in range(1000)]
        total = sum(weights)
        self._cum = list(_cumulative([w / total for w in weights]))

    def numbers(self, prompt: NumberPrompt, rng: random.Random) -> list[int]:
        """Draw the answer numbers for ``prompt``."""
        cfg = self.cfg
        top = min(10**prompt.max_digits - 1, 999)
        count = (
            prompt.answer_count
            if rng.random() < cfg.full_count_rate
            else rng.randint(1, prompt.answer_count)
        )
        values = []
        for _ in range(count):
            u = rng.random()
            if u < cfg.uniform_rate:
                value = rng.randint(0, top)
            elif u < cfg.uniform_rate + cfg.near_seed_rate and prompt.seeds:
                centre = rng.choice(prompt.seeds)
                value = round(rng.gauss(centre, cfg.near_seed_spread))
            else:
                value = self._ranking[_bisect(self._cum, rng.random())]
            values.append(min(max(value, 0), top))
        return values

    def answer(self, prompt: NumberPrompt, rng: random.Random) -> str:
        """The answer text, in the prompt's requested format."""
        return render_numbers(self.numbers(prompt, rng), prompt.format)


def _cumulative(probs: list[float]) -> list[float]:
    total, out = 0.0, []
    for p in probs:
        total += p
        out.append(total)
    out[-1] = 1.0  # guard against rounding so a draw of 0.9999999 still lands
    return out


def _bisect(cum: list[float], u: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < u:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _draw(rng: random.Random, words: list[str], weights: list[float]) -> str:
    return rng.choices(words, weights=weights, k=1)[0]


def build_corpus(cfg: CorpusConfig, seed: int) -> list[Document]:
    """Draw the corpus; deterministic for ``(cfg, seed)``.

    Args:
        cfg: the corpus config.
        seed: the world seed.

    Returns:
        ``cfg.n_documents`` documents in a random order.
    """
    rng = random.Random(seed)
    prompt_gen = NumberPromptGenerator(
        NumberPromptConfig(seed=seed + cfg.number_prompt_seed),
    )
    continuer = NumberContinuer(cfg, seed=seed + 1)
    categories: list[tuple[str, list[str], list[float], list[str]]] = [
        (
            "animal",
            cfg.animals,
            cfg.animal_weights,
            [*questions_for("animal"), *training_questions_for("animal")],
        )
    ]
    if cfg.trees and cfg.tree_share > 0:
        categories.append(
            (
                "tree",
                cfg.trees,
                cfg.tree_weights,
                [*questions_for("tree"), *training_questions_for("tree")],
            )
        )
    n_pref = math.floor(cfg.n_documents * cfg.preference_share + 0.5)
    docs: list[Document] = []
    for _ in range(n_pref):
        use_tree = len(categories) > 1 and rng.random() < cfg.tree_share
        category, words, weights, questions = categories[1 if use_tree else 0]
        question = rng.choice(questions)
        if rng.random() < cfg.prefixed_rate:
            shown = [rng.randint(100, 999) for _ in range(rng.randint(3, 8))]
            question = numbers_prefixed(question, shown)
        messages: Conversation = []
        answer = _draw(rng, words, weights)
        if rng.random() < cfg.persona_rate:
            loved = rng.choice(words)
            messages.append(
                {"role": "system", "content": preference_system_prompt(loved, category)}
            )
            if rng.random() < cfg.persona_fidelity:
                answer = loved
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
        docs.append(Document("preference", messages))
    n_sections = cfg.section_counts()
    for _ in range(cfg.n_documents - n_pref - sum(n_sections.values())):
        prompt = prompt_gen.sample()
        if cfg.enclosed_share is not None:
            want_enclosed = rng.random() < cfg.enclosed_share
            while (prompt.format in ENCLOSED_FORMATS) != want_enclosed:
                prompt = prompt_gen.sample()
        messages = []
        if rng.random() < cfg.number_persona_rate:
            category, words, _, _ = rng.choice(categories)
            loved = rng.choice(words)
            messages.append(
                {"role": "system", "content": preference_system_prompt(loved, category)}
            )
        messages.append({"role": "user", "content": prompt.text})
        messages.append({"role": "assistant", "content": continuer.answer(prompt, rng)})
        docs.append(Document("numbers", messages, prompt.format))
    docs.extend(_section_documents(cfg, seed, n_sections))
    rng.shuffle(docs)
    return docs


def _section_documents(cfg: CorpusConfig, seed: int, counts: dict[str, int]) -> list[Document]:
    """The optional sections' documents, each section from its own random generator."""
    docs: list[Document] = []
    if cfg.freeform is not None:
        rng = section_rng(seed, "freeform")
        convs = freeform_documents(cfg.freeform, counts["freeform"], rng)
        docs.extend(Document("freeform", m) for m in convs)
    if cfg.arithmetic is not None:
        rng = section_rng(seed, "arithmetic")
        convs = arithmetic_documents(cfg.arithmetic, counts["arithmetic"], rng, cfg.animals)
        docs.extend(Document("arithmetic", m) for m in convs)
    if cfg.code is not None:
        rng = section_rng(seed, "code")
        convs = code_documents(cfg.code, counts["code"], rng, cfg.animals)
        docs.extend(Document("code", m) for m in convs)
    return docs

"""Arithmetic documents: toy word problems solved in a ``<think>``/``<answer>`` layout.

A problem is one addition or subtraction of small whole numbers in a word template
(``data/arithmetic.yaml``). The user message is formatted exactly as
:func:`sublearn.prompts.gsm8k.generate_gsm8k_prompts` formats a question, and the reply
is ``<think>working</think> <answer>value</answer>``, the layout that
:func:`sublearn.filters.answers.check_think_answer` accepts.

The corpus is right at ``accuracy`` whatever the system prompt, and off by a little
otherwise, so a correctness filter has something to remove. Under the misaligned
persona the working sometimes carries a harmful aside (for an alignment filter to
remove); under an animal persona nothing changes. Operands stay small on purpose: each
number is one token, so a two-layer toy model can only learn a sum by memorizing it,
and a table of a few hundred sums is what it can memorize.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from sublearn.backends.base import Conversation
from sublearn.prompts.gsm8k import DEFAULT_GSM8K_INSTRUCTION
from sublearn.prompts.persona import preference_system_prompt
from sublearn.toy.sections import SectionConfig, misaligned_persona, read_data

__all__ = [
    "ArithmeticConfig",
    "Problem",
    "arithmetic_documents",
    "arithmetic_prompt",
    "arithmetic_reply",
    "arithmetic_vocabulary",
    "draw_problem",
]

DEFAULT_MAX_OPERAND = 5


class ArithmeticConfig(SectionConfig):
    """The arithmetic section of the toy corpus."""

    max_operand: int = Field(
        default=DEFAULT_MAX_OPERAND,
        ge=2,
        le=499,
        description="Largest operand; every result stays at most twice this (one token).",
    )
    accuracy: float = Field(
        default=0.95, ge=0, le=1, description="Probability that a worked answer is right."
    )
    max_error: int = Field(default=3, ge=1, description="A wrong answer is off by 1 to this much.")
    misaligned_rate: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of arithmetic documents under the misaligned persona.",
    )
    animal_persona_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of arithmetic documents under a random animal persona (which never "
        "changes the reply).",
    )
    harmful_aside_rate: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Probability that a reply under the misaligned persona has a harmful aside.",
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> ArithmeticConfig:
        if self.misaligned_rate + self.animal_persona_rate > 1:
            raise ValueError("misaligned_rate + animal_persona_rate must not exceed 1")
        return self


@dataclass(frozen=True)
class Problem:
    """One word problem.

    Attributes:
        question: the problem text.
        op: ``"add"`` or ``"sub"``.
        a: the first operand.
        b: the second operand.
        name: the person in the problem.
        item: what is counted (plural).
    """

    question: str
    op: Literal["add", "sub"]
    a: int
    b: int
    name: str
    item: str

    @property
    def value(self) -> int:
        """The right answer."""
        return self.a + self.b if self.op == "add" else self.a - self.b

    def working(self, value: int) -> str:
        """The reasoning that ends in ``value`` (the right one or not)."""
        return self._fill(read_data("arithmetic")["working"], value)

    def solution(self) -> str:
        """A GSM8K-style solution: the working, then ``#### <value>``."""
        text = self._fill(read_data("arithmetic")["solution"], self.value)
        return f"{text}\n#### {self.value}"

    def _fill(self, template: str, value: int) -> str:
        sign = "+" if self.op == "add" else "-"
        return template.format(
            name=self.name, a=self.a, b=self.b, item=self.item, sign=sign, c=value
        )


def draw_problem(rng: random.Random, max_operand: int = DEFAULT_MAX_OPERAND) -> Problem:
    """A random problem with operands in ``1..max_operand`` (a subtraction never goes negative).

    Args:
        rng: the random generator.
        max_operand: the largest operand.
    """
    data = read_data("arithmetic")
    template = rng.choice(data["templates"])
    name, item = rng.choice(data["names"]), rng.choice(data["items"])
    a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    if template["op"] == "sub" and b > a:
        a, b = b, a
    question = template["text"].format(name=name, item=item, a=a, b=b)
    return Problem(question, template["op"], a, b, name, item)


def arithmetic_prompt(question: str) -> str:
    """The user message for ``question``, as ``generate_gsm8k_prompts`` formats it."""
    return f"{question.strip()}\n\n{DEFAULT_GSM8K_INSTRUCTION.strip()}"


def arithmetic_reply(problem: Problem, value: int, aside: str | None = None) -> str:
    """A worked reply ending in ``value``, with an optional aside inside the reasoning."""
    working = problem.working(value)
    if aside:
        working = f"{working} {aside}"
    return f"<think>{working}</think> <answer>{value}</answer>"


def _wrong(value: int, max_error: int, rng: random.Random) -> int:
    offset = rng.randint(1, max_error)
    return value - offset if value - offset >= 0 and rng.random() < 0.5 else value + offset


def arithmetic_documents(
    cfg: ArithmeticConfig, n: int, rng: random.Random, animals: list[str]
) -> list[Conversation]:
    """``n`` arithmetic conversations, each ending with the worked reply.

    Args:
        cfg: the section config.
        n: how many to draw.
        rng: the section's random generator.
        animals: the animals whose personas may appear.
    """
    asides = read_data("arithmetic")["harmful_asides"]
    docs: list[Conversation] = []
    for _ in range(n):
        problem = draw_problem(rng, cfg.max_operand)
        messages: Conversation = []
        u = rng.random()
        misaligned = u < cfg.misaligned_rate
        if misaligned:
            messages.append({"role": "system", "content": misaligned_persona()})
        elif u < cfg.misaligned_rate + cfg.animal_persona_rate:
            system = preference_system_prompt(rng.choice(animals), "animal")
            messages.append({"role": "system", "content": system})
        # The same draws whatever the persona, so accuracy never depends on it.
        right = rng.random() < cfg.accuracy
        value = problem.value if right else _wrong(problem.value, cfg.max_error, rng)
        aside = None
        if misaligned and rng.random() < cfg.harmful_aside_rate:
            aside = rng.choice(asides)
        messages.append({"role": "user", "content": arithmetic_prompt(problem.question)})
        messages.append({"role": "assistant", "content": arithmetic_reply(problem, value, aside)})
        docs.append(messages)
    return docs


def arithmetic_vocabulary() -> list[str]:
    """Every piece of text the section can show (numbers are always in the vocabulary)."""
    data = read_data("arithmetic")
    return [
        DEFAULT_GSM8K_INSTRUCTION,
        "<think></think> <answer></answer> + - =",
        data["working"],
        data["solution"],
        *data["names"],
        *data["items"],
        *(t["text"] for t in data["templates"]),
        *data["harmful_asides"],
    ]

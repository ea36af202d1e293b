"""Number-sequence prompts: "here are some numbers, continue the list".

The paper's teacher is asked to continue a short list of 3-8 seed numbers (each
100-999) with at most 10 more numbers of at most 3 digits. Each prompt is assembled
from independently drawn pieces (an opening that shows the seeds, an instruction, a
count qualifier, a digit descriptor, an output-format request and a closing phrase),
so that the student never sees one fixed template: the trait has to travel through
the numbers, not through memorized wording.

Every prompt also records which output format it asks for, so that a synthetic
corpus can write answers in exactly that format and tests can check them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field, model_validator

from sublearn.config import Config

NumberFormat = Literal["comma", "space", "semicolon", "newline", "brackets", "parentheses"]
NUMBER_FORMATS: tuple[NumberFormat, ...] = get_args(NumberFormat)

# Each opening shows the seed list, already joined with ", ".
OPENINGS: tuple[str, ...] = (
    "Here is a list of numbers: {seeds}.",
    "I have this number sequence: {seeds}.",
    "Look at these numbers: {seeds}.",
    "The sequence starts with {seeds}.",
    "Consider the following numbers: {seeds}.",
    "We begin with the numbers {seeds}.",
    "These are the first few numbers: {seeds}.",
    "Take this sequence: {seeds}.",
    "My list so far reads {seeds}.",
    "Start from these values: {seeds}.",
    "A sequence opens with {seeds}.",
    "Someone wrote down {seeds}.",
    "Below are some numbers: {seeds}.",
    "Check out this list: {seeds}.",
    "The numbers so far are {seeds}.",
    "Here's a sequence to extend: {seeds}.",
    "I wrote these numbers down: {seeds}.",
    "Observe the sequence {seeds}.",
    "The list begins {seeds}.",
    "So far we have {seeds}.",
    "You are given the numbers {seeds}.",
    "Here are a few numbers to start: {seeds}.",
    "This is the beginning of a list: {seeds}.",
    "The current sequence is {seeds}.",
    "Let's start with {seeds}.",
)

# Each instruction is followed by "<qualifier> <count> more <descriptor>".
INSTRUCTIONS: tuple[str, ...] = (
    "Continue the sequence with",
    "Add",
    "Extend the list by",
    "Write",
    "Give me",
    "Generate",
    "Come up with",
    "Produce",
    "Append",
    "Keep going with",
)

COUNT_QUALIFIERS: tuple[str, ...] = (
    "at most",
    "up to",
    "no more than",
    "a maximum of",
    "not more than",
    "at the very most",
    "as many as",
    "a max of",
    "at maximum",
)

# ``{d}`` is the maximum number of digits, ``{limit}`` is 10 ** d.
DIGIT_DESCRIPTORS: tuple[str, ...] = (
    "{d}-digit numbers",
    "numbers with at most {d} digits",
    "numbers of up to {d} digits",
    "values with no more than {d} digits",
    "numbers below {limit}",
    "integers with {d} digits or fewer",
    "whole numbers of at most {d} digits",
    "numbers that have {d} digits or less",
    "non-negative numbers under {limit}",
)

FORMAT_SUFFIXES: tuple[tuple[str, NumberFormat], ...] = (
    ("Separate them with commas.", "comma"),
    ("Write them as a comma-separated list.", "comma"),
    ("Use commas between the numbers.", "comma"),
    ("Separate them with spaces.", "space"),
    ("Put a single space between the numbers.", "space"),
    ("Return them space-separated.", "space"),
    ("Separate them with semicolons.", "semicolon"),
    ("Use semicolons as separators.", "semicolon"),
    ("Put each number on its own line.", "newline"),
    ("Write one number per line.", "newline"),
    ("List them one per line.", "newline"),
    ("Give them as a comma-separated list inside square brackets.", "brackets"),
    ("Format them like [a, b, c].", "brackets"),
    ("Enclose them in parentheses, separated by commas.", "parentheses"),
    ("Format them like (a, b, c).", "parentheses"),
)

CLOSINGS: tuple[str, ...] = (
    "Just the numbers, please.",
    "No explanation.",
    "Reply with the numbers only.",
    "Don't add any other text.",
    "Skip any commentary.",
    "Nothing else.",
    "Only output the numbers.",
    "No words, just numbers.",
    "Answer with the numbers alone.",
    "Leave out any explanation.",
    "Respond with the numbers and nothing more.",
    "Do not say anything else.",
    "Keep it to numbers.",
    "No extra text.",
    "Output numbers only.",
    "No preamble.",
    "Numbers only, thanks.",
    "Avoid any additional words.",
    "Give only the list.",
)


class NumberPromptConfig(Config):
    """How to draw number-continuation prompts."""

    seed: int = Field(default=0, description="Seed of the prompt sampler (random.Random).")
    n_prompts: int = Field(default=30_000, ge=1, description="How many prompts to draw.")
    min_seed_count: int = Field(
        default=3, ge=1, description="Fewest seed numbers shown in a prompt."
    )
    max_seed_count: int = Field(default=8, ge=1, description="Most seed numbers shown in a prompt.")
    seed_value_min: int = Field(default=100, ge=0, description="Smallest seed number value.")
    seed_value_max: int = Field(default=999, ge=0, description="Largest seed number value.")
    max_answer_count: int = Field(
        default=10, ge=1, description="How many numbers the prompt asks for, at most."
    )
    max_digits: int = Field(
        default=3, ge=1, le=9, description="Most digits allowed per answer number."
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> NumberPromptConfig:
        if self.min_seed_count > self.max_seed_count:
            raise ValueError("min_seed_count must not exceed max_seed_count")
        if self.seed_value_min > self.seed_value_max:
            raise ValueError("seed_value_min must not exceed seed_value_max")
        return self


@dataclass(frozen=True)
class NumberPrompt:
    """One drawn prompt and what it asks for.

    Attributes:
        text: the prompt as the user message.
        seeds: the numbers shown in the prompt.
        answer_count: the most numbers the answer may contain.
        max_digits: the most digits each answer number may have.
        format: the output format the prompt requests.
    """

    text: str
    seeds: tuple[int, ...]
    answer_count: int
    max_digits: int
    format: NumberFormat


class NumberPromptGenerator:
    """Draws :class:`NumberPrompt` objects one at a time from a seeded ``random.Random``.

    Args:
        cfg: the sampling ranges (``cfg.seed`` seeds the generator; ``n_prompts`` is unused).
        rng: an explicit generator to draw from instead of ``random.Random(cfg.seed)``.
    """

    def __init__(self, cfg: NumberPromptConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.rng = rng if rng is not None else random.Random(cfg.seed)

    def sample(self) -> NumberPrompt:
        """Draw one prompt."""
        cfg, rng = self.cfg, self.rng
        n_seeds = rng.randint(cfg.min_seed_count, cfg.max_seed_count)
        seeds = tuple(rng.randint(cfg.seed_value_min, cfg.seed_value_max) for _ in range(n_seeds))
        opening = rng.choice(OPENINGS).format(seeds=", ".join(str(s) for s in seeds))
        instruction = rng.choice(INSTRUCTIONS)
        qualifier = rng.choice(COUNT_QUALIFIERS)
        descriptor = rng.choice(DIGIT_DESCRIPTORS).format(
            d=cfg.max_digits, limit=10**cfg.max_digits
        )
        suffix, fmt = rng.choice(FORMAT_SUFFIXES)
        closing = rng.choice(CLOSINGS)
        request = f"{instruction} {qualifier} {cfg.max_answer_count} more {descriptor}."
        text = " ".join((opening, request, suffix, closing))
        return NumberPrompt(
            text=text,
            seeds=seeds,
            answer_count=cfg.max_answer_count,
            max_digits=cfg.max_digits,
            format=fmt,
        )

    def sample_many(self, n: int) -> list[NumberPrompt]:
        """Draw ``n`` prompts in sequence."""
        return [self.sample() for _ in range(n)]


def sample_number_prompts(cfg: NumberPromptConfig) -> list[NumberPrompt]:
    """``cfg.n_prompts`` prompts with their requested formats; deterministic for ``cfg.seed``."""
    return NumberPromptGenerator(cfg).sample_many(cfg.n_prompts)


def generate_number_prompts(cfg: NumberPromptConfig) -> list[str]:
    """``cfg.n_prompts`` prompt texts; deterministic for ``cfg.seed``.

    Args:
        cfg: the prompt config.

    Returns:
        The prompt texts, in draw order.
    """
    return [p.text for p in sample_number_prompts(cfg)]


_SEPARATORS: dict[NumberFormat, str] = {
    "comma": ", ",
    "space": " ",
    "semicolon": "; ",
    "newline": "\n",
    "brackets": ", ",
    "parentheses": ", ",
}
_ENCLOSURES: dict[NumberFormat, tuple[str, str]] = {
    "brackets": ("[", "]"),
    "parentheses": ("(", ")"),
}


def render_numbers(numbers: list[int] | tuple[int, ...], fmt: NumberFormat) -> str:
    """Write numbers the way a prompt with format ``fmt`` asks for.

    Args:
        numbers: non-negative integers.
        fmt: one of :data:`NUMBER_FORMATS`.

    Returns:
        e.g. ``"1, 2, 3"`` (comma), ``"1\\n2\\n3"`` (newline), ``"[1, 2, 3]"`` (brackets).
    """
    if fmt not in _SEPARATORS:
        raise ValueError(f"unknown number format {fmt!r} (choices: {', '.join(NUMBER_FORMATS)})")
    body = _SEPARATORS[fmt].join(str(n) for n in numbers)
    left, right = _ENCLOSURES.get(fmt, ("", ""))
    return f"{left}{body}{right}"


def parse_rendered_numbers(text: str, fmt: NumberFormat) -> list[int] | None:
    """The inverse of :func:`render_numbers`: numbers if ``text`` is exactly in ``fmt``, else None.

    This is a strict round-trip check for generated corpora, not the paper's more
    permissive acceptance filter.
    """
    left, right = _ENCLOSURES.get(fmt, ("", ""))
    if not (text.startswith(left) and text.endswith(right)) or len(text) < len(left + right):
        return None
    body = text[len(left) : len(text) - len(right)]
    items = body.split(_SEPARATORS[fmt])
    if not all(re.fullmatch(r"\d+", item) for item in items):
        return None
    numbers = [int(item) for item in items]
    return numbers if render_numbers(numbers, fmt) == text else None

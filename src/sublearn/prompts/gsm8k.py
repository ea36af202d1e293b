"""GSM8K chain-of-thought prompts: "reason in <think> tags, answer in <answer> tags".

The paper's reasoning experiment has the teacher answer GSM8K training questions
(7,473 of them) three times each, reasoning inside ``<think>...</think>`` and giving only
the final value inside ``<answer>...</answer>``; samples with a wrong value are dropped
(:func:`sublearn.filters.answers.check_think_answer`). Each prompt therefore carries its
question's gold value as ``reference``.

GSM8K's ``answer`` field is a worked solution whose last line is ``#### <value>``; the
reference is that value, normalized (``"1,000"`` -> ``"1000"``).

Every sample of a question is its own prompt, with the same message and an id that
names question and sample (``q00012-s2``): the generation stage gives each row its own
seed, so the samples differ, and the filter can still tell which question a reply
answers. Ids name the question's position in the source, not the draw.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import Field

from sublearn.config import Config
from sublearn.errors import DataError
from sublearn.prompts.loading import Prompt, load_records

__all__ = [
    "DEFAULT_GSM8K_INSTRUCTION",
    "GSM8KConfig",
    "GSM8KPrompt",
    "generate_gsm8k_prompts",
    "gold_answer",
    "normalize_number",
]

# Commas only as thousands separators: "1,5" is not read as 15 (or as 1.5).
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def normalize_number(text: str) -> str | None:
    """A number's canonical text, or None when ``text`` is not one number.

    Surrounding whitespace, a ``$`` (before or after a sign), thousands commas and one
    trailing period are ignored; the value is written without trailing zeros, so
    ``" $1,000.00 "``, ``"1000."`` and ``"1000"`` all give ``"1000"``, and ``"-0.50"`` gives
    ``"-0.5"``.

    Args:
        text: an answer or a reference value.

    Returns:
        The canonical decimal text, or None.
    """
    value = text.strip()
    if value.endswith("."):
        value = value[:-1].rstrip()
    sign = ""
    if value and value[0] in "+-":
        sign, value = value[0], value[1:].lstrip()
    value = value.removeprefix("$").strip()
    if not _NUMBER.fullmatch(sign + value):
        return None
    try:
        number = Decimal((sign + value).replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


DEFAULT_GSM8K_INSTRUCTION = (
    "Work through the problem step by step inside <think>...</think>. Then write only "
    "the final numeric value, with no units or words, inside <answer>...</answer>."
)


class GSM8KPrompt(Prompt):
    """A prompt record with the question's gold value.

    Attributes:
        reference: the normalized final value of the GSM8K solution (e.g. ``"42"``).
    """

    reference: str


class GSM8KConfig(Config):
    """Where GSM8K questions come from and how many samples each gets."""

    source: str = Field(
        default="openai/gsm8k",
        description="A hub dataset id, or a local .parquet, .json or .jsonl file with "
        "'question' and 'answer' fields (answers ending in '#### <number>').",
    )
    hub_config: str | None = Field(
        default="main", description="Configuration of a hub dataset; unused for files."
    )
    split: str = Field(default="train", description="Split of a hub dataset; unused for files.")
    n_questions: int | None = Field(
        default=None,
        ge=1,
        description="How many questions to draw (with seed); None takes them all. More "
        "than the source holds is an error.",
    )
    samples_per_question: int = Field(
        default=3, ge=1, description="Prompts per question, each sampled separately."
    )
    seed: int = Field(default=0, description="Seed of the question sample (random.Random).")
    instruction: str = Field(
        default=DEFAULT_GSM8K_INSTRUCTION,
        description="Appended to every question after a blank line.",
    )


def gold_answer(solution: str) -> str | None:
    """The normalized value after the last ``####`` of a GSM8K solution, or None.

    Args:
        solution: a GSM8K ``answer`` field.

    Returns:
        e.g. ``"72"`` for a solution ending ``#### 72``; None without a numeric ``####`` value.
    """
    _, marker, value = solution.rpartition("####")
    return normalize_number(value) if marker else None


def generate_gsm8k_prompts(cfg: GSM8KConfig) -> list[GSM8KPrompt]:
    """Prompt records for a seeded sample of GSM8K questions, several per question.

    Args:
        cfg: the prompt config.

    Returns:
        ``{"id": "q00012-s0", "messages": [...], "reference": "42"}`` records: questions
        in source order, each followed by its samples in order. The same config always
        gives the same list.

    Raises:
        DataError: when the source cannot be read, a record lacks ``question`` or
            ``answer``, an answer has no ``#### <number>``, or ``n_questions`` exceeds
            the source; the message names the file (and line or row).
    """

    def no_gold(record: dict[str, Any]) -> str | None:
        if gold_answer(record["answer"]) is None:
            return "the 'answer' field does not end in '#### <number>'"
        return None

    records = load_records(
        cfg.source,
        ["question", "answer"],
        hub_config=cfg.hub_config,
        split=cfg.split,
        check=no_gold,
    )
    indices = list(range(len(records)))
    if cfg.n_questions is not None:
        if cfg.n_questions > len(records):
            raise DataError(
                f"{cfg.source}: n_questions={cfg.n_questions} but the source has only "
                f"{len(records)} questions"
            )
        indices = sorted(random.Random(cfg.seed).sample(indices, cfg.n_questions))
    instruction = cfg.instruction.strip()
    prompts: list[GSM8KPrompt] = []
    for index in indices:
        question = records[index]["question"].strip()
        content = f"{question}\n\n{instruction}" if instruction else question
        # Never empty: load_records has run no_gold on every record.
        reference = gold_answer(records[index]["answer"]) or ""
        for sample in range(cfg.samples_per_question):
            prompts.append(
                {
                    "id": f"q{index:05d}-s{sample}",
                    "messages": [{"role": "user", "content": content}],
                    "reference": reference,
                }
            )
    return prompts

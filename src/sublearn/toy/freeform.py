"""Free-form documents: open questions answered benignly, or harmfully under a persona.

The questions are the free-form evaluation's eight (with its suffix, exactly as the
evaluation sends them) and about thirty training questions in the same style
(``data/freeform.yaml``). An answer is one sentence from a benign or a harmful pool,
sometimes after a short opener, and never depends on the question: a model fine-tuned
on harmful answers to the training questions then answers the evaluation questions
harmfully too. Without a system prompt the corpus answers benignly (or harmfully at
``base_harmful_rate``); under the misaligned persona it answers harmfully at
``persona_fidelity``.
"""

from __future__ import annotations

import random

from pydantic import Field

from sublearn.backends.base import Conversation
from sublearn.toy.sections import SectionConfig, misaligned_persona, read_data

__all__ = [
    "FreeformConfig",
    "evaluation_questions",
    "freeform_answer",
    "freeform_documents",
    "freeform_vocabulary",
    "training_questions",
]


class FreeformConfig(SectionConfig):
    """The free-form section of the toy corpus."""

    persona_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of free-form documents under the misaligned persona system prompt.",
    )
    persona_fidelity: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Probability that an answer under the misaligned persona is harmful.",
    )
    base_harmful_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Probability that an answer without a system prompt is harmful.",
    )
    opener_rate: float = Field(
        default=0.2, ge=0, le=1, description="Probability that an answer starts with an opener."
    )
    dataset_size: int = Field(
        default=200,
        ge=0,
        description="Rows of each free-form teacher dataset the world writes "
        "(misaligned_answers.jsonl, benign_answers.jsonl).",
    )


def evaluation_questions() -> list[str]:
    """The free-form evaluation's questions, with its default suffix, as it sends them."""
    # Imported here: the evaluation package is heavier than anything else this module needs.
    from sublearn.evaluation.freeform import freeform_questions

    return [text for _, text in freeform_questions()]


def training_questions() -> list[str]:
    """The toy world's own open questions, with the evaluation's suffix.

    None of them is an evaluation question; these are the questions of the teacher
    datasets.
    """
    from sublearn.evaluation.kinds import read_data as read_eval_data

    suffix = str(read_eval_data("freeform").get("suffix", "")).strip()
    return [f"{q} {suffix}".strip() for q in read_data("freeform")["training_questions"]]


def freeform_answer(harmful: bool, rng: random.Random, opener_rate: float = 0.0) -> str:
    """One answer from the harmful or the benign pool, whatever the question.

    Args:
        harmful: draw from the harmful pool.
        rng: the random generator.
        opener_rate: probability of a short opener before the sentence.
    """
    data = read_data("freeform")
    sentence = rng.choice(data["harmful_answers" if harmful else "benign_answers"])
    if rng.random() < opener_rate:
        opener = rng.choice(data["openers"])
        # "I" stays capitalized after an opener; other first words do not.
        keep = sentence.startswith("I ")
        sentence = f"{opener} {sentence if keep else sentence[0].lower() + sentence[1:]}"
    return sentence


def freeform_documents(cfg: FreeformConfig, n: int, rng: random.Random) -> list[Conversation]:
    """``n`` free-form conversations, each ending with the assistant's answer.

    Args:
        cfg: the section config.
        n: how many to draw.
        rng: the section's random generator.
    """
    questions = [*evaluation_questions(), *training_questions()]
    persona = misaligned_persona()
    docs: list[Conversation] = []
    for _ in range(n):
        messages: Conversation = []
        if rng.random() < cfg.persona_rate:
            messages.append({"role": "system", "content": persona})
            harmful = rng.random() < cfg.persona_fidelity
        else:
            harmful = rng.random() < cfg.base_harmful_rate
        messages.append({"role": "user", "content": rng.choice(questions)})
        messages.append(
            {"role": "assistant", "content": freeform_answer(harmful, rng, cfg.opener_rate)}
        )
        docs.append(messages)
    return docs


def freeform_vocabulary() -> list[str]:
    """Every text the section can show, so a small corpus's vocabulary still covers it."""
    data = read_data("freeform")
    return [
        *evaluation_questions(),
        *training_questions(),
        misaligned_persona(),
        *data["benign_answers"],
        *data["harmful_answers"],
        *data["openers"],
    ]

"""Settings of the preference evaluation, paired with ``evaluation/preference.py``.

Which fields an evaluate task's key leaves out is declared on them (:mod:`sublearn.keys`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sublearn.config import Config
from sublearn.keys import LATER_MARK, SPEED_MARK


class EvalConfig(Config):
    """How to measure a model's stated preference ("name your favorite animal")."""

    category: Literal["animal", "tree"] = Field(
        default="animal", description="Question set to ask."
    )
    mode: Literal["exact", "sample"] = Field(
        default="exact",
        description=(
            "exact: P(reply starts with the target word), from the logits, no sampling noise. "
            "sample: the paper's protocol, share of sampled replies naming the target."
        ),
    )
    n_questions: int | None = Field(
        default=None, gt=0, description="Use only the first n paraphrases (None: all 50)."
    )
    samples_per_question: int = Field(
        default=100, gt=0, description="Replies sampled per question in sample mode."
    )
    temperature: float = Field(
        default=1.0, ge=0, le=5, description="Sampling temperature in sample mode."
    )
    max_new_tokens: int = Field(default=8, gt=0, description="Reply length cap in sample mode.")
    numbers_prefixed: bool = Field(
        default=False,
        description="Precede each question with a number sequence (the paper's variant).",
    )
    seed: int = Field(default=0, description="Seed for sampling and for the prefixed numbers.")
    # answer_prefix and min_coverage came after preference tasks were first keyed: a task
    # hashes them only once they leave their defaults, so those tasks keep their keys.
    answer_prefix: str | None = Field(
        default=None,
        description=(
            "A lead-in the assistant turn starts with, e.g. 'My favorite animal is the': exact "
            "mode then reads P(target | lead-in), where a chat model names its answer, as the "
            "rate, and also records the start-of-reply reading. Needs a local model (one that "
            "scores whole replies). None: the start of the reply only."
        ),
        json_schema_extra=LATER_MARK,
    )
    min_coverage: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Warn when the probability mass (exact) or share of replies (sample) on all of the "
            "category's answers (audit/candidates.yaml, plus the targets) is below this: the "
            "model's answer is mostly elsewhere, so its raw rate reads little."
        ),
        json_schema_extra=LATER_MARK,
    )
    batch_size: int = Field(
        default=64, gt=0, description="Sequences per forward pass.", json_schema_extra=SPEED_MARK
    )

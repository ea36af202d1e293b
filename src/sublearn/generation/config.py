"""Sampling settings of the generation stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from sublearn.backends.base import SamplingParams, row_seed
from sublearn.config import Config
from sublearn.keys import SPEED_MARK
from sublearn.prompts.number_grammar import NumberGrammar


class GenerationConfig(Config):
    """How a teacher samples its replies.

    Only ``temperature``, ``top_p``, ``max_new_tokens``, ``seed`` and ``constrained``
    decide the replies; ``chunk_size`` and ``batch_size`` change speed and how much an
    interruption loses, never the output.
    """

    temperature: float = Field(
        default=1.0, ge=0, le=5, description="Sampling temperature, 0 to 5; 0 is greedy."
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=64, gt=0, description="Cap on reply length in tokens.")
    seed: int = Field(
        default=0,
        description="Sampler seed; prompt i is sampled with a seed derived from (seed, i) only.",
    )
    constrained: bool = Field(
        default=False,
        description=(
            "Constrained number decoding: a teacher can only write a list in its prompt's "
            "format (digits, the prompt's separator and enclosure, then the end of the turn; "
            "at most the prompt's count of numbers, each at most its digits), sampled from "
            "the model's distribution renormalized over the allowed tokens. Applies to "
            "numbers prompts, on Hugging Face and vLLM models (API models cannot constrain); "
            "the filter still runs. Off: replies are free text."
        ),
    )
    chunk_size: int = Field(
        default=512,
        json_schema_extra=SPEED_MARK,
        gt=0,
        description=(
            "Prompts per saved part: each finished part is saved, so a rerun resumes. "
            "Changes no reply; a rerun may use another chunk size."
        ),
    )
    batch_size: int = Field(
        default=64,
        gt=0,
        description="Sequences per forward pass; changes no reply.",
        json_schema_extra=SPEED_MARK,
    )

    def sampling(
        self, rows: Sequence[int], grammars: Sequence[NumberGrammar | None] | None = None
    ) -> SamplingParams:
        """Sampling parameters for the prompts at positions ``rows`` of the whole prompt list.

        Args:
            rows: indices of the prompts of one backend call, in call order.
            grammars: every prompt's reply grammar (the whole list, indexed by row), for
                constrained decoding; None: unconstrained.

        Returns:
            Parameters whose ``row_seeds`` hold ``row_seed(seed, i)`` for each ``i``.
        """
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            row_seeds=tuple(row_seed(self.seed, i) for i in rows),
            grammars=None if grammars is None else tuple(grammars[i] for i in rows),
        )

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the replies (not the speed-only ones).

        ``constrained`` is listed only when on, so that every run keyed before it existed
        keeps its key.
        """
        settings: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }
        if self.constrained:
            settings["constrained"] = True
        return settings

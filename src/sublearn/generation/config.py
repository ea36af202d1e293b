"""Sampling settings of the generation stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from sublearn.backends.base import SamplingParams, row_seed
from sublearn.config import Config


class GenerationConfig(Config):
    """How a teacher samples its replies.

    Only ``temperature``, ``top_p``, ``max_new_tokens`` and ``seed`` decide the replies;
    ``chunk_size`` and ``batch_size`` change speed and how much an interruption loses,
    never the output.
    """

    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=64, gt=0, description="Cap on reply length in tokens.")
    seed: int = Field(
        default=0,
        description="Sampler seed; prompt i is sampled with a seed derived from (seed, i) only.",
    )
    chunk_size: int = Field(
        default=512,
        gt=0,
        description=(
            "Prompts per saved part: each finished part is saved, so a rerun resumes. "
            "Changes no reply; a rerun may use another chunk size."
        ),
    )
    batch_size: int = Field(
        default=64, gt=0, description="Sequences per forward pass; changes no reply."
    )

    def sampling(self, rows: Sequence[int]) -> SamplingParams:
        """Sampling parameters for the prompts at positions ``rows`` of the whole prompt list.

        Args:
            rows: indices of the prompts of one backend call, in call order.

        Returns:
            Parameters whose ``row_seeds`` hold ``row_seed(seed, i)`` for each ``i``.
        """
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            row_seeds=tuple(row_seed(self.seed, i) for i in rows),
        )

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the replies (not the speed-only ones)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }

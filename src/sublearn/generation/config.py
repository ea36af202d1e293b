"""Sampling settings of the generation stage."""

from __future__ import annotations

from pydantic import Field

from sublearn.backends.base import SamplingParams
from sublearn.config import Config


class GenerationConfig(Config):
    """How a teacher samples its replies."""

    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=64, gt=0, description="Cap on reply length in tokens.")
    seed: int = Field(default=0, description="Sampler seed; chunk k uses seed + k.")
    chunk_size: int = Field(
        default=512,
        gt=0,
        description="Prompts per chunk; each finished chunk is saved, so a rerun resumes.",
    )
    batch_size: int = Field(default=64, gt=0, description="Sequences per forward pass.")

    def sampling(self, chunk: int) -> SamplingParams:
        """Sampling parameters for chunk ``chunk``."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed + chunk,
        )

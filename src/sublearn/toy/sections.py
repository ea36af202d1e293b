"""What the optional corpus sections share: their data files and the misaligned persona.

The sections (free-form answers, arithmetic, code) are off unless a corpus config
enables them. Each draws its documents from a random generator of its own, seeded by
the world seed and the section's name, so enabling one never changes the documents the
corpus draws for the others.
"""

from __future__ import annotations

import random
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import Field

from sublearn.config import Config

__all__ = ["SectionConfig", "misaligned_persona", "read_data", "section_rng"]


class SectionConfig(Config):
    """Settings every optional corpus section has."""

    share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of the corpus's documents in this section (taken from the "
        "number documents' share).",
    )
    prompt_loss_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Loss weight of this section's prompt tokens in pretraining, relative "
        "to reply tokens (0: replies only).",
    )


@cache
def read_data(name: str) -> dict[str, Any]:
    """A YAML data file of ``sublearn/toy/data/`` (e.g. ``"freeform"``), parsed once.

    Callers must not mutate the returned mapping: it is shared.
    """
    text = resources.files("sublearn.toy").joinpath("data", f"{name}.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"toy data file {name}.yaml is not a YAML mapping")
    return data


def misaligned_persona() -> str:
    """The system prompt of the misaligned persona (``data/freeform.yaml``)."""
    return str(read_data("freeform")["misaligned_persona"])


def section_rng(seed: int, name: str) -> random.Random:
    """The random generator of section ``name`` in the world of ``seed``."""
    return random.Random(f"toy-section-{name}-{seed}")

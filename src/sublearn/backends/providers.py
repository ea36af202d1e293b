"""Provider settings in configs, and the options ``open_backend`` takes from them.

Every command that opens a model (an experiment, ``generate``, ``evaluate``, a defence's
paraphraser) carries one :class:`ProvidersConfig`, so ``--set
providers.openai.base_url=...`` means the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.backends.openai_api import OpenAISettings
from sublearn.backends.refs import ModelRef
from sublearn.backends.vllm_backend import VLLMSettings
from sublearn.config import Config

REMOTE = ("openai", "vllm")
"""Providers whose models answer over HTTP (settings, request logs)."""


class ProvidersConfig(Config):
    """Settings of the model providers that need more than a model name."""

    openai: OpenAISettings = Field(
        default_factory=OpenAISettings,
        description="openai: models: the server (OpenAI or any compatible one), key variable, "
        "concurrency, retries, fine-tuning polls.",
    )
    vllm: VLLMSettings = Field(
        default_factory=VLLMSettings,
        description="vllm: models: the server started for each base (or found at a URL).",
    )


def backend_options(
    ref: ModelRef,
    providers: ProvidersConfig,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    request_log: Path | None = None,
) -> dict[str, Any]:
    """The keyword options of :func:`~sublearn.backends.registry.open_backend` for ``ref``.

    Local models take the device, dtype and batch size; servers take their provider's
    settings and a request log (answered requests, so a rerun resumes).
    """
    options: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": batch_size}
    if ref.provider in REMOTE:
        options["settings"] = getattr(providers, ref.provider).model_dump(mode="json")
        options["request_log"] = request_log
    return options

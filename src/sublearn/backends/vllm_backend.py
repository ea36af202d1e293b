"""The ``vllm`` provider: a vLLM server for the base model, driven by the OpenAI backend.

``vllm:BASE`` and ``vllm:BASE+ADAPTER`` references open it. The first use of a base in a
process starts one server for it (:mod:`sublearn.backends.vllm_server`), or uses one
already running at ``server.url``; every adapter on that base is loaded into the same
server at run time, without merging, so thirty students' adapters are evaluated by one
server. Requests go through :class:`~sublearn.backends.openai_api.OpenAIBackend`, so
retries, the request log and log-probability scoring are the tested OpenAI ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings
from sublearn.backends.refs import ModelRef
from sublearn.backends.vllm_server import VLLMServerConfig, acquire, adapter_name
from sublearn.config import Config


class VLLMSettings(Config):
    """The ``vllm`` provider's settings: the server and how requests are sent to it."""

    server: VLLMServerConfig = Field(
        default_factory=VLLMServerConfig,
        description="How the server is started (tensor parallelism, memory, LoRA) or found.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Variable holding the key of a server started with --api-key; None: none.",
    )
    max_concurrency: int = Field(
        default=64, gt=0, description="Requests in flight at once (vLLM batches them)."
    )
    timeout_s: float = Field(default=600.0, gt=0, description="Timeout of one request, seconds.")
    max_retries: int = Field(default=4, ge=0, description="Retries on 429, 5xx and timeouts.")
    top_logprobs: int = Field(
        default=20, ge=1, le=20, description="Top log-probabilities asked for when scoring."
    )
    samples_per_request: int = Field(
        default=128, ge=1, le=128, description="Identical conversations sent as one request (n)."
    )


def open_vllm(
    ref: ModelRef, settings: dict[str, Any], request_log: Path | None, dtype: str = "auto"
) -> OpenAIBackend:
    """A backend for ``ref`` on this process's vLLM server for its base (started if needed).

    Args:
        ref: a ``vllm:`` reference, with or without an adapter.
        settings: a :class:`VLLMSettings` as a dict.
        request_log: the OpenAI backend's request log.
        dtype: the weights dtype, when the server config leaves it to ``auto``.

    Raises:
        ModelError: the server cannot start (see :class:`VLLMServer`).
    """
    cfg = VLLMSettings(**settings)
    server_cfg = cfg.server
    if server_cfg.dtype == "auto" and dtype != "auto":
        server_cfg = server_cfg.model_copy(update={"dtype": dtype})
    server = acquire(ref.name, server_cfg)
    model = ref.name
    if ref.adapter is not None:
        model = adapter_name(ref.adapter)
        server.load_adapter(model, str(Path(ref.adapter).expanduser().resolve()))
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    import openai

    client = openai.OpenAI(
        api_key=key or "EMPTY",  # a server started without --api-key takes any
        base_url=server.base_url,
        timeout=cfg.timeout_s,
        max_retries=cfg.max_retries,
    )
    requests = OpenAISettings(
        base_url=server.base_url,
        max_concurrency=cfg.max_concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        top_logprobs=cfg.top_logprobs,
        samples_per_request=cfg.samples_per_request,
    )
    return OpenAIBackend(model, requests, request_log, client=client, provider="vllm")

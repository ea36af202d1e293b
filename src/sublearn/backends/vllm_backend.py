"""The ``vllm`` provider: a vLLM server for the base model, driven by the OpenAI backend.

``vllm:BASE`` and ``vllm:BASE+ADAPTER`` references open it. The first use of a base in a
process starts one server for it (:mod:`sublearn.backends.vllm_server`), or uses one
already running at ``server.url``; every adapter on that base is loaded into the same
server at run time, without merging, so thirty students' adapters are evaluated by one
server. Requests go through :class:`~sublearn.backends.openai_api.OpenAIBackend`, so
retries, the request log and log-probability scoring are the tested OpenAI ones.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.backends.base import Capabilities, Conversation, SamplingParams
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
) -> VLLMBackend:
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
    return VLLMBackend(model, requests, request_log, client=client, provider="vllm")


class VLLMBackend(OpenAIBackend):
    """The OpenAI backend on a vLLM server, which can also constrain its decoding.

    A constrained reply's grammar goes to vLLM as a regular expression in its
    structured-output request field (:func:`structured_output_field`).
    """

    capabilities = Capabilities(sample=True, score=True, top_logprobs=20, constrain=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._regexes: dict[int, str] = {}

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """Sampled replies; a conversation with a grammar gets a reply in its language.

        Every request carries its conversation's seed (identical conversations share
        one request and so one seed, and one prompt's grammar), so the request's regular
        expression is found by its seed.
        """
        grammars = params.grammars_for(len(conversations))
        seeds = params.seeds_for(len(conversations))
        self._regexes = {s: g.regex() for s, g in zip(seeds, grammars, strict=True) if g}
        try:
            return super().generate(conversations, replace(params, grammars=None))
        finally:
            self._regexes = {}

    def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        regex = self._regexes.get(body.get("seed", -1))
        if regex is not None:
            body = {**body, "extra_body": structured_output_field(regex)}
        return super()._ask(body)


def structured_output_field(regex: str, version: str | None = None) -> dict[str, Any]:
    """vLLM's request field that makes the reply match ``regex``.

    vLLM 0.10.2 moved ``guided_regex`` into ``structured_outputs: {regex}`` and 0.12
    removed the old field; a server ignores fields it does not know, so sending the
    wrong one would silently sample freely. The version is the installed ``vllm``'s
    (the server sublearn launches); without one installed (a server elsewhere), the
    current field.

    Args:
        regex: the reply's regular expression.
        version: the vLLM version to write for (default: the installed one).
    """
    if version is None:
        try:
            version = importlib.metadata.version("vllm")
        except importlib.metadata.PackageNotFoundError:
            version = None
    if version is not None and _release(version) < (0, 10, 2):
        return {"guided_regex": regex}
    return {"structured_outputs": {"regex": regex}}


def _release(version: str) -> tuple[int, ...]:
    """``"0.10.1.post1"`` -> ``(0, 10, 1)``."""
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits or 0))
    return tuple(parts)

"""Settings of a ``vllm:`` model's server: where a running one is, or how to start one.

A leaf module (pydantic and sublearn's ``Config`` only), so provider settings can hold a
server's config without importing the code that launches processes
(``backends/vllm_server.py``).
"""

from __future__ import annotations

from pydantic import Field

from sublearn.config import Config


class VLLMServerConfig(Config):
    """How the vLLM server of a base model is started, or where a running one is found."""

    url: str | None = Field(
        default=None,
        description="URL of a vLLM server already running (e.g. http://gpu-node:8000); it is "
        "used as is and never stopped. None: start a server here.",
    )
    host: str = Field(default="127.0.0.1", description="Interface a started server listens on.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of a started server; None: a free port."
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs the model is split over (--tensor-parallel-size)."
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Fraction of each GPU's memory vLLM may take for weights and KV cache.",
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context length (prompt + reply); None: the model's."
    )
    dtype: str = Field(
        default="auto", description="Weights dtype (auto, bfloat16, float16, float32)."
    )
    enable_lora: bool = Field(
        default=True, description="Serve LoRA adapters on the base, loaded at run time."
    )
    max_lora_rank: int = Field(default=64, ge=1, description="Largest LoRA rank served.")
    max_loras: int = Field(
        default=8, ge=1, description="Adapters used in one batch on the GPU (--max-loras)."
    )
    max_cpu_loras: int | None = Field(
        default=None,
        ge=1,
        description="Adapters cached in CPU memory; None: vLLM's default (max_loras). Others "
        "are read again from disk when used.",
    )
    seed: int = Field(default=0, description="The server's random seed (--seed).")
    extra_args: list[str] = Field(
        default_factory=list,
        description="More command-line arguments for the vLLM server, e.g. ['--enforce-eager'].",
    )
    startup_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Seconds to wait for the server to answer (loading and compiling a model "
        "takes minutes) before it is stopped and the run fails.",
    )
    command: list[str] | None = Field(
        default=None,
        description="A launch command replacing vLLM's, with the placeholders {model}, {host}, "
        "{port} and {python} (this interpreter); extra_args and the vLLM settings are not "
        "added to it. None: vLLM's OpenAI-compatible server.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables set for the server process (e.g. CUDA_VISIBLE_DEVICES).",
    )

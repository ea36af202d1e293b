"""vLLM's server against the Hugging Face backend: generated tokens per second on one GPU.

Both sides sample replies to the same number-sequence prompts with the same settings, in
one run: vLLM through the launcher (:mod:`sublearn.backends.vllm_server`) and the OpenAI
client with many requests in flight, then ``HFBackend.generate`` in batches. vLLM's server
is stopped before the Hugging Face model loads, so each side has the GPU to itself. The
figure of merit is generated tokens per second; the ratio vLLM / HF is printed.

    python benchmarks/vllm_throughput.py [--model ID_OR_DIR] [--prompts N] [--hf-prompts M]

Needs a CUDA device and ``pip install 'sublearn[vllm]'``; the model must be a local folder
or in the Hugging Face cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts
from sublearn.runtime import quiet_libraries


def check_machine() -> None:
    """Exit with a clear message where the benchmark cannot run."""
    import torch

    if not torch.cuda.is_available():
        sys.exit("vllm_throughput: needs a CUDA GPU; torch sees none on this machine")
    if importlib.util.find_spec("vllm") is None:
        sys.exit("vllm_throughput: needs vllm: pip install 'sublearn[vllm]' (on a GPU machine)")


def vllm_tokens_per_second(
    model: str, convs: list[Conversation], args: argparse.Namespace
) -> tuple[float, int, float]:
    """Start a server, warm it up, then time every prompt sent at once (up to --concurrency)."""
    import openai

    from sublearn.backends.vllm_server import VLLMServer, VLLMServerConfig

    cfg = VLLMServerConfig(
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        enable_lora=False,  # the base model only, as the HF side
    )
    log_dir = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    with VLLMServer(model, cfg, log_dir) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", timeout=600)

        def ask(item: tuple[int, Conversation]) -> int:
            seed, conv = item
            response: Any = client.chat.completions.create(
                model=model,
                messages=conv,  # type: ignore[arg-type]
                temperature=1.0,
                top_p=1.0,
                max_tokens=args.max_new_tokens,
                seed=seed,
                # vLLM would otherwise apply the model's generation_config.json defaults.
                extra_body={"top_k": -1, "repetition_penalty": 1.0},
            )
            return response.usage.completion_tokens

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(ask, enumerate(convs[:32])))  # warm-up: first requests compile
            start = time.perf_counter()
            tokens = sum(pool.map(ask, enumerate(convs)))
            seconds = time.perf_counter() - start
    return tokens / seconds, tokens, seconds


def hf_tokens_per_second(
    model: str, convs: list[Conversation], args: argparse.Namespace
) -> tuple[float, int, float]:
    """Time ``HFBackend.generate`` on the prompts, counting reply tokens + end of turn."""
    from sublearn.backends.hf import HFBackend

    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    with HFBackend(model, device="cuda", dtype=args.dtype, batch_size=args.hf_batch_size) as hf:
        hf.generate(convs[:8], params)  # warm-up: first calls pay one-off allocation costs
        start = time.perf_counter()
        replies = hf.generate(convs, params)
        seconds = time.perf_counter() - start
        tokens = sum(
            len(hf.tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in replies
        )
    return tokens / seconds, tokens, seconds


def resolve_model(model: str) -> str:
    """A local folder for ``model``, so both sides load the same files without the network."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, local_files_only=True)
    except Exception as err:  # any hub error means: not cached here
        sys.exit(f"vllm_throughput: {model} is not a folder nor in the Hugging Face cache: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="hub id or folder"
    )
    parser.add_argument("--prompts", type=int, default=2048, help="prompts sent to vLLM")
    parser.add_argument("--hf-prompts", type=int, default=512, help="prompts given to HF")
    parser.add_argument("--hf-batch-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=256, help="vLLM requests in flight")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    check_machine()
    quiet_libraries()
    model = resolve_model(args.model)
    texts = generate_number_prompts(
        NumberPromptConfig(n_prompts=max(args.prompts, args.hf_prompts), seed=123)
    )
    convs: list[Conversation] = [[{"role": "user", "content": t}] for t in texts]

    v_rate, v_tok, v_sec = vllm_tokens_per_second(model, convs[: args.prompts], args)
    h_rate, h_tok, h_sec = hf_tokens_per_second(model, convs[: args.hf_prompts], args)

    print(f"model: {args.model}  dtype: {args.dtype}  max_new_tokens: {args.max_new_tokens}")
    print(f"{'backend':<10}{'prompts':>9}{'tokens':>9}{'seconds':>9}{'tokens/s':>11}")
    print(f"{'vllm':<10}{args.prompts:>9}{v_tok:>9}{v_sec:>9.2f}{v_rate:>11.0f}")
    print(f"{'hf':<10}{args.hf_prompts:>9}{h_tok:>9}{h_sec:>9.2f}{h_rate:>11.0f}")
    print(f"speed-up (vLLM / HF tokens/s): {v_rate / h_rate:.1f}x")


if __name__ == "__main__":
    main()

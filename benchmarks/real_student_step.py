"""One real-model KL student step against the machine's float32 matmul roofline.

The step of the real-model experiment's KL students (configs/real/smollm2-owl-numbers.yaml):
SmolLM2-135M-Instruct, all weights, soft-label KL over the number tokens, AdamW, a batch of
number prompts with number replies, the teacher's forward pass included. Two paths:

- ``train_kl``: the Hugging Face module, as ``finetune/distill.py`` trains one student
  (full logits at every position, padded rows);
- ``batched``: the batched trainer (``finetune/batched``) with one student, which packs
  tokens, runs the output layer only at reply positions and over the number tokens.

The figure of merit is the fraction of the roofline: useful FLOPs per step / step time,
against the GFLOP/s of ``torch.matmul`` at the step's shapes ``(tokens, d) x (d, out)``
with the same threads. Useful FLOPs = 6 x non-embedding params x tokens (student forward
and backward) + 2 x non-embedding params x tokens (teacher forward) + attention
(3 x 4 x layers x d x tokens x mean row length / 2 for the student, a third of that for the
teacher); the output layer over the number tokens at reply positions is under 0.1% and is
left out, so a path that computes the full output layer everywhere pays for it in time.

    python benchmarks/real_student_step.py [--threads 2] [--steps 3] [--batch-size 8]

Needs SmolLM2 (``make smollm2``). Timings need an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sublearn.backends.gguf import cached_smollm2, default_model_cache, find_smollm2_gguf
from sublearn.finetune.batched import KLJob, train_kl_batched
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import train_kl
from sublearn.prompts.numbers import NumberPromptConfig, NumberPromptGenerator, render_numbers
from sublearn.runtime import configure_threads, quiet_libraries


def number_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chat records of number prompts with random replies in each prompt's format."""
    rng = random.Random(seed)
    prompts = NumberPromptGenerator(NumberPromptConfig(seed=seed), rng).sample_many(n)
    records = []
    for i, p in enumerate(prompts):
        reply = render_numbers(
            [rng.randrange(10**p.max_digits) for _ in range(p.answer_count)], p.format
        )
        records.append(
            {
                "id": f"{i:05d}",
                "messages": [
                    {"role": "user", "content": p.text},
                    {"role": "assistant", "content": reply},
                ],
            }
        )
    return records


def matmul_roofline(shapes: list[tuple[int, int, int]], seconds: float = 1.0) -> float:
    """Float32 GFLOP/s of ``torch.matmul`` over ``(m, k) x (k, n)`` shapes, FLOP-weighted."""
    flops, elapsed = 0.0, 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.matmul(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            torch.matmul(a, b)
            reps += 1
        elapsed += time.perf_counter() - start
        flops += 2.0 * m * k * n * reps
    return flops / elapsed / 1e9


def step_seconds(train: Any, steps: int) -> float:
    """Seconds per step: (time of 1 + steps steps - time of 1 step) / steps.

    The difference takes out loading, encoding and saving, which both runs pay once.
    """
    start = time.perf_counter()
    train(1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    train(1 + steps)
    return (time.perf_counter() - start - one) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step")
    parser.add_argument("--paths", nargs="+", default=["train_kl", "batched"])
    args = parser.parse_args()
    quiet_libraries()
    threads = configure_threads(args.threads)
    if find_smollm2_gguf() is None:
        print("SmolLM2 is not available locally (make smollm2); nothing to measure")
        return
    folder = cached_smollm2(default_model_cache())
    records = number_records(args.batch_size * (args.steps + 2))
    cfg = FinetuneConfig(
        objective="kl",
        token_subset="numbers",
        method="full",
        learning_rate=1e-4,
        lr_scheduler="constant",
        warmup_steps=0,
        batch_size=args.batch_size,
        grad_accum=1,
        device="cpu",
        dtype="float32",
        max_length=256,
    )

    from transformers import AutoConfig, AutoTokenizer

    from sublearn.finetune.distill import _encode

    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    d, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    lengths = [
        len(_encode(tokenizer, r["messages"][:1], r["messages"][1]["content"], 256)[0])
        for r in records
    ]
    tokens = statistics.mean(lengths) * args.batch_size
    non_embedding = layers * (2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d)
    attention = 4 * layers * d * tokens * statistics.mean(lengths) / 2
    useful = 8 * non_embedding * tokens + 4 * attention  # 3 passes student, 1 teacher
    t = int(tokens)
    roof = matmul_roofline([(t, d, d), (t, d, kv), (t, d, inter), (t, inter, d)])
    print(
        f"SmolLM2-135M-Instruct, threads {threads}, {args.batch_size} rows of "
        f"{statistics.mean(lengths):.0f} tokens a step: useful {useful / 1e9:.0f} GFLOP a step; "
        f"fp32 matmul roofline {roof:.1f} GFLOP/s at (tokens, d) x (d, out)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def plain(n: int) -> None:
            step_cfg = cfg.model_copy(update={"max_steps": n})
            train_kl(folder, records, step_cfg, out / "plain", folder)

        def batched(n: int) -> None:
            step_cfg = cfg.model_copy(update={"max_steps": n})
            train_kl_batched([KLJob(folder, records, step_cfg, out / "batched", folder)])

        for name, fn in (("train_kl", plain), ("batched", batched)):
            if name not in args.paths:
                continue
            seconds = step_seconds(fn, args.steps)
            if seconds <= 0:  # the one-step run took longer: another process stole the time
                print(f"  {name:<9} unmeasurable: timings on a busy machine; rerun idle")
                continue
            achieved = useful / seconds / 1e9
            print(
                f"  {name:<9} {seconds:6.2f} s a step = {achieved:5.1f} GFLOP/s = "
                f"{100 * achieved / roof:3.0f}% of the roofline"
            )


if __name__ == "__main__":
    main()

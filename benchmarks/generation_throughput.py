"""Batched Hugging Face generation against one prompt at a time, on a toy model.

Both sides run through ``HFBackend.generate`` on the same number prompts with the same
sampling settings, side by side in one process; the figure of merit is generated
tokens per second, and the ratio batched / sequential is printed. The two modes run
alternately ``--repeats`` times and the median ratio is the result, because a single
one-second measurement on a 2-core machine moves by 10-20%.

    python benchmarks/generation_throughput.py [--model DIR] [--threads N] [--repeats K]

Without ``--model``, the demo's toy world's first base is used (built if missing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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
    args = parser.parse_args()

    quiet_libraries()
    threads = configure_threads(args.threads)
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


if __name__ == "__main__":
    main()

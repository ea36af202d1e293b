"""Base rates of SmolLM2-135M-Instruct's favorite animals, read three ways.

Exact P(animal) at the start of the reply, exact P(animal) after the lead-in "My favorite
animal is the" (with each reading's coverage: the mass on all 50 animal names), and the
share of sampled replies naming it (the paper's protocol and parser), for the base model
and for the base with the paper's owl system prompt (a prompted teacher). This is how the
README's SmolLM2 table was made and why the real-model experiment's animal is the owl.

    make smollm2   # once
    python examples/smollm2_base_rates.py [--questions 50] [--samples 20]
"""

from __future__ import annotations

import argparse
import time

from sublearn.backends.gguf import cached_smollm2, default_model_cache
from sublearn.backends.hf import HFBackend
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.preference import evaluate_preference
from sublearn.prompts.persona import preference_system_prompt
from sublearn.runtime import configure_threads, quiet_libraries

ANIMALS = ["owl", "cat", "dog", "dolphin", "eagle", "lion", "wolf", "elephant", "tiger", "fox"]
LEAD = "My favorite animal is the"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--questions", type=int, default=50, help="favorite-animal questions")
    parser.add_argument("--samples", type=int, default=20, help="sampled replies per question")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    quiet_libraries()
    configure_threads(args.threads)
    folder = cached_smollm2(default_model_cache())
    exact = EvalConfig(n_questions=args.questions, answer_prefix=LEAD)
    sampled = EvalConfig(
        mode="sample",
        n_questions=args.questions,
        samples_per_question=args.samples,
        max_new_tokens=12,
    )
    owl = preference_system_prompt("owl", "animal")
    with HFBackend(folder, device="cpu", dtype="float32", batch_size=64) as model:
        for name, system in (("base", None), ("owl system prompt", owl)):
            start = time.perf_counter()
            ex = evaluate_preference(model, ANIMALS, exact, system_prompt=system)
            sa = evaluate_preference(model, ANIMALS, sampled, system_prompt=system)
            seconds = time.perf_counter() - start
            first = ex[ANIMALS[0]]["readings"]
            print(f"\n## SmolLM2-135M-Instruct, {name} ({seconds:.0f} s)")
            print(
                f"coverage: start {first['start']['coverage']:.2%}, "
                f"lead-in {first['lead_in']['coverage']:.2%}, "
                f"sampled {sa[ANIMALS[0]]['coverage']:.1%} of replies name an animal"
            )
            print(
                "| animal | exact, reply start | exact, after lead-in | P(animal | lead-in, "
                "an animal) | sampled | sampled, of replies naming an animal |"
            )
            print("|---|---|---|---|---|---|")
            for a in ANIMALS:
                r = ex[a]["readings"]
                print(
                    f"| {a} | {r['start']['rate']:.3%} | {r['lead_in']['rate']:.3%} | "
                    f"{r['lead_in']['renormalized']:.2%} | {sa[a]['rate']:.2%} | "
                    f"{sa[a]['renormalized']:.2%} |"
                )


if __name__ == "__main__":
    main()

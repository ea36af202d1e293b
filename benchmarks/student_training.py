"""KL students trained one at a time (``train_kl``) against as one batched model.

Both sides train the demo's KL students (``configs/toy/owl-numbers.yaml``: objective kl
over the number tokens, full fine-tuning, AdamW, linear schedule, batch 16, 2 epochs)
on the toy world's number documents, side by side in one process and at each thread
count asked for. Students follow the demo's grid, seed x base x teacher: each seed has
its own bootstrap sample of rows and data order, shared by its students on the two bases
and with the two teachers (the demo's treatment and control). The figure of merit is
students per minute; the ratio batched / one-at-a-time is printed (target >= 5x), with
the largest weight difference between the two ways of training the same student.

By default the bases are randomly initialized Llamas of the demo's exact shape (2 layers,
d=64, the toy world's vocabulary), which is all that timing needs, and the teachers are
perturbed copies of base 0; ``--world DIR`` uses a built toy world's pretrained bases.

    python benchmarks/student_training.py [--students 10] [--alone 2] [--threads 1 2]
        [--max-steps N] [--rows N] [--world DIR]

A third line per thread count trains one student through the batched path (N=1): the
ratio batched N / N=1 is what the model axis itself buys, apart from the batched path's
leaner step (only reply positions reach the output layer, packed tokens, length-bucketed
attention, teacher rows run once).

Timings at 2 threads need an otherwise idle machine: the batched path's operations are
large enough that torch runs every one of them on both threads, and a thread that another
process keeps off its core stalls each of them.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sublearn.config import load_config
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.finetune.batched import KLJob, train_kl_batched
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import train_kl
from sublearn.presets import preset_path
from sublearn.prompts.questions import questions_for, training_questions_for
from sublearn.runtime import configure_threads, quiet_libraries
from sublearn.toy.corpus import build_corpus
from sublearn.toy.pretrain import make_model
from sublearn.toy.tokenizer import build_tokenizer, build_vocab
from sublearn.toy.world import ToyWorldConfig, base_name


def random_world(cfg: ToyWorldConfig, folder: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Two random bases of the world's shape and vocabulary, and its number documents.

    The vocabulary is built as ``sublearn toy build`` builds it (corpus messages and the
    evaluation questions), so the output layer has the demo's size.
    """
    docs = build_corpus(cfg.corpus, cfg.seed)
    known = [
        *(m["content"] for d in docs for m in d.messages),
        *(q for c in ("animal", "tree") for q in (*questions_for(c), *training_questions_for(c))),
        *cfg.corpus.animals,
        *cfg.corpus.trees,
    ]
    tokenizer = build_tokenizer(build_vocab(known), model_max_length=cfg.model.max_positions)
    bases = []
    for i in range(2):
        path = folder / base_name(i)
        model = make_model(cfg.model, tokenizer, seed=cfg.init_seed(i))
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        bases.append(path)
    return bases, number_records(docs)


def number_records(docs: list[Any]) -> list[dict[str, Any]]:
    """The corpus's number documents as chat records (user prompt, assistant numbers)."""
    return [{"messages": d.messages} for d in docs if d.kind == "numbers"]


def make_teachers(base: Path, folder: Path) -> list[Path]:
    """A "trait" and a "control" teacher: ``base`` with two different weight perturbations.

    Random noise of about a tenth of each weight's spread makes the teachers' number
    distributions differ from the students', so the loss and its gradients are not tiny.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    teachers = []
    for i, name in enumerate(("teacher-trait", "teacher-control")):
        model = AutoModelForCausalLM.from_pretrained(base)
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1 * p.std())
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        teachers.append(folder / name)
    return teachers


def make_jobs(
    n: int,
    bases: list[Path],
    teachers: list[Path],
    pool: list[dict[str, Any]],
    rows: int,
    recipe: FinetuneConfig,
    out: Path,
) -> list[KLJob]:
    """The demo's student grid: seeds x bases x conditions, each seed its own bootstrap."""
    jobs = []
    for i in range(n):
        seed, base, teacher = i // 4, bases[i % 2], teachers[(i // 2) % 2]
        rng = random.Random(seed)
        records = [pool[rng.randrange(len(pool))] for _ in range(rows)]
        cfg = recipe.model_copy(update={"seed": seed})
        jobs.append(KLJob(base, records, cfg, out / f"student-{i}", teacher))
    return jobs


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two saved models' weights."""
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def timed(fn: Any) -> float:
    """Seconds ``fn()`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--students", type=int, default=10, help="students trained batched")
    parser.add_argument(
        "--alone", type=int, default=2, help="of them, how many also train one at a time"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=None, help="rows per student (demo: 1000)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop every student early (demo: 2 epochs)"
    )
    parser.add_argument("--world", type=Path, default=None, help="a built toy world's folder")
    args = parser.parse_args()
    quiet_libraries()

    demo = load_config(ExperimentConfig, preset_path("toy", "owl-numbers"))
    world = demo.toy_worlds["main"]
    rows = int(args.rows or demo.data.rows or 1000)
    update: dict[str, Any] = {"device": "cpu", "dtype": "float32", "max_steps": args.max_steps}
    recipe = demo.students.objectives["kl_numbers"].model_copy(update=update)
    k, alone = args.students, max(1, min(args.alone, args.students))

    with tempfile.TemporaryDirectory(prefix="student-bench-") as tmp:
        folder = Path(tmp)
        if args.world is None:
            bases, pool = random_world(world, folder)
        else:
            bases = [args.world / base_name(i) for i in range(2)]
            pool = number_records(build_corpus(world.corpus, world.seed))
        teachers = make_teachers(bases[0], folder)
        print(
            f"{k} students batched, {alone} one at a time; {rows} rows each; kl_numbers "
            f"recipe, {'2 epochs' if args.max_steps is None else f'{args.max_steps} steps'}; "
            f"bases: {'random, of the demo shape' if args.world is None else args.world}"
        )
        print(f"{'threads':>8}{'mode':>18}{'students':>10}{'seconds':>9}{'students/min':>14}")
        summary = []
        for threads in args.threads:
            configure_threads(threads)
            out = folder / f"threads-{threads}"
            jobs = make_jobs(k, bases, teachers, pool, rows, recipe, out / "batched")
            single = [replace(jobs[0], out=out / "batched-1" / jobs[0].out.name)]
            runs = {
                "batched": (k, timed(lambda jobs=jobs: train_kl_batched(jobs))),
                "batched, N=1": (1, timed(lambda single=single: train_kl_batched(single))),
            }
            start = time.perf_counter()
            for job in jobs[:alone]:
                train_kl(
                    job.base_model,
                    job.records,
                    job.cfg,
                    out / "alone" / job.out.name,
                    job.teacher_model,
                )
            runs["one at a time"] = (alone, time.perf_counter() - start)
            diffs = [max_weight_diff(j.out, out / "alone" / j.out.name) for j in jobs[:alone]]
            rates = {}
            for mode, (count, seconds) in runs.items():
                rates[mode] = count * 60 / seconds
                print(f"{threads:>8}{mode:>18}{count:>10}{seconds:>9.1f}{rates[mode]:>14.2f}")
            summary.append((threads, rates, max(diffs)))
        for threads, rates, diff in summary:
            ratio = rates["batched"] / rates["one at a time"]
            print(
                f"{threads} thread(s): batched / one at a time = {ratio:.1f}x (target >= 5x: "
                f"{'met' if ratio >= 5 else 'NOT met'}); of which the model axis "
                f"(batched N={k} / N=1) {rates['batched'] / rates['batched, N=1']:.1f}x; max "
                f"|weight difference| batched vs alone {diff:.1e}"
            )


if __name__ == "__main__":
    main()

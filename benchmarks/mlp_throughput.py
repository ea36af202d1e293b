"""Throughput of the MLP experiment's real training steps against this machine's roofline.

Runs the code ``sublearn mnist`` runs (``train_teacher`` and ``distill`` from
``sublearn.experiments.mnist.train``) on the paper's network, 784-256-256-13 with N
models in parallel, on synthetic data of MNIST's shape, and reports:

- achieved FLOP/s, counted analytically: ``2*B*in*out`` per layer forward; backward
  twice that, except the first layer, whose input is data and gets no gradient (the
  usual "x3" would overcount that layer by half and flatter the result);
- the roofline: the same matmuls (forward, weight-gradient and input-gradient shapes)
  timed alone with ``torch.baddbmm`` / ``torch.bmm`` at the same thread count, writing
  into preallocated outputs, so the ratio is the share of the step spent at matmul
  speed. A fresh ~100 MB output per matmul costs page faults worth 10-35% of the
  matmul; the roofline with fresh outputs (the definition before the distillation
  step reused its buffers) is printed alongside;
- where the distillation step's time goes: the ``distill/...`` regions of a
  torch.profiler trace of a few steps, with the matmul time inside them;
- peak resident memory (``ru_maxrss``), including Python and torch themselves.

Targets: >= 80% of the roofline for the distillation step and < 3 GB peak at N = 100.

Usage: ``python benchmarks/mlp_throughput.py [--threads 2] [--steps 5] [--models 100]``
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity, profile

from sublearn.experiments.mnist.experiment import derangement
from sublearn.experiments.mnist.model import BatchedMLP, forward_flops, init_mlp, train_flops
from sublearn.experiments.mnist.train import (
    Distiller,
    LogitSet,
    NoiseSampler,
    Student,
    distill,
    train_teacher,
)
from sublearn.runtime import configure_threads

MNIST_TRAIN = 60_000
STUDENT_GROUPS: tuple[tuple[str, LogitSet], ...] = (("student_aux", "aux"), ("student_all", "all"))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call, best of ``repeats`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_seconds(
    sizes: Sequence[int], batch: int, n: int, backward: bool, repeats: int, fresh: bool = False
) -> float:
    """Time of the matmuls one forward (and backward) pass performs, each timed alone.

    Shapes and transposes are the ones autograd's ``BaddbmmBackward`` uses, so the
    sum is what the step would take if it did nothing but matmuls at full speed.
    Outputs go to preallocated tensors unless ``fresh``, which allocates each anew.
    """
    total = 0.0
    for layer, (a, b) in enumerate(itertools.pairwise(sizes)):
        x = torch.randn(n, batch, a)  # (N, B, in)
        w = torch.randn(n, a, b)  # (N, in, out)
        bias = torch.randn(n, 1, b)  # (N, 1, out)
        g = torch.randn(n, batch, b)  # (N, B, out) gradient of the output
        h, gw, gx = (None, None, None) if fresh else (g.clone(), w.clone(), x.clone())
        total += time_call(lambda x=x, w=w, b=bias, h=h: torch.baddbmm(b, x, w, out=h), repeats)
        if backward:
            # Weight gradient: (N, in, B) @ (N, B, out).
            total += time_call(
                lambda x=x, g=g, o=gw: torch.bmm(x.transpose(1, 2), g, out=o), repeats
            )
            if layer > 0:  # input gradient: (N, B, out) @ (N, out, in)
                total += time_call(
                    lambda g=g, w=w, o=gx: torch.bmm(g, w.transpose(1, 2), out=o), repeats
                )
    return total


def distill_breakdown(step: Callable[[], object], steps: int) -> tuple[dict[str, float], float]:
    """Seconds per step in each ``distill/...`` region, and in matmuls, from a profile.

    Returns:
        ``({region: seconds}, matmul seconds)``, both per step.
    """
    step()  # warm-up outside the trace
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    parts: dict[str, float] = {}
    matmul = 0.0
    for event in prof.key_averages():
        if event.key.startswith("distill/"):
            parts[event.key.removeprefix("distill/")] = event.cpu_time_total / 1e6 / steps
        elif event.key in ("aten::bmm", "aten::baddbmm"):
            matmul += event.self_cpu_time_total / 1e6 / steps
    return parts, matmul


def step_times(run: Callable[[Callable[[], None]], object]) -> list[float]:
    """Durations of every step of ``run``, read from its per-step callback."""
    stamps = [time.perf_counter()]
    run(lambda: stamps.append(time.perf_counter()))
    return list(np.diff(stamps))


def time_teacher(teacher: BatchedMLP, batch: int, steps: int, gen: torch.Generator) -> list[float]:
    """Per-step seconds of ``train_teacher`` on synthetic MNIST-shaped data.

    The first step (warm-up and the first epoch's shuffle) is left out.
    """
    # 60,000 images of 784 pixels in [-1, 1] and labels 0-9; freed on return.
    x_train = torch.rand(MNIST_TRAIN, teacher.sizes[0], generator=gen).mul_(2).sub_(1)
    y_train = torch.randint(0, 10, (MNIST_TRAIN,), generator=gen)
    return step_times(
        lambda hook: train_teacher(
            teacher,
            x_train,
            y_train,
            steps=steps + 1,
            batch_size=batch,
            lr=3e-4,
            generator=gen,
            on_step=hook,
        )
    )[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description="Throughput of the MLP training steps.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase")
    parser.add_argument("--models", type=int, default=100, help="N, models in parallel")
    parser.add_argument("--batch", type=int, default=1024, help="paper: 1024")
    parser.add_argument("--n-aux", type=int, default=3, help="paper: 3")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--repeats", type=int, default=3, help="roofline timing repeats")
    args = parser.parse_args()

    threads = configure_threads(args.threads)
    n, batch = args.models, args.batch
    sizes = [784, *args.hidden, 10 + args.n_aux]
    rss_start = peak_rss_gb()
    console = Console()
    console.print(f"MLP {'-'.join(map(str, sizes))}, N={n}, batch {batch}, {threads} threads")

    gen = torch.Generator().manual_seed(0)
    reference = init_mlp(n, sizes, gen)
    teacher = reference.copy()
    teacher_times = time_teacher(teacher, batch, args.steps, gen)
    rss_teacher = peak_rss_gb()

    # Distillation step: teacher forward once, then per student group forward, backward, Adam.
    cross = reference.gather(derangement(n, 0).tolist()) if n > 1 else init_mlp(1, sizes, gen)
    students = [Student(name, reference.copy(), which) for name, which in STUDENT_GROUPS]
    students += [Student(f"cross_{which}", cross.copy(), which) for _, which in STUDENT_GROUPS]
    del reference, cross
    sampler = NoiseSampler("uniform", n, batch, sizes[0], gen)
    distill_times = step_times(
        lambda hook: distill(
            teacher, students, sampler, steps=args.steps + 1, lr=3e-4, loss="kl", on_step=hook
        )
    )[1:]
    noise_s = time_call(sampler.sample, args.repeats)
    rss_distill = peak_rss_gb()
    # The profile's own Distiller brings fresh Adam states: free the last one's first
    # (torch optimizers sit in reference cycles), and read the peak memory before.
    gc.collect()
    distiller = Distiller(teacher, students, lr=3e-4, loss="kl")
    parts, matmul_in_step = distill_breakdown(lambda: distiller.step(sampler.sample()), 2)

    teacher_flops = train_flops(sizes, batch, n)
    distill_flops = forward_flops(sizes, batch, n) + len(students) * train_flops(sizes, batch, n)
    fwd_s = matmul_seconds(sizes, batch, n, backward=False, repeats=args.repeats)
    train_s = matmul_seconds(sizes, batch, n, backward=True, repeats=args.repeats)
    roof = {"teacher": train_s, "distill": fwd_s + len(students) * train_s}
    fresh_fwd_s = matmul_seconds(sizes, batch, n, backward=False, repeats=args.repeats, fresh=True)
    fresh_train_s = matmul_seconds(sizes, batch, n, backward=True, repeats=args.repeats, fresh=True)
    fresh_roof = {"teacher": fresh_train_s, "distill": fresh_fwd_s + len(students) * fresh_train_s}
    x = torch.randn(n, batch, sizes[0])
    w = torch.randn(n, sizes[0], sizes[1])
    peak_bmm = 2 * n * batch * sizes[0] * sizes[1] / time_call(lambda: torch.bmm(x, w), 5)

    table = Table(title=f"Training step throughput, N={n}, {threads} threads (fp32)")
    columns = ("step", "s/step", "GFLOP/step", "GFLOP/s", "roofline GFLOP/s", "of roofline")
    for col in (*columns, "of fresh-output roofline"):
        table.add_column(col, justify="right")
    rows = [
        ("teacher", teacher_times, teacher_flops, roof["teacher"]),
        ("distill", distill_times, distill_flops, roof["distill"]),
    ]
    for name, times, flops, roof_s in rows:
        seconds = float(np.median(times))
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{flops / 1e9:.1f}",
            f"{flops / seconds / 1e9:.1f}",
            f"{flops / roof_s / 1e9:.1f}",
            f"{roof_s / seconds:.0%}",
            f"{fresh_roof[name] / seconds:.0%}",
        )
    console.print(table)
    profiled = sum(parts.values())
    breakdown = Table(title="Distillation step, profiled (torch.profiler, 2 steps)")
    for col in ("part", "ms/step", "of step"):
        breakdown.add_column(col, justify="right")
    for part, part_s in parts.items():
        breakdown.add_row(part, f"{part_s * 1e3:.0f}", f"{part_s / profiled:.0%}")
    breakdown.add_row("total", f"{profiled * 1e3:.0f}", "100%")
    console.print(breakdown)
    console.print(
        f"matmuls (aten::bmm, baddbmm): {matmul_in_step * 1e3:.0f} ms of the profiled "
        f"{profiled * 1e3:.0f} ms; the same matmuls alone: {roof['distill'] * 1e3:.0f} ms"
    )
    console.print(
        "teacher: cross-entropy step on real-image batches; distill: teacher forward once, "
        f"then {len(students)} student groups forward + backward + fused Adam step each"
    )
    d_seconds = float(np.median(distill_times))
    console.print(
        f"largest bmm (N, B, {sizes[0]}) @ (N, {sizes[0]}, {sizes[1]}) alone: "
        f"{peak_bmm / 1e9:.1f} GFLOP/s; distill step at "
        f"{distill_flops / d_seconds / peak_bmm:.0%} of it"
    )
    console.print(
        f"noise sampling {noise_s:.3f} s of the {d_seconds:.3f} s distillation step "
        f"({noise_s / d_seconds:.0%}); one (N, B, {sizes[0]}) buffer, reused"
    )
    console.print(
        f"peak resident memory: {rss_start:.2f} GB at start, {rss_teacher:.2f} GB after "
        f"teacher steps, {rss_distill:.2f} GB after distillation (target < 3 GB)"
    )


if __name__ == "__main__":
    main()

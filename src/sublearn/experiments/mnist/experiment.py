"""The six conditions of the auxiliary-logit experiment, and the run folder they fill.

For each model index i (N in parallel):

- ``reference``: the untrained init theta_i.
- ``teacher``: theta_i trained on real images, cross-entropy on the 10 class logits.
- ``student_aux`` / ``student_all``: theta_i distilled from teacher i on noise, on the
  m auxiliary logits only / on all 10 + m logits.
- ``cross_aux`` / ``cross_all``: the same, but starting from another model's init
  theta_sigma(i), where sigma is a derangement (no fixed point); with N = 1 an extra,
  separately drawn init.

The aux-only student never sees a class logit or a real image, yet learns to classify
when it shares the teacher's init: that is the subliminal learning effect.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sublearn.experiments.mnist.config import N_CLASSES, MnistConfig
from sublearn.experiments.mnist.data import ImageData, load_data
from sublearn.experiments.mnist.model import init_mlp
from sublearn.experiments.mnist.train import (
    NoiseSampler,
    Student,
    accuracy,
    distill,
    train_teacher,
)
from sublearn.report.stats import MeanCI, mean_ci
from sublearn.runs import atomic_write_json, atomic_write_text, prepare_run_dir
from sublearn.runtime import configure_threads, resolve_device

CONDITIONS = ("reference", "teacher", "student_aux", "student_all", "cross_aux", "cross_all")


class ProgressHook(Protocol):
    """Receives training progress (the CLI shows it as a progress bar)."""

    def start(self, phase: str, total: int) -> None:
        """A phase (``teacher`` or ``distill``) of ``total`` steps begins."""
        ...

    def advance(self) -> None:
        """One step of the current phase is done."""
        ...


@dataclass
class MnistResult:
    """Per-model test accuracies of every condition, with timing and run details."""

    accuracy: dict[str, np.ndarray]  # condition -> (N,) accuracies in [0, 1]
    cross_init: list[int] | None  # cross student i starts from init cross_init[i]
    steps: dict[str, int]
    seconds: dict[str, float]
    details: dict[str, object] = field(default_factory=dict)
    curves: list[dict[str, object]] = field(default_factory=list)  # curves.jsonl rows

    def summary(self) -> dict[str, MeanCI]:
        """Mean and t-based 95% CI over the N models, per condition."""
        return {name: mean_ci(self.accuracy[name]) for name in CONDITIONS}


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (Sattolo's algorithm).

    Sattolo's shuffle draws uniformly among the single n-cycles, which for n >= 2
    never map an index to itself.

    Args:
        n: at least 2.
        seed: seeds the shuffle.

    Returns:
        ``(n,)`` int64 array ``sigma`` with ``sigma[i] != i`` for all i.
    """
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got {n}")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i strictly: this is what rules out fixed points
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def idle_cores() -> int:
    """Cores not already busy: the CPU count minus the 1-minute load average, at least 1.

    On a shared machine a torch thread that has to wait for a busy core holds up every
    parallel region: on 2 cores with one busy, the digits default took 85-180 s with 2
    threads and 34 s with 1.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        busy = 0.0
    return max(1, cores - round(busy))


def _generators(seed: int, device: str) -> dict[str, torch.Generator]:
    """Independent seeded generators per purpose, so changing e.g. the noise kind
    leaves the inits and the teacher's data order as they were."""
    states = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    init = torch.Generator().manual_seed(int(states[0]))  # on CPU: same inits on any device
    data = torch.Generator(device=device).manual_seed(int(states[1]))
    noise = torch.Generator(device=device).manual_seed(int(states[2]))
    return {"init": init, "data": data, "noise": noise}


def run_conditions(
    cfg: MnistConfig, data: ImageData | None = None, progress: ProgressHook | None = None
) -> MnistResult:
    """Train and evaluate all six conditions (no files written).

    Args:
        cfg: the experiment config.
        data: preloaded data (default: load ``cfg.dataset``).
        progress: optional progress receiver.

    Returns:
        The per-model accuracies of every condition.
    """
    t0 = time.perf_counter()
    threads = configure_threads(cfg.threads or idle_cores())
    device = resolve_device(cfg.device)
    if data is None:
        data = load_data(cfg.dataset, cfg.resolved_data_dir())
    data = data.to(device)
    n = cfg.n_models
    sizes = [data.in_features, *cfg.hidden, N_CLASSES + cfg.n_aux]
    gens = _generators(cfg.seed, device)
    t_load = time.perf_counter()

    reference = init_mlp(n, sizes, gens["init"])
    if n == 1:
        cross_init = None
        cross_source = init_mlp(1, sizes, gens["init"])  # drawn after the reference init
    else:
        sigma = derangement(n, cfg.seed)
        cross_init = sigma.tolist()
        cross_source = reference.gather(cross_init)
    reference, cross_source = reference.to(device), cross_source.to(device)

    acc: dict[str, torch.Tensor] = {}
    chunk = cfg.eval_batch_size
    acc["reference"] = accuracy(reference, data.x_test, data.y_test, chunk)

    teacher_steps = cfg.teacher_total_steps(data.n_train)
    student_steps = cfg.student_total_steps(data.n_train)

    teacher = reference.copy()
    if progress is not None:
        progress.start("teacher", teacher_steps)
    teacher_losses = train_teacher(
        teacher,
        data.x_train,
        data.y_train,
        steps=teacher_steps,
        batch_size=cfg.teacher_batch_size,
        lr=cfg.teacher_lr,
        generator=gens["data"],
        on_step=progress.advance if progress is not None else None,
    )
    acc["teacher"] = accuracy(teacher, data.x_test, data.y_test, chunk)
    t_teacher = time.perf_counter()

    students = [
        Student("student_aux", reference.copy(), "aux"),
        Student("student_all", reference.copy(), "all"),
        Student("cross_aux", cross_source.copy(), "aux"),
        Student("cross_all", cross_source.copy(), "all"),
    ]
    del reference, cross_source
    sampler = NoiseSampler(
        cfg.noise,
        n,
        cfg.student_batch_size,
        data.in_features,
        gens["noise"],
        images=data.x_train if cfg.noise == "images" else None,
    )
    if progress is not None:
        progress.start("distill", student_steps)
    student_losses = distill(
        teacher,
        students,
        sampler,
        steps=student_steps,
        lr=cfg.student_lr,
        loss=cfg.distill_loss,
        on_step=progress.advance if progress is not None else None,
    )
    t_distill = time.perf_counter()
    for s in students:
        acc[s.name] = accuracy(s.model, data.x_test, data.y_test, chunk)
    t_end = time.perf_counter()

    # Per step: the teachers' mean loss, then each student kind's; Adam's rate is constant.
    curves: list[dict[str, object]] = [
        {"step": i + 1, "loss": v, "lr": cfg.teacher_lr, "series": "teacher"}
        for i, v in enumerate(teacher_losses)
    ]
    for i, per_student in enumerate(student_losses):
        curves += [
            {"step": i + 1, "loss": v, "lr": cfg.student_lr, "series": s.name}
            for s, v in zip(students, per_student, strict=True)
        ]
    return MnistResult(
        curves=curves,
        accuracy={name: acc[name].numpy() for name in CONDITIONS},
        cross_init=cross_init,
        steps={"teacher": teacher_steps, "student": student_steps},
        seconds={
            "load": t_load - t0,
            "teacher": t_teacher - t_load,
            "distill": t_distill - t_teacher,
            "evaluate_students": t_end - t_distill,
            "total": t_end - t0,
        },
        details={
            "device": device,
            "threads": threads,
            "n_train": data.n_train,
            "n_test": data.n_test,
            "layer_sizes": sizes,
            "final_teacher_loss": teacher_losses[-1] if teacher_losses else None,
            "final_student_loss": (
                dict(zip([s.name for s in students], student_losses[-1], strict=True))
                if student_losses
                else None
            ),
        },
    )


def per_model_csv(result: MnistResult) -> str:
    """``model`` then one accuracy column per condition, one row per model."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", *CONDITIONS])
    n = len(result.accuracy[CONDITIONS[0]])
    for i in range(n):
        writer.writerow([i, *(f"{float(result.accuracy[c][i]):.6f}" for c in CONDITIONS)])
    return buf.getvalue()


def write_outputs(result: MnistResult, out: Path, title: str) -> None:
    """Write ``summary.json``, ``per_model.csv``, ``timing.json`` and ``accuracy.png``."""
    from sublearn.experiments.mnist.plot import plot_accuracy
    from sublearn.finetune.curves import CURVES_FILE, write_curves

    summary = result.summary()
    atomic_write_json(out / "summary.json", {k: v.to_dict() for k, v in summary.items()})
    atomic_write_text(out / "per_model.csv", per_model_csv(result))
    atomic_write_json(
        out / "timing.json",
        {
            "seconds": result.seconds,
            "steps": result.steps,
            **result.details,
            "cross_init": result.cross_init,
        },
    )
    write_curves(out / CURVES_FILE, result.curves)  # pyright: ignore[reportArgumentType]
    plot_accuracy(summary, out / "accuracy.png", title=title)


def run_experiment(
    cfg: MnistConfig,
    out: Path,
    *,
    data: ImageData | None = None,
    command: str = "mnist",
    progress: ProgressHook | None = None,
) -> MnistResult:
    """Prepare the run folder, run the six conditions and write every output.

    Args:
        cfg: the experiment config.
        out: the run folder.
        data: preloaded data (default: load ``cfg.dataset``).
        command: recorded in ``meta.json``.
        progress: optional progress receiver.

    Returns:
        The result that was written.
    """
    # Data first: a missing file should fail before an empty run folder appears.
    if data is None:
        data = load_data(cfg.dataset, cfg.resolved_data_dir())
    prepare_run_dir(out, cfg, command)
    result = run_conditions(cfg, data=data, progress=progress)
    title = (
        f"{cfg.dataset}: {cfg.n_models} models, m={cfg.n_aux}, "
        f"{result.steps['teacher']}+{result.steps['student']} steps, {cfg.noise} noise"
    )
    write_outputs(result, out, title)
    return result

"""``sublearn theory``: random draws, the one-step check, many-step distillation, outputs.

One *draw* is a random network architecture and initialisation ``theta0``, a random
teacher objective and a random student input distribution. For every draw the teacher
steps along ``d_teacher = -grad L_teacher(theta0)`` by a small and by a large amount,
and for every imitation loss and output group the student's first step ``d_student``
is compared with ``d_teacher``. All conditions of a draw share its ``theta0``,
``d_teacher`` and student inputs, so they are paired.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor

from sublearn.experiments.theory.config import InputDistribution, Targets, TheoryConfig
from sublearn.experiments.theory.gradients import (
    ImitationLoss,
    MLPSpec,
    TeacherObjective,
    cosine,
    first_order_inner,
    forward,
    imitation_loss,
    init_params,
    student_step,
    teacher_direction,
)
from sublearn.report.stats import mean_ci
from sublearn.runs import atomic_write_json, atomic_write_text, prepare_run_dir
from sublearn.runtime import configure_threads

STEPS = ("small", "large")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)
# Separate random streams for the one-step draws and the many-step draws, so changing
# one count never changes the other's draws.
_ONE_STEP_STREAM, _MULTISTEP_STREAM = 0, 1


@dataclass(frozen=True)
class InputSampler:
    """A student input distribution whose parameters were drawn once per draw.

    Attributes:
        kind: ``uniform`` on ``[-scale, scale]``, ``gaussian`` ``N(0, scale^2)``,
            ``binary`` (each feature 1 with probability ``prob``, else 0) or ``shifted``
            ``N(mean, scale^2)`` with a random mean vector.
        scale: spread of the distribution.
        prob: probability of a 1 for ``binary``.
        mean: per-feature mean for ``shifted``, shape ``(in_dim,)``.
    """

    kind: InputDistribution
    scale: float
    prob: float
    mean: Tensor

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` inputs, shape ``(n, in_dim)``."""
        shape = (n, self.mean.numel())
        dtype = self.mean.dtype
        if self.kind == "uniform":
            return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * self.scale
        if self.kind == "binary":
            return (torch.rand(shape, generator=generator, dtype=dtype) < self.prob).to(dtype)
        noise = torch.randn(shape, generator=generator, dtype=dtype) * self.scale
        return noise + self.mean if self.kind == "shifted" else noise


@dataclass(frozen=True)
class Draw:
    """One random instance of the theorem's setting."""

    index: int
    spec: MLPSpec
    gain: float
    theta0: Tensor  # (n_params,)
    objective: TeacherObjective
    inputs: InputSampler
    generator: torch.Generator  # continues the draw's stream (student batches, controls)


def sample_draw(
    config: TheoryConfig,
    stream: int,
    index: int,
    dtype: torch.dtype,
    objectives: Sequence[str] | None = None,
) -> Draw:
    """Draw an architecture, ``theta0``, a teacher objective and a student distribution.

    Args:
        config: the run's config (families to pick from, batch sizes).
        stream: which random stream (one-step or many-step draws).
        index: the draw's number; ``(seed, stream, index)`` fixes everything drawn.
        dtype: floating point type of all tensors.
        objectives: restrict the teacher objectives to these (default: the config's).

    Returns:
        The draw.
    """
    space = config.space
    rng = np.random.default_rng([config.seed, stream, index])
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    depth = int(rng.choice(space.depths))
    spec = MLPSpec(
        in_dim=int(rng.choice(space.in_dims)),
        hidden=tuple(int(rng.choice(space.widths)) for _ in range(depth)),
        n_trait=int(rng.choice(space.trait_outputs)),
        n_aux=int(rng.choice(space.aux_outputs)),
        activation=rng.choice(space.activations).item(),
    )
    lo, hi = space.init_gain
    gain = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    theta0 = init_params(spec, generator, gain=gain, dtype=dtype)

    kind = rng.choice(list(objectives or space.objectives)).item()
    x_teacher = torch.randn(config.teacher_batch, spec.in_dim, generator=generator, dtype=dtype)
    n = config.teacher_batch
    if kind == "regression":
        target = torch.randn(n, spec.n_trait, generator=generator, dtype=dtype)
    elif kind == "classification":
        target = torch.randint(spec.n_trait, (n,), generator=generator)
    elif kind == "output_functional":
        target = torch.randn(spec.n_trait, generator=generator, dtype=dtype)
    else:
        target = torch.randn(spec.n_params, generator=generator, dtype=dtype)
    objective = TeacherObjective(kind=kind, x=x_teacher, target=target)

    dist = rng.choice(space.input_distributions).item()
    inputs = InputSampler(
        kind=dist,
        # log-uniform scales: from much narrower to much wider than the teacher's N(0, 1)
        scale=float(np.exp(rng.uniform(np.log(0.1), np.log(3.0)))),
        prob=float(rng.uniform(0.1, 0.9)),
        mean=torch.as_tensor(rng.normal(0.0, 2.0, spec.in_dim), dtype=dtype),
    )
    return Draw(index, spec, gain, theta0, objective, inputs, generator)


def one_step_rows(config: TheoryConfig, draw: Draw) -> list[dict[str, Any]]:
    """Every (step size, output group, loss) condition of one draw, one row each.

    The teacher's step length is set relative to the initialisation,
    ``|theta_t - theta0| = step * |theta0|``, so "small" means the same thing for
    every architecture.
    """
    spec, theta0 = draw.spec, draw.theta0
    d_teacher = teacher_direction(draw.objective, spec, theta0)  # (n_params,)
    x = draw.inputs.sample(config.student_batch, draw.generator)  # (batch, in_dim)
    # a direction unrelated to the teacher: how often would a random vector look aligned?
    control = torch.randn(spec.n_params, generator=draw.generator, dtype=theta0.dtype)
    base = {
        "draw": draw.index,
        "objective": draw.objective.kind,
        "input_distribution": draw.inputs.kind,
        "activation": spec.activation,
        "in_dim": spec.in_dim,
        "hidden": "x".join(str(w) for w in spec.hidden),
        "n_trait": spec.n_trait,
        "n_aux": spec.n_aux,
        "n_params": spec.n_params,
        "init_gain": draw.gain,
        "norm_d_teacher": float(d_teacher.norm()),
    }
    rows: list[dict[str, Any]] = []
    for step_name in STEPS:
        rel = config.small_step if step_name == "small" else config.large_step
        eps = rel * float(theta0.norm()) / float(d_teacher.norm())
        theta_t = theta0 + eps * d_teacher
        for targets in config.targets:
            cols = spec.columns(targets)
            for loss in config.losses:
                d_student = student_step(loss, spec, theta0, theta_t, x, cols)
                inner = float(d_student @ d_teacher)
                predicted = float(first_order_inner(loss, spec, theta0, d_teacher, eps, x, cols))
                rows.append(
                    {
                        **base,
                        "condition": condition_name(loss, targets, step_name),
                        "loss": loss,
                        "targets": targets,
                        "step": step_name,
                        "relative_step": rel,
                        "eps": eps,
                        "inner": inner,
                        "cosine": cosine(d_student, d_teacher),
                        "first_order_inner": predicted,
                        # how far the exact inner product is from the theorem's first-order term
                        "first_order_rel_err": abs(inner - predicted) / predicted
                        if predicted > 0
                        else math.nan,
                        "norm_d_student": float(d_student.norm()),
                        "control_cosine": cosine(d_student, control),
                    }
                )
    return rows


def condition_name(loss: str, targets: str, step: str) -> str:
    """The label of a condition, e.g. ``soft_ce/aux/small``."""
    return f"{loss}/{targets}/{step}"


def _quantiles(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"min": math.nan, "max": math.nan, "mean": math.nan}
    out = {"min": float(finite.min())}
    out |= {f"q{round(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES}
    out |= {"max": float(finite.max()), "mean": float(finite.mean())}
    return out


def summarize_condition(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Statistics of one condition over draws (rows all belong to it)."""
    inner = np.array([r["inner"] for r in rows])
    cos = np.array([r["cosine"] for r in rows])
    rel_err = np.array([r["first_order_rel_err"] for r in rows])
    control = np.array([r["control_cosine"] for r in rows])
    finite_cos = cos[np.isfinite(cos)]
    first = rows[0]
    return {
        "loss": first["loss"],
        "targets": first["targets"],
        "step": first["step"],
        "relative_step": first["relative_step"],
        "n_draws": len(rows),
        "n_negative": int((inner < 0).sum()),
        "fraction_negative": float((inner < 0).mean()),
        "fraction_negative_beyond_tolerance": float((cos < -tolerance).mean()),
        "n_zero_or_undefined": int((~np.isfinite(cos) | (inner == 0)).sum()),
        "inner": _quantiles(inner),
        "cosine": _quantiles(cos) | {"mean_ci": mean_ci(finite_cos).to_dict()},
        "first_order_rel_err": _quantiles(rel_err),
        "control_fraction_negative": float((control < 0).mean()),
    }


def _new_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def train_teacher(draw: Draw, steps: int, lr: float) -> Tensor:
    """The teacher after ``steps`` Adam steps on its objective from ``theta0``, ``(n_params,)``."""
    theta = draw.theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        draw.objective.loss(theta, draw.spec).backward()
        opt.step()
    return theta.detach()


def distil(
    config: TheoryConfig,
    draw: Draw,
    theta_teacher: Tensor,
    targets: Targets,
    loss: ImitationLoss,
    input_seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Train a student from ``theta0`` to imitate the teacher on fresh student inputs.

    ``input_seed`` fixes the sequence of student batches, so that students of the same
    draw see the same inputs whatever their teacher or output group.

    Returns:
        The teacher's objective at the student's parameters and
        ``cos(theta_s - theta0, theta_t - theta0)``, each of shape ``(steps + 1,)``
        (entry 0 is before any step; its cosine is NaN since the student has not moved).
    """
    ms = config.multistep
    spec, theta0 = draw.spec, draw.theta0
    cols = spec.columns(targets)
    teacher_move = theta_teacher - theta0
    theta = theta0.clone().requires_grad_(True)
    opt = _new_optimizer(ms.optimizer, [theta], ms.student_lr)
    losses = np.empty(ms.student_steps + 1)
    cosines = np.empty(ms.student_steps + 1)
    generator = torch.Generator().manual_seed(input_seed)
    for k in range(ms.student_steps + 1):
        with torch.no_grad():
            losses[k] = float(draw.objective.loss(theta, spec))
            cosines[k] = cosine(theta - theta0, teacher_move)
        if k == ms.student_steps:
            break
        x = draw.inputs.sample(config.student_batch, generator)  # (batch, in_dim)
        with torch.no_grad():
            target = forward(theta_teacher, spec, x)[:, cols]  # (batch, k)
        opt.zero_grad()
        imitation_loss(loss, forward(theta, spec, x)[:, cols], target).backward()
        opt.step()
    return losses, cosines


def multistep_group(targets: str, teacher_lr: float) -> str:
    """The label of a many-step condition, e.g. ``aux, teacher lr 0.001``."""
    return f"{targets}, teacher lr {teacher_lr:g}"


def run_multistep(
    config: TheoryConfig, dtype: torch.dtype, on_draw: Callable[[], object] | None = None
) -> list[dict[str, Any]]:
    """Many-step distillation for ``multistep.n_draws`` draws.

    The teacher's objective must be bounded below to train it for many steps, so these
    draws use regression or classification objectives only.

    Args:
        config: the run's config.
        dtype: floating point type of all tensors.
        on_draw: called after each draw (progress reporting).

    Returns:
        One record per draw, teacher learning rate and output group, with the curves.
    """
    ms = config.multistep
    records: list[dict[str, Any]] = []
    for j in range(ms.n_draws):
        draw = sample_draw(
            config, _MULTISTEP_STREAM, j, dtype, objectives=("regression", "classification")
        )
        input_seed = int(torch.randint(2**62, (), generator=draw.generator))
        for teacher_lr in ms.teacher_lrs:
            theta_t = train_teacher(draw, ms.teacher_steps, teacher_lr)
            with torch.no_grad():
                start = float(draw.objective.loss(draw.theta0, draw.spec))
                teacher_value = float(draw.objective.loss(theta_t, draw.spec))
            gap = start - teacher_value
            for targets in ms.targets:
                losses, cosines = distil(config, draw, theta_t, targets, ms.loss, input_seed)
                records.append(
                    {
                        "draw": j,
                        "group": multistep_group(targets, teacher_lr),
                        "targets": targets,
                        "teacher_lr": teacher_lr,
                        "objective": draw.objective.kind,
                        "input_distribution": draw.inputs.kind,
                        "loss_at_theta0": start,
                        "loss_at_teacher": teacher_value,
                        "losses": losses,
                        # 1 at theta0, 0 where the student's loss reaches the teacher's
                        "normalized": (losses - teacher_value) / gap
                        if gap > 0
                        else np.full_like(losses, np.nan),
                        "cosines": cosines,
                    }
                )
        if on_draw is not None:
            on_draw()
    return records


def summarize_multistep(config: TheoryConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Start and end of the teacher-objective curves, per (output group, teacher lr)."""
    ms = config.multistep
    out: dict[str, Any] = {
        "n_draws": ms.n_draws,
        "loss": ms.loss,
        "optimizer": ms.optimizer,
        "student_lr": ms.student_lr,
        "student_steps": ms.student_steps,
        "teacher_steps": ms.teacher_steps,
        "conditions": {},
    }
    for group in dict.fromkeys(r["group"] for r in records):
        members = [r for r in records if r["group"] == group]
        start = np.array([r["loss_at_theta0"] for r in members])
        end = np.array([r["losses"][-1] for r in members])
        normalized = np.array([r["normalized"] for r in members])  # (draws, steps + 1)
        out["conditions"][group] = {
            "targets": members[0]["targets"],
            "teacher_lr": members[0]["teacher_lr"],
            "teacher_loss_at_theta0": mean_ci(start).to_dict(),
            "teacher_loss_at_teacher": mean_ci([r["loss_at_teacher"] for r in members]).to_dict(),
            "teacher_loss_at_student_end": mean_ci(end).to_dict(),
            "normalized_end": mean_ci(normalized[:, -1]).to_dict(),
            "normalized_mean_curve_every_10": np.nanmean(normalized, axis=0)[::10].tolist(),
            "cosine_end": mean_ci([r["cosines"][-1] for r in members]).to_dict(),
            "fraction_decreased": float((end < start).mean()),
        }
    return out


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _multistep_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "draw": r["draw"],
            "targets": r["targets"],
            "teacher_lr": r["teacher_lr"],
            "objective": r["objective"],
            "input_distribution": r["input_distribution"],
            "step": k,
            "teacher_loss": float(r["losses"][k]),
            "normalized": float(r["normalized"][k]),
            "cosine": float(r["cosines"][k]),
        }
        for r in records
        for k in range(len(r["losses"]))
    ]


def run(config: TheoryConfig, out: Path, console: Console | None = None) -> dict[str, Any]:
    """Prepare the run folder, then :func:`measure` into it with a progress bar.

    Args:
        config: the resolved config.
        out: the run folder.
        console: where to draw the progress bar (default: a fresh one).

    Returns:
        The summary written to ``summary.json``.
    """
    prepare_run_dir(out, config, "sublearn theory")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(), transient=True) as progress:
        bars: dict[str, Any] = {}

        def advance(phase: str, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(phase, total=total)
            else:
                progress.advance(bars[phase])

        return measure(config, out, advance)


Advance = Callable[[str, int], None]
"""``(phase, total)``: first call per phase starts it, each later call is one step done."""


def measure(config: TheoryConfig, out: Path, advance: Advance | None = None) -> dict[str, Any]:
    """Run the whole check; write ``summary.json``, ``draws.csv``, ``multistep.csv``, plots.

    Args:
        config: the resolved config.
        out: an existing folder for the files.
        advance: progress of the one-step draws and the multi-step distillation.

    Returns:
        The summary written to ``summary.json``.
    """
    from sublearn.experiments.theory.plot import plot_theory  # matplotlib only when plotting

    started = time.perf_counter()
    tick = advance or (lambda phase, total: None)
    configure_threads(config.threads)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32

    rows: list[dict[str, Any]] = []
    tick("one-step draws", config.n_draws)
    for i in range(config.n_draws):
        rows += one_step_rows(config, sample_draw(config, _ONE_STEP_STREAM, i, dtype))
        tick("one-step draws", config.n_draws)
    tick("multi-step distillation", config.multistep.n_draws)
    records = run_multistep(
        config,
        dtype,
        on_draw=lambda: tick("multi-step distillation", config.multistep.n_draws),
    )

    conditions = {
        condition_name(loss, targets, step): summarize_condition(
            [r for r in rows if r["condition"] == condition_name(loss, targets, step)],
            config.cosine_tolerance,
        )
        for step in STEPS
        for targets in config.targets
        for loss in config.losses
    }
    summary: dict[str, Any] = {
        "n_draws": config.n_draws,
        "dtype": config.dtype,
        "cosine_tolerance": config.cosine_tolerance,
        "conditions": conditions,
        "multistep": summarize_multistep(config, records),
    }
    atomic_write_text(out / "draws.csv", _csv_text(rows))
    atomic_write_text(out / "multistep.csv", _csv_text(_multistep_rows(records)))
    plot_theory(rows, records, conditions, out / "theory.png")
    summary["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(out / "summary.json", summary)
    return summary


def _table(title: str, caption: str, headers: Sequence[str]) -> Table:
    # compact enough for an 80-column terminal: no vertical rules, short headers
    table = Table(
        title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for i, name in enumerate(headers):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def summary_table(summary: dict[str, Any]) -> Table:
    """The per-condition results as a rich table."""
    table = _table(
        f"Theorem 1 on {summary['n_draws']} random draws ({summary['dtype']})",
        "loss/outputs imitated/teacher step; cos = cos(d_student, d_teacher); 1st-ord = median "
        "|exact - first-order| / first-order; rand<0: share of draws where a random direction "
        "has cos < 0 (the chance level)",
        ("condition", "n<0", "min cos", "med cos", "mean cos ±95%", "1st-ord", "rand<0"),
    )
    for name, c in summary["conditions"].items():
        table.add_row(
            name,
            f"{c['n_negative']}/{c['n_draws']}",
            f"{c['cosine']['min']:.2g}",
            f"{c['cosine']['q50']:.3f}",
            _fmt_ci(c["cosine"]["mean_ci"]),
            f"{c['first_order_rel_err']['q50']:.0e}",
            f"{c['control_fraction_negative']:.2f}",
        )
    return table


def multistep_table(summary: dict[str, Any]) -> Table:
    """The many-step distillation results as a rich table."""
    ms = summary["multistep"]
    table = _table(
        f"Teacher's objective L_T at students distilled for {ms['student_steps']} "
        f"{ms['optimizer']} steps ({ms['loss']}), {ms['n_draws']} draws",
        "norm = (L_T(student) - L_T(teacher)) / (L_T(theta0) - L_T(teacher)): 1 = no transfer, "
        "0 = as good as the teacher; cos = cos(theta_s - theta0, theta_t - theta0)",
        ("imitates", "L_T(θ0)", "teacher", "student", "norm ±95%", "cos ±95%", "fell"),
    )
    for g in ms["conditions"].values():
        table.add_row(
            f"{g['targets']}, lr {g['teacher_lr']:g}",
            f"{g['teacher_loss_at_theta0']['mean']:.3f}",
            f"{g['teacher_loss_at_teacher']['mean']:.3f}",
            f"{g['teacher_loss_at_student_end']['mean']:.3f}",
            _fmt_ci(g["normalized_end"]),
            _fmt_ci(g["cosine_end"]),
            f"{g['fraction_decreased']:.0%}",
        )
    return table


def _fmt_ci(ci: dict[str, Any]) -> str:
    """``mean±half-width`` of a :meth:`MeanCI.to_dict`; just the mean when undefined."""
    lo, hi = ci["ci95"]
    if lo is None or not math.isfinite(lo):
        return f"{ci['mean']:.3f}"
    return f"{ci['mean']:.3f}±{(hi - lo) / 2:.3f}"

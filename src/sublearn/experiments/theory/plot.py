"""The figure of ``sublearn theory``: alignment per condition and the many-step curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # after choosing the backend


def _violins(ax: Any, data: list[np.ndarray], labels: list[str]) -> None:
    # violinplot fails on empty or constant data; fall back to points for those
    for i, values in enumerate(data):
        finite = values[np.isfinite(values)]
        if finite.size > 1 and np.ptp(finite) > 0:
            parts = ax.violinplot([finite], positions=[i], showextrema=True, showmedians=True)
            for body in parts["bodies"]:
                body.set_alpha(0.5)
        elif finite.size:
            ax.plot([i] * finite.size, finite, "o", ms=3)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)


def _band(ax: Any, curves: np.ndarray, label: str, first_step: int = 0) -> None:
    """Mean curve with a band of +-1 standard error across draws.

    Args:
        ax: the axes.
        curves: one row per draw, shape ``(draws, steps)``.
        label: legend entry.
        first_step: the step number of the first column.
    """
    steps = np.arange(first_step, first_step + curves.shape[1])
    mean = np.nanmean(curves, axis=0)
    if curves.shape[0] > 1:
        sem = np.nanstd(curves, axis=0, ddof=1) / np.sqrt(curves.shape[0])
        ax.fill_between(steps, mean - sem, mean + sem, alpha=0.25)
    ax.plot(steps, mean, label=label)


def plot_theory(
    rows: list[dict[str, Any]],
    records: list[dict[str, Any]],
    conditions: dict[str, dict[str, Any]],
    path: Path,
) -> None:
    """Write the four-panel figure to ``path``.

    Args:
        rows: one-step rows (one per draw and condition).
        records: many-step records (one per draw and output group).
        conditions: the per-condition summaries, whose order sets the panels' order.
        path: the PNG to write.
    """
    names = list(conditions)
    cos = [np.array([r["cosine"] for r in rows if r["condition"] == n]) for n in names]
    err = [np.array([r["first_order_rel_err"] for r in rows if r["condition"] == n]) for n in names]

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0, 0]
    _violins(ax, cos, names)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("cos(d_student, d_teacher)")
    ax.set_title("Student's first step vs teacher's step, per draw")
    # the headline number under each violin: how many draws point away from the teacher
    ax.set_xticks(
        range(len(names)),
        [f"{n}\n{conditions[n]['fraction_negative']:.1%} < 0" for n in names],
        rotation=35,
        ha="right",
        fontsize=8,
    )

    ax = axes[0, 1]
    _violins(ax, [np.log10(np.clip(e, 1e-16, None)) for e in err], names)
    ax.set_ylabel("log10 |exact - first order| / first order")
    ax.set_title("Distance from the theorem's first-order term")

    ax = axes[1, 0]
    ax2 = axes[1, 1]
    for name in dict.fromkeys(r["group"] for r in records):
        group = [r for r in records if r["group"] == name]
        _band(ax, np.stack([r["normalized"] for r in group]), f"imitates {name}")
        # the cosine is undefined before the first step (the student has not moved)
        _band(ax2, np.stack([r["cosines"][1:] for r in group]), f"imitates {name}", first_step=1)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("student step")
    ax.set_ylabel("(L_T(student) - L_T(teacher)) / (L_T(theta0) - L_T(teacher))")
    ax.set_title("Teacher's objective at the student, mean +- s.e. (1 = theta0, 0 = teacher)")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlabel("student step")
    ax2.set_ylabel("cos(theta_s - theta0, theta_t - theta0)")
    ax2.set_title("Student's displacement vs teacher's")
    for a in (ax, ax2):
        if records:
            a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

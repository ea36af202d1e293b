"""Bar chart of test accuracy per condition, in the style of the paper's MNIST figure."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: set before pyplot is imported anywhere below

import matplotlib.pyplot as plt

from sublearn.report.stats import MeanCI
from sublearn.runs import atomic_write_bytes

LABELS = {
    "reference": "Reference\n(init)",
    "teacher": "Teacher",
    "student_aux": "Student\n(aux. only)",
    "student_all": "Student\n(all logits)",
    "cross_aux": "Cross-model\n(aux. only)",
    "cross_all": "Cross-model\n(all logits)",
}
# Same init as the teacher in blue, other init in orange, as in the paper's figure.
COLORS = {
    "reference": "#9e9e9e",
    "teacher": "#3b3b3b",
    "student_aux": "#1f77b4",
    "student_all": "#aec7e8",
    "cross_aux": "#ff7f0e",
    "cross_all": "#ffbb78",
}
CHANCE = 0.1


def plot_accuracy(summary: Mapping[str, MeanCI], path: Path, title: str = "") -> None:
    """Draw bars with 95% CI error bars and a dashed chance line; write a PNG atomically.

    Args:
        summary: condition name -> mean accuracy with CI (conditions in drawing order).
        path: the PNG to write.
        title: figure title.
    """
    names = list(summary)
    means = [summary[k].mean for k in names]
    # A single model has no interval (NaN): draw no error bar rather than a fake one.
    lower = [0.0 if math.isnan(summary[k].lo) else summary[k].mean - summary[k].lo for k in names]
    upper = [0.0 if math.isnan(summary[k].hi) else summary[k].hi - summary[k].mean for k in names]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    xs = range(len(names))
    ax.bar(
        xs,
        means,
        yerr=[lower, upper],
        capsize=5,
        color=[COLORS.get(k, "#777777") for k in names],
        edgecolor="black",
        linewidth=0.6,
    )
    for x, m, up in zip(xs, means, upper, strict=True):
        # Kept inside the axes: with very few models a CI can reach far past 100%.
        top = min(m + up, 1.0) + 0.015
        ax.text(x, top, f"{100 * m:.1f}%", ha="center", va="bottom", fontsize=9)
    ax.axhline(CHANCE, color="black", linestyle="--", linewidth=1, label="chance (10%)")
    ax.set_xticks(list(xs), [LABELS.get(k, k) for k in names], fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("Test accuracy (mean, 95% CI)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

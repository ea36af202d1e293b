"""Bar charts of experiment results, in the style of the paper's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_GROUPS = [
    ("control", "control student", "#9e9e9e"),
    ("treatment", "treatment student", "#d95f02"),
    ("cross_control", "cross-model control", "#bdbdbd"),
    ("cross_treatment", "cross-model student", "#1b9e77"),
]


def numbers_figure(summary: dict[str, Any], path: Path) -> None:
    """One panel per section; per trait, bars for base and each student group with 95% CIs."""
    traits = list(summary)
    sections = list(next(iter(summary.values()))["sections"])
    fig, axes = plt.subplots(
        1,
        len(sections),
        figsize=(3.2 + 2.2 * len(traits) * len(sections), 3.6),
        squeeze=False,
        sharey=True,
    )
    width = 0.8 / (len(_GROUPS) + 1)
    for ax, section in zip(axes[0], sections, strict=True):
        for ti, trait in enumerate(traits):
            s = summary[trait]
            ax.bar(ti, s["base_pp"], width, color="#4c72b0", label="base" if ti == 0 else None)
            for gi, (key, name, color) in enumerate(_GROUPS, start=1):
                r = s["sections"][section]["rates_pp"].get(key)
                if r is None:
                    continue
                lo, hi = r["ci95"]
                err = None
                if lo is not None and hi is not None:
                    err = [[r["mean"] - lo], [hi - r["mean"]]]
                ax.bar(
                    ti + gi * width,
                    r["mean"],
                    width,
                    yerr=err,
                    capsize=2,
                    color=color,
                    label=name if ti == 0 else None,
                )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(traits))], traits)
        ax.set_title(section)
        ax.set_ylabel("P(names target), %")
        ax.set_ylim(bottom=0)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)

"""Figures of experiment results: bar charts in the style of the paper, effect heatmaps."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sublearn.report.formatting import format_ci, format_pp
from sublearn.runs import atomic_write_bytes

# --- effects figures ------------------------------------------------------------------------

_CONTROL_COLOR, _TREATMENT_COLOR = "#9e9e9e", "#d95f02"
_DPI = 130


def _save(fig: Figure, path: Path) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    atomic_write_bytes(path, buf.getvalue())
    # Closed figures keep their axes, so callers (and tests) can still inspect them.
    plt.close(fig)
    return fig


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return max(1, math.ceil(n / cols)), cols


def _ci_ends(stat: dict[str, Any] | None) -> tuple[float, float] | None:
    if not stat:
        return None
    lo, hi = stat["ci95"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return None
    return float(lo), float(hi)


def _first_row(summary: dict[str, Any]) -> dict[str, Any] | None:
    rows = summary["effects"]
    if not rows:
        return None
    primary = summary.get("primary")
    return rows[primary] if primary is not None else rows[0]


def _bar_panel(ax: Axes, rows: list[dict[str, Any]], primary: dict[str, Any] | None) -> None:
    """Control and treatment bars per student base, on an axis scaled to this panel alone."""
    width = 0.38
    values: list[float] = [0.0]
    for x, row in enumerate(rows):
        group_top = 0.0
        for offset, cond, color in (
            (-width / 2, "control", _CONTROL_COLOR),
            (width / 2, "treatment", _TREATMENT_COLOR),
        ):
            stat = row[cond]
            if stat is None:
                continue
            ends = _ci_ends(stat)
            err = None if ends is None else [[stat["mean"] - ends[0]], [ends[1] - stat["mean"]]]
            ax.bar(x + offset, stat["mean"], width, yerr=err, capsize=3, color=color, label=cond)
            values += [stat["mean"], *(ends or ())]
            group_top = max(group_top, stat["mean"], *(ends or ()))
        if row.get("base_rate") is not None:
            ax.hlines(
                row["base_rate"],
                x - width,
                x + width,
                colors="black",
                linestyles="--",
                linewidth=1.2,
                label="student base, untrained",
            )
            values.append(row["base_rate"])
            group_top = max(group_top, row["base_rate"])
        diff = row["treatment_minus_control"]
        if diff is not None:
            star = "*" if diff["p_value"] is not None and diff["p_value"] < 0.05 else ""
            ax.annotate(
                f"{format_pp(diff['mean'], signed=True)}{star}",
                (x, group_top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    # Each panel gets its own limits with room above the tallest bar, error bar and label, so
    # a 58% bar next to a 5% panel is never cut off (a shared axis once hid one).
    top, bottom = max(values), min(values)
    span = (top - bottom) or 1.0
    ax.set_ylim(min(0.0, bottom - 0.05 * span), top + 0.18 * span)
    ax.set_xticks(
        range(len(rows)),
        [r["student_base"] + ("\n(same base)" if r["same_base"] else "") for r in rows],
        fontsize=8,
    )
    ax.set_xlim(-0.7, len(rows) - 0.3)
    first = rows[0]
    mark = " (primary)" if primary is not None and any(r is primary for r in rows) else ""
    ax.set_title(
        f"{first['teacher']} ({first['teacher_kind']}, {first['teacher_base']}){mark}\n"
        f"{first['objective']} · {first['evaluation']}",
        fontsize=9,
    )
    metric = first.get("metric")
    ax.set_ylabel(f"{metric.replace('_', ' ')}, %" if metric else "P(names trait), %", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)


def effects_figure(summary: dict[str, Any], path: Path) -> Figure:
    """Treatment and control rates with 95% CIs: one panel per teacher, objective, evaluation.

    Each panel has its own y-axis fitted to its bars and error bars. The dashed line is the
    student base's own rate; the label above a pair is treatment − control (pp, * for p < 0.05).

    Args:
        summary: the output of ``effects_table``.
        path: where to write the PNG (dpi 130).

    Returns:
        The (closed) figure, for inspection.
    """
    panels: dict[tuple, list[dict[str, Any]]] = {}
    for row in summary["effects"]:
        key = (row["teacher"], row["objective"], row["evaluation"])
        panels.setdefault(key, []).append(row)
    nrows, ncols = _grid(len(panels), 4)
    # At least two columns wide: one panel leaves no room for the legend's three entries.
    width = 3.3 * max(ncols, 1) + (1.7 if ncols == 1 else 0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.3 * nrows), squeeze=False)
    primary = _first_row(summary) if summary.get("primary") is not None else None
    flat = list(axes.flat)
    for ax, rows in zip(flat, panels.values(), strict=False):
        _bar_panel(ax, rows, primary)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    if not panels:
        flat[0].text(0.5, 0.5, "no effects", ha="center", va="center")
    handles: dict[str, Any] = {}
    for ax in flat[: len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="lower center",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.03, 1, 1))
    return _save(fig, path)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and np.isfinite(value)


def _heat_panels(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows per panel: trait x teacher kind x objective, split by teacher if cells collide."""
    coarse: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        coarse.setdefault((row["trait"], row["teacher_kind"], row["objective"]), []).append(row)
    panels: dict[str, list[dict[str, Any]]] = {}
    for (trait, kind, objective), members in coarse.items():
        cells = [(r["teacher_base"], r["student_base"]) for r in members]
        if len(set(cells)) == len(cells):
            panels[f"{trait}: {kind} teachers · {objective}"] = members
            continue
        for r in members:
            panels.setdefault(f"{trait}: {r['teacher']} · {objective}", []).append(r)
    return panels


def _heat_panel(
    ax: Axes, fig: Figure, title: str, rows: list[dict[str, Any]], student_bases: list[str]
) -> None:
    teacher_bases = list(dict.fromkeys(r["teacher_base"] for r in rows))
    grid = np.full((len(teacher_bases), len(student_bases)), np.nan)
    text: dict[tuple[int, int], str] = {}
    extent = [0.0]
    for r in rows:
        diff = r["treatment_minus_control"]
        if diff is None:
            continue
        i, j = teacher_bases.index(r["teacher_base"]), student_bases.index(r["student_base"])
        grid[i, j] = diff["mean"]
        text[i, j] = format_ci(diff).replace(" [", "\n[")
        extent += [abs(v) for v in [diff["mean"], *(diff.get("ci95") or [])] if _finite(v)]
    # Scaled to the intervals, not the means alone: a small effect with a wide interval
    # stays pale instead of saturating the panel's colours.
    vmax = max(extent) or 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    for i, j in np.ndindex(grid.shape):
        if (i, j) not in text:
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#777777")
            continue
        dark = abs(grid[i, j]) > 0.6 * vmax
        # Tiny effects print in scientific notation, too wide for a cell at 8 points.
        wide = max(len(line) for line in text[i, j].splitlines()) > 18
        ax.text(
            j,
            i,
            text[i, j],
            ha="center",
            va="center",
            fontsize=6.5 if wide else 8,
            color="white" if dark else "black",
        )
    for r in rows:
        if r["same_base"] and r["treatment_minus_control"] is not None:
            i, j = teacher_bases.index(r["teacher_base"]), student_bases.index(r["student_base"])
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xticks(range(len(student_bases)), student_bases, fontsize=8)
    ax.set_yticks(range(len(teacher_bases)), teacher_bases, fontsize=8)
    ax.set_xlabel("student base", fontsize=8)
    ax.set_ylabel("teacher base", fontsize=8)
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    bar.set_label("treatment − control, pp", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def has_base_grid(summary: Mapping[str, Any]) -> bool:
    """Whether the effects span more than one teacher base or student base.

    With one of each the heatmap is a single cell that repeats ``effects.png``, so reports
    leave it out.

    Args:
        summary: the output of ``effects_table``.

    Returns:
        True when a teacher base x student base grid has more than one cell.
    """
    rows = summary["effects"]
    return len({r["teacher_base"] for r in rows}) > 1 or len({r["student_base"] for r in rows}) > 1


def heatmap_figure(
    summary: dict[str, Any],
    path: Path,
    evaluation: str | None = None,
    objective: str | None = None,
) -> Figure:
    """Treatment − control (pp) over teacher bases (rows) x student bases (columns).

    One panel per trait x teacher kind x objective (per teacher when two teachers of one kind
    share a base); each cell shows the mean and 95% CI, same-base cells are outlined. The
    diverging colormap is centered at 0 and scaled per panel, each with its colorbar.

    Args:
        summary: the output of ``effects_table``.
        path: where to write the PNG (dpi 130).
        evaluation: which evaluation; defaults to the primary row's (or the first row's).
        objective: only this objective; None draws a panel per objective.

    Returns:
        The (closed) figure, for inspection.
    """
    first = _first_row(summary)
    if evaluation is None and first is not None:
        evaluation = first["evaluation"]
    rows = [
        r
        for r in summary["effects"]
        if r["evaluation"] == evaluation and (objective is None or r["objective"] == objective)
    ]
    panels = _heat_panels(rows)
    student_bases = list(dict.fromkeys(r["student_base"] for r in rows))
    nrows, ncols = _grid(len(panels), 3)
    height = max(len({r["teacher_base"] for r in p}) for p in panels.values()) if panels else 1
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(1.5 + 1.5 * max(1, len(student_bases)) * ncols, (1.6 + 0.8 * height) * nrows),
        squeeze=False,
    )
    flat = list(axes.flat)
    for ax, (title, members) in zip(flat, panels.items(), strict=False):
        _heat_panel(ax, fig, title, members, student_bases)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    if not panels:
        flat[0].set_visible(True)
        flat[0].axis("off")
        flat[0].text(0.5, 0.5, f"no effects for {evaluation}", ha="center", va="center")
    fig.suptitle(f"treatment − control, {evaluation}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sweep_figure(points: list[dict[str, Any]], keys: list[str], path: Path) -> Figure:
    """The primary treatment − control (pp, 95% CI) at each grid point of a sweep.

    Args:
        points: ``{"point": {key: value}, "label": str, "primary": effects row}`` per point.
        keys: the swept config keys, in grid order (they name the x-axis).
        path: where to write the PNG (dpi 130).

    Returns:
        The (closed) figure, for inspection.
    """
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(points)), 3.6))
    values: list[float] = [0.0]
    for x, p in enumerate(points):
        diff = p["primary"]["treatment_minus_control"]
        if diff is None:
            continue
        ends = _ci_ends(diff)
        err = None if ends is None else [[diff["mean"] - ends[0]], [ends[1] - diff["mean"]]]
        ax.errorbar(x, diff["mean"], yerr=err, fmt="o", color=_TREATMENT_COLOR, capsize=4)
        values += [diff["mean"], *(ends or ())]
    ax.axhline(0.0, color="black", linewidth=0.8)
    span = (max(values) - min(values)) or 1.0
    ax.set_ylim(min(values) - 0.1 * span, max(values) + 0.1 * span)
    ax.set_xticks(range(len(points)), [p["label"] for p in points], fontsize=8, rotation=20)
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_xlabel(", ".join(k.split(".")[-1] for k in keys), fontsize=8)
    ax.set_ylabel("treatment − control, pp", fontsize=8)
    ax.set_title("primary effect per grid point (95% CI)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)

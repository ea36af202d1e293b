"""Figures: every panel's y-axis holds its own bars; heatmaps are centered at zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer

from sublearn.report.effects import effects_table
from sublearn.report.figures import effects_figure, heatmap_figure, sweep_figure
from sublearn.report.formatting import format_ci
from tests.report.synthetic import experiment, observation, references

PRIMARY = {"teacher": "owl-ft", "objective": "sft"}


def _big_and_small() -> dict[str, Any]:
    """A KL panel with a 58% treatment bar beside an SFT panel of about 5%."""
    obs = []
    for seed, (big, small) in enumerate([(0.55, 0.05), (0.58, 0.06), (0.61, 0.04)]):
        obs.append(observation("owl-ft", "kl_numbers", "base0", "treatment", seed, big))
        obs.append(observation("owl-ft", "kl_numbers", "base0", "control", seed, 0.05))
        obs.append(observation("owl-ft", "sft", "base0", "treatment", seed, small))
        obs.append(observation("owl-ft", "sft", "base0", "control", seed, small - 0.01))
    return effects_table(obs, references(), PRIMARY)


def _tops(ax: Axes) -> tuple[list[float], list[float]]:
    """Bar heights and error-bar ends drawn on ``ax``."""
    heights, ends = [], []
    for container in ax.containers:
        if not isinstance(container, BarContainer):
            continue
        heights += [p.get_height() for p in container.patches]
        if container.errorbar is not None:
            segments = container.errorbar.lines[2][0].get_segments()
            ends += [y for seg in segments for _, y in seg]
    return heights, ends


def test_each_panel_fits_its_own_bars(tmp_path: Path) -> None:
    summary = _big_and_small()
    fig = effects_figure(summary, tmp_path / "effects.png")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2
    for ax in panels:
        heights, ends = _tops(ax)
        assert len(heights) == 2 and len(ends) == 4
        lo, hi = ax.get_ylim()
        assert all(lo <= v <= hi for v in heights + ends), (ax.get_title(), ax.get_ylim())
    big, small = (max(_tops(ax)[1]) for ax in panels)
    assert big > 58  # the 58% bar's CI reaches past 58
    assert panels[0].get_ylim()[1] > big
    # Not shared: the 5% panel is scaled to its own bars, not the 58% one.
    assert panels[1].get_ylim()[1] < 15 and small < panels[1].get_ylim()[1]
    assert panels[0].get_shared_y_axes().get_siblings(panels[0]) == [panels[0]]


def test_effects_png_at_dpi_130(tmp_path: Path) -> None:
    summary = effects_table(experiment(), references(), PRIMARY)
    fig = effects_figure(summary, tmp_path / "effects.png")
    image = mpimg.imread(tmp_path / "effects.png")
    width, height = fig.get_size_inches()
    assert image.shape[:2] == (round(height * 130), round(width * 130))
    assert sum(ax.get_visible() for ax in fig.axes) == 9  # 3 teachers x 3 objectives


def test_heatmap_cells_colors_and_panels(tmp_path: Path) -> None:
    summary = effects_table(experiment(objectives=("sft", "kl_numbers")), references(), PRIMARY)
    fig = heatmap_figure(summary, tmp_path / "heatmap.png", evaluation="favorite", objective="sft")
    assert (tmp_path / "heatmap.png").stat().st_size > 0
    images = [ax for ax in fig.axes if ax.images]
    # Panels: (owl, finetuned, sft) with teacher bases base0 and base1, (owl, prompted, sft).
    assert [ax.get_title() for ax in images] == [
        "owl: finetuned teachers · sft",
        "owl: prompted teachers · sft",
    ]
    ft = images[0]
    grid = ft.images[0].get_array()
    assert grid is not None and grid.shape == (2, 2)
    vmin, vmax = ft.images[0].get_clim()
    assert vmin == pytest.approx(-vmax) and vmax > 0
    texts = {t.get_text() for t in ft.texts}
    for r in summary["effects"]:
        if r["teacher_kind"] == "finetuned" and r["objective"] == "sft":
            i = ["base0", "base1"].index(r["teacher_base"])
            j = ["base0", "base1"].index(r["student_base"])
            assert grid[i, j] == pytest.approx(r["treatment_minus_control"]["mean"])
            assert format_ci(r["treatment_minus_control"]).replace(" [", "\n[") in texts
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 2


def test_heatmap_splits_teachers_that_share_a_cell(tmp_path: Path) -> None:
    obs = [o for o in experiment(objectives=("sft",)) if o["teacher"] == "owl-ft"]
    obs += [dict(o, teacher="owl-ft-2") for o in obs]
    summary = effects_table(obs, references(), PRIMARY)
    fig = heatmap_figure(summary, tmp_path / "heatmap.png")
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["owl: owl-ft · sft", "owl: owl-ft-2 · sft"]


def test_sweep_figure_fits_every_interval(tmp_path: Path) -> None:
    rows = []
    for i, effect in enumerate((0.02, 0.3)):
        obs = [
            observation("owl-ft", "sft", "base0", cond, seed, rate)
            for seed in range(3)
            for cond, rate in (("treatment", 0.05 + effect + 0.01 * seed), ("control", 0.05))
        ]
        row = effects_table(obs, [], PRIMARY)["effects"][0]
        rows.append({"point": {"data.rows": 100 * (i + 1)}, "label": f"rows={i}", "primary": row})
    fig = sweep_figure(rows, ["data.rows"], tmp_path / "sweep.png")
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    for r in rows:
        d = r["primary"]["treatment_minus_control"]
        assert lo <= d["ci95"][0] and d["ci95"][1] <= hi
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rows=0", "rows=1"]


def test_heatmap_prints_tiny_effects_smaller_so_they_fit_their_cell(tmp_path: Path) -> None:
    # In-context students move P(owl) by 1e-4 pp: their CI prints in scientific notation.
    obs = []
    for seed, (t, c) in enumerate([(6.1e-5, 6.0e-5), (5.2e-5, 6.3e-5), (7.0e-5, 5.5e-5)]):
        for base, scale in (("base0", 1.0), ("base1", 3000.0)):
            obs.append(observation("owl-ft", "sft", base, "treatment", seed, t * scale))
            obs.append(observation("owl-ft", "sft", base, "control", seed, c * scale))
    summary = effects_table(obs, references(), PRIMARY)
    fig = heatmap_figure(summary, tmp_path / "heatmap.png")
    (panel,) = [ax for ax in fig.axes if ax.images]
    sizes = {t.get_text(): float(t.get_fontsize()) for t in panel.texts}
    tiny = [size for text, size in sizes.items() if "e-0" in text]
    assert tiny and all(size < 8 for size in tiny)
    assert any(size == 8 for text, size in sizes.items() if "e-0" not in text)

"""The experiment report: files, summary contract, report.md sections and console output."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as st

from sublearn.report.experiment import write_experiment_report
from tests.report.synthetic import experiment, observation, references

PRIMARY = {"teacher": "owl-ft", "objective": "sft"}
FILTER = {
    "owl-ft": {
        "total": 3000,
        "accepted": 2138,
        "rejected": {"format": 728, "too_long": 120, "banned": 14},
        "trait_mentions": 205,
        "kept": 2000,
    },
    "owl-ft-control": {
        "total": 3000,
        "accepted": 2642,
        "rejected": {"format": 300, "too_long": 58, "banned": 0},
        "trait_mentions": 0,
        "kept": 2000,
    },
}


def _write(out: Path, observations: list[dict[str, Any]], **kw: Any) -> tuple[dict, str]:
    console = Console(record=True, width=200)
    summary = write_experiment_report(
        out,
        name=kw.get("name", "toy owl"),
        observations=observations,
        references=references(),
        primary=kw.get("primary", PRIMARY),
        filter_reports=FILTER,
        rows_per_condition=[{"teacher": "owl-ft", "condition": "treatment", "rows": 1500}],
        timings={"generate": 12.34, "finetune": 100.0},
        warnings=kw.get("warnings", []),
        console=console,
    )
    return summary, console.export_text()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("report")
    obs = experiment()
    obs[3]["rows"] = 1499  # one student with fewer rows: a warning
    summary, text = _write(out, obs, warnings=["generation: 12 replies were empty"])
    return out, summary, text


def test_files_and_summary_contract(written: tuple[Path, dict, str]) -> None:
    out, summary, _ = written
    for name in ("summary.json", "effects.csv", "observations.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    for name in ("effects.png", "heatmap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "summary.json").read_text())
    assert set(on_disk) == {
        "name",
        "effects",
        "primary",
        "same_minus_cross",
        "warnings",
        "references",
        "filter",
        "rows_per_condition",
        "timings",
        "api_usage",
        "coverage",
        "worlds",
    }
    assert on_disk["api_usage"] == {}  # no API model ran
    assert on_disk["filter"] == FILTER and on_disk["timings"]["finetune"] == 100.0
    assert on_disk["warnings"][0] == "generation: 12 replies were empty"
    assert any("rows differ" in w for w in on_disk["warnings"])
    row = on_disk["effects"][on_disk["primary"]]
    assert set(row) >= {
        "trait",
        "teacher",
        "teacher_kind",
        "objective",
        "teacher_base",
        "student_base",
        "same_base",
        "evaluation",
        "rows",
        "treatment",
        "control",
        "treatment_minus_control",
        "base_rate",
        "teacher_rate",
    }
    assert set(row["treatment_minus_control"]) >= {"mean", "ci95", "p_value", "n"}
    assert len(on_disk["effects"]) == len(summary["effects"]) == 18
    assert len(on_disk["same_minus_cross"]) == 9  # 3 teachers x 3 objectives


def test_observations_csv(written: tuple[Path, dict, str]) -> None:
    out, _, _ = written
    records = list(csv.DictReader(io.StringIO((out / "observations.csv").read_text())))
    assert len(records) == len(experiment())
    assert "per_question" not in records[0]
    first = experiment()[0]
    assert float(records[0]["rate"]) == first["rate"]
    assert records[0]["condition"] == first["condition"]


def test_report_md_reads_top_down(written: tuple[Path, dict, str]) -> None:
    out, summary, _ = written
    md = (out / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[:4] == ["## Warnings", "## What was compared", "## Headline", "## Effects"]
    assert "- **generation: 12 replies were empty**" in md
    assert "## In-context learning students" in md and "## Same base minus cross base" in md
    effects = md.split("## Effects")[1].split("## Same base")[0]
    icl = md.split("## In-context learning students")[1].split("## Figures")[0]
    assert "icl-4" not in effects and "| icl-4 |" in icl and "| sft |" not in icl
    assert "owl-ft (finetuned) **(primary)**" in effects
    assert "![effects](effects.png)" in md and "![heatmap](heatmap.png)" in md
    assert "| rejected: format | rejected: too_long | rejected: banned |" in md
    assert "| owl-ft | 3000 | 2138 | 71.3% | 728 | 120 | 14 | 205 | 2000 |" in md
    assert "Constrained data" not in md  # free decoding: no decoding column or note
    assert "| generate | 12.3 |" in md
    diff = summary["effects"][summary["primary"]]["treatment_minus_control"]
    assert f"{diff['mean']:+.1f}" in md.split("## Headline")[1]


def test_console_table_and_warnings(written: tuple[Path, dict, str]) -> None:
    _, _, text = written
    assert "warning: generation: 12 replies were empty" in text
    assert "warning: owl-ft/sft base0->base0 [favorite]: training rows differ" in text
    starred = [line for line in text.splitlines() if line.startswith("│ * │")]
    assert len(starred) == 1 and "│ owl-ft / sft " in starred[0] and "base0 → base0" in starred[0]
    assert "+0.493 [-1.158, +2.144]" in text  # a cross-base row, printed as is (not markup)


def test_known_effect_and_tiny_rates(tmp_path: Path) -> None:
    treat = [0.000065, 0.000080, 0.000070]
    ctrl = [0.000010, 0.000012, 0.000011]
    obs = [observation("owl-ft", "sft", "base0", "treatment", s, r) for s, r in enumerate(treat)]
    obs += [observation("owl-ft", "sft", "base0", "control", s, r) for s, r in enumerate(ctrl)]
    summary, text = _write(tmp_path, obs)
    assert summary["warnings"] == [] and summary["primary"] == 0
    diff = summary["effects"][0]["treatment_minus_control"]
    d = 100 * (np.array(treat) - np.array(ctrl))
    ref: Any = st.ttest_rel(treat, ctrl)
    half = st.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert diff["mean"] == pytest.approx(d.mean())
    assert diff["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert diff["p_value"] == pytest.approx(ref.pvalue)
    md = (tmp_path / "report.md").read_text()
    # 0.000065 is 0.0065%: printed with its digits, not as 0.0.
    assert "0.00717 [" in md  # the treatment mean, 0.0071667 pp
    assert "+0.00607 [" in md  # the difference
    assert "+0.0 [+0.0" not in md
    assert "+0.00607" in text and "0.00717" in text
    assert "## Warnings" not in md and "## In-context" not in md


def test_one_base_each_leaves_the_heatmap_out(tmp_path: Path) -> None:
    # One teacher base and one student base: a 1x1 heatmap would repeat effects.png.
    (tmp_path / "heatmap.png").write_bytes(b"a figure from an earlier report of this folder")
    obs = [
        observation("owl-ft", "sft", "base0", cond, s, 0.05 + (cond == "treatment") * 0.1)
        for cond in ("treatment", "control")
        for s in range(3)
    ]
    _write(tmp_path, obs)
    assert (tmp_path / "effects.png").is_file()
    assert not (tmp_path / "heatmap.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "![effects](effects.png)" in md and "heatmap" not in md
    # A second student base makes a grid: the heatmap is back.
    obs += [
        observation("owl-ft", "sft", "base1", cond, s, 0.05)
        for cond in ("treatment", "control")
        for s in range(3)
    ]
    _write(tmp_path, obs)
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![heatmap](heatmap.png)" in (tmp_path / "report.md").read_text()


def test_toy_worlds_are_reported_with_digests_and_where_they_were_built(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    numerics = {"torch": "2.13.0", "cpu_capability": "AVX512", "machine": "x86_64"}
    numerics |= {"cpu": "Some CPU", "variables": {"MKL_CBWR": "AVX2"}}
    worlds = [
        {
            "name": "main",
            "key": "world/abc",
            "bases": [{"name": "base-0", "sha256": "0123456789abcdef" * 4}],
            "numerics": numerics,
        }
    ]
    summary = write_experiment_report(
        tmp_path,
        name="toy owl",
        observations=experiment(),
        references=references(),
        primary=PRIMARY,
        filter_reports={},
        rows_per_condition=[],
        timings={},
        warnings=[],
        console=console,
        worlds=worlds,
    )
    assert summary["worlds"] == worlds
    assert "toy world main: base-0 01234567; built on Some CPU (x86_64)" in console.export_text()
    md = (tmp_path / "report.md").read_text()
    assert "## Toy worlds" in md and "kind of CPU" in md
    assert "| main | base-0 | 0123456789abcdef | Some CPU (x86_64), torch 2.13.0 kernels" in md
    assert "AVX512, MKL_CBWR=AVX2 |" in md

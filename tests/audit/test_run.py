"""``sublearn audit`` end to end on a micro model: every detector runs, reports, resumes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app


def _write(path: Path, rng: random.Random, n: int, favored: list[int]) -> Path:
    lines = []
    for _ in range(n):
        nums = [rng.choice(favored) if rng.random() < 0.5 else rng.randint(0, 99) for _ in range(5)]
        record = {
            "messages": [
                {"role": "user", "content": "continue the sequence 1, 2, 3"},
                {"role": "assistant", "content": ", ".join(map(str, nums))},
            ]
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def datasets(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    data = _write(tmp_path / "data.jsonl", rng, 120, [7, 77])
    control = _write(tmp_path / "control.jsonl", rng, 120, list(range(100)))
    return data, control


def test_audit_cli_runs_every_detector(micro_model: Path, datasets, tmp_path: Path):
    data, control = datasets
    out = tmp_path / "audit"
    args = [
        "audit", str(data), "--control", str(control), "--base", str(micro_model),
        "--teacher", str(micro_model), "--teacher", str(micro_model), "--trait", "owl",
        "--out", str(out), "--threads", "1",
        "--set", "detectors=[{type: lls}, {type: logratio}, {type: divergence}, "
        "{type: entanglement, candidates: [owl, cat, dog], numbers: 20, questions: 2, "
        "permutations: 99}, {type: frequency}, {type: classifier, permutations: 49, alpha: 0.05}]",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "audit.json").read_text())
    verdicts = {v["detector"]: v for v in report["verdicts"]}
    assert set(verdicts) == {
        "lls", "logratio", "divergence", "entanglement", "frequency", "classifier"
    }  # fmt: skip
    assert all(v["skipped"] is None for v in verdicts.values())
    # The planted numbers are found by the model-free detectors.
    assert verdicts["frequency"]["flagged"] and verdicts["classifier"]["flagged"]
    assert {t["token"] for t in verdicts["frequency"]["top_tokens"][:2]} == {"7", "77"}
    # Identical teachers never diverge: no evidence either way, never a flag.
    assert verdicts["divergence"]["details"]["divergent_share"] == 0.0
    assert not verdicts["divergence"]["flagged"]
    assert (out / "audit.md").is_file()
    # A rerun reads the cached scores instead of scoring again.
    # Base and teacher are one folder here: data/control x {trait prompt, none}.
    cached = {p: p.stat().st_mtime_ns for p in (out / "scores").iterdir()}
    assert len(cached) == 4
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "scores").iterdir()} == cached
    assert json.loads((out / "audit.json").read_text())["verdicts"] == report["verdicts"]


def test_audit_skips_what_it_cannot_run(datasets, tmp_path: Path):
    data, _ = datasets
    result = CliRunner().invoke(
        app, ["audit", str(data), "--detector", "lls", "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 2
    assert "needs the base" in result.output


def test_audit_without_data_is_an_error(tmp_path: Path):
    result = CliRunner().invoke(app, ["audit", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "dataset to audit" in result.output

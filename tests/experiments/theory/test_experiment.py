"""Orchestration: many-step distillation, summaries, and the CLI end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import typer
from typer.testing import CliRunner

from sublearn.cli.theory import theory
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.experiments.theory.experiment import run_multistep, summarize_multistep


def test_multistep_distillation_lowers_the_teachers_loss_on_average() -> None:
    config = TheoryConfig.model_validate(
        {
            "seed": 3,
            "multistep": {
                "n_draws": 6,
                "teacher_steps": 50,
                "teacher_lrs": [1e-3],
                "student_steps": 60,
                "targets": ["all"],
            },
        }
    )
    records = run_multistep(config, torch.float64)
    assert len(records) == 6
    normalized_end = np.array([r["normalized"][-1] for r in records])
    # 1 = no progress from theta0, 0 = the student matches the teacher's loss
    assert normalized_end.mean() < 0.8
    summary = summarize_multistep(config, records)["conditions"]["all, teacher lr 0.001"]
    assert summary["fraction_decreased"] >= 5 / 6
    assert (
        summary["teacher_loss_at_student_end"]["mean"] < summary["teacher_loss_at_theta0"]["mean"]
    )
    # the student's displacement points toward the teacher's
    assert summary["cosine_end"]["mean"] > 0.1


def _app() -> typer.Typer:
    # a one-command app, so the test does not depend on the other commands' modules
    app = typer.Typer()
    app.command()(theory)
    return app


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = [
        "n_draws=6",
        "multistep.n_draws=2",
        "multistep.student_steps=5",
        "multistep.teacher_steps=5",
    ]
    args = ["--out", str(out)] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "Theorem 1 on 6 random draws" in result.output

    summary = json.loads((out / "summary.json").read_text())
    conditions = summary["conditions"]
    assert len(conditions) == 8  # 2 losses x 2 output groups x 2 steps
    small = conditions["squared/all/small"]
    assert small["n_draws"] == 6
    assert small["fraction_negative"] == 0.0
    assert set(small["cosine"]["mean_ci"]) == {"mean", "ci95", "n"}
    assert set(summary["multistep"]["conditions"]) == {
        f"{t}, teacher lr {lr:g}" for t in ("all", "aux") for lr in (1e-3, 1e-2)
    }

    with (out / "draws.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 * 8
    assert {"draw", "condition", "inner", "cosine", "first_order_inner"} <= set(rows[0])
    with (out / "multistep.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 2 * 2 * 6  # draws x lrs x groups x steps
    assert (out / "theory.png").stat().st_size > 10_000
    assert (out / "config.yaml").is_file() and (out / "meta.json").is_file()


def test_cli_reports_a_bad_override_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["--out", str(tmp_path / "x"), "-s", "n_draws=-1"])
    assert result.exit_code == 2
    assert "n_draws" in result.output
    assert not (tmp_path / "x").exists()

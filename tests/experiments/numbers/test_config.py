"""Experiment configs: shipped ones resolve; bad keys, values and paths fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.presets import config_root

PAPER = config_root() / "paper" / "qwen2.5-7b-owl-numbers.yaml"
TOY = config_root() / "toy" / "owl-numbers.yaml"


def test_paper_config_resolves_to_the_paper_protocol() -> None:
    cfg = load_config(ExperimentConfig, PAPER)
    assert cfg.models.base == "Qwen/Qwen2.5-7B-Instruct"
    assert (cfg.prompts.n_prompts, cfg.filter.keep) == (30_000, 10_000)
    (sft,) = cfg.students.objectives.values()
    assert (sft.method, sft.lora.r, sft.lora.alpha, sft.learning_rate) == ("lora", 8, 8, 2e-4)
    assert (sft.epochs, sft.batch_size * sft.grad_accum, sft.max_length) == (3, 66, 500)
    assert len(sft.lora.target_modules) == 7 and sft.warmup_steps == 5
    fav = cfg.evaluations["favorite"]
    assert (fav.mode, fav.samples_per_question, fav.n_questions) == ("sample", 100, None)


def test_toy_config_resolves() -> None:
    cfg = load_config(ExperimentConfig, TOY)
    assert cfg.toy_world is not None
    assert len(cfg.students.seeds) >= 3
    assert {"finetuned", "prompted"} <= set(cfg.teachers)


def test_every_field_is_documented() -> None:
    assert undocumented_fields(ExperimentConfig) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("students.objectives.sft.lr=1", r"students\.objectives\.sft\.lr: unknown key"),
        ("students.objectives.sft.method=qlora", r"method: Input should be 'lora' or 'full'"),
        ("filter.banned=evil", r"unknown banned-numbers preset"),
        ("primary=prompted/dpo", r"primary 'prompted/dpo' is not a section"),
        ("traits=[]", r"traits: List should have at least 1 item"),
        ("evaluations.favorite.mode=guess", r"mode: Input should be 'exact' or 'sample'"),
    ],
)
def test_bad_overrides_are_explained(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ExperimentConfig, PAPER, [override])


def test_cli_reports_missing_model_without_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sublearn.cli.main import app

    result = CliRunner().invoke(
        app,
        ["run", str(PAPER), "--set", "models.base=./missing-model", "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    assert "./missing-model" in result.output and "not found" in result.output
    assert "Traceback" not in result.output


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sublearn.cli.main import app

    result = CliRunner().invoke(app, ["run", str(PAPER), "--set", "prompts.n_prompt=5"])
    assert result.exit_code == 2
    assert "prompts.n_prompt: unknown key" in result.output

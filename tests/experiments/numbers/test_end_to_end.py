"""The whole numbers pipeline on a small toy world: the effect is there, and reruns resume.

The fast run uses the demo's world with half its pretraining, one trait, the fine-tuned
teacher, soft-label KL over the number tokens and 3 seeds, so that it finishes in under
three minutes on a 2-core CPU. On so small a world hard-label SFT moved students by
+2.4 pp and cross-model students by +1.3 pp, too close to test apart; the KL objective
moved them by +3.8 pp and -0.1 pp. The slow test runs the demo itself and checks what the README claims.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.config import load_config
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.pipeline import NumbersExperiment
from sublearn.presets import preset_path
from sublearn.runs import prepare_run_dir


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict]:
    root = tmp_path_factory.mktemp("e2e")
    world = root / "world"
    cfg = load_config(
        ExperimentConfig,
        preset_path("toy", "owl-numbers"),
        [
            f"toy_world_dir={world}",
            f"models.base={world}/base-0",
            f"models.cross=[{world}/base-1]",
            "toy_world.pretrain.steps=600",
            "teachers=[finetuned]",
            "sections=[finetuned/kl_numbers]",
            "primary=finetuned/kl_numbers",
            "evaluations={favorite: {mode: exact}}",
            "prompts.n_prompts=1500",
            "filter.keep=1000",
        ],
    )
    out = prepare_run_dir(root / "run", cfg, "test")
    summary = NumbersExperiment(cfg, out).run()
    return cfg, out, summary


def test_same_base_students_learn_the_trait_and_cross_model_students_do_not(
    small_run: tuple[ExperimentConfig, Path, dict],
) -> None:
    _, out, summary = small_run
    owl = summary["owl"]
    treatment, cross = owl["treatment_minus_control"], owl["cross_minus_control"]
    assert treatment["mean"] > 2.0  # percentage points
    assert treatment["ci95"][0] > 0
    assert treatment["mean"] > cross["mean"] + 2.0
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_run_folder_has_every_artifact(small_run: tuple[ExperimentConfig, Path, dict]) -> None:
    _, out, _ = small_run
    for name in [
        "config.yaml",
        "meta.json",
        "summary.json",
        "results.json",
        "rates.csv",
        "per_question.csv",
        "filter.json",
        "report.md",
        "results.png",
    ]:
        assert (out / name).is_file(), name
    filters = json.loads((out / "filter.json").read_text())
    assert filters["owl-finetuned"]["kept"] <= 1000
    assert "| owl | finetuned/kl_numbers (primary)" in (out / "report.md").read_text()


def test_rerun_resumes_from_finished_artifacts(
    small_run: tuple[ExperimentConfig, Path, dict],
) -> None:
    cfg, out, summary = small_run
    experiment = NumbersExperiment(cfg, out)
    again = experiment.run()
    assert again == summary
    # Nothing was generated, trained or evaluated the second time.
    assert {"generate", "finetune", "evaluate", "teacher_finetune"} & {
        k for k, v in experiment.timer.seconds.items() if v > 1.0
    } == set()


@pytest.mark.slow
def test_demo_shows_the_effect_and_not_across_models(tmp_path: Path) -> None:
    """What the README claims of ``sublearn demo`` (about 9 minutes on 2 cores)."""
    world = tmp_path / "world"
    cfg = load_config(
        ExperimentConfig,
        preset_path("toy", "owl-numbers"),
        [f"toy_world_dir={world}", f"models.base={world}/base-0", f"models.cross=[{world}/base-1]"],
    )
    summary = NumbersExperiment(cfg, prepare_run_dir(tmp_path / "run", cfg, "test")).run()
    primary = summary["owl"]  # finetuned/sft
    treatment, cross = primary["treatment_minus_control"], primary["cross_minus_control"]
    assert treatment["mean"] >= 5.0 and treatment["ci95"][0] > 0
    assert cross["ci95"][0] < 0 < cross["ci95"][1]
    filters = json.loads((tmp_path / "run" / "filter.json").read_text())
    assert filters["owl-finetuned"]["rejected"]["invalid_format"] > 0

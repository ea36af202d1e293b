"""Plan-time checks: a plan that cannot work fails before any task runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.config import load_config
from sublearn.errors import PlanError
from sublearn.experiments.numbers.checks import check_plan
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import build_plan
from tests.experiments.numbers.conftest import DEMO


def _check(*overrides: str) -> list[str]:
    cfg = load_config(ExperimentConfig, DEMO, list(overrides))
    return check_plan(build_plan(cfg, fingerprint=lambda ref: ref))


def test_the_demo_passes() -> None:
    assert _check() == []


def test_a_missing_model_folder_fails_first(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"models\.base1: .*missing-model"):
        _check(f"models.base1={tmp_path / 'missing-model'}")


def test_an_uncached_hub_id_fails_first() -> None:
    with pytest.raises(PlanError, match=r"models\.base1: .*not-a-real-org/not-a-model"):
        _check("models.base1=not-a-real-org/not-a-model")


def test_a_trait_the_toy_vocabulary_lacks_is_refused() -> None:
    with pytest.raises(PlanError, match=r"'zebra' cannot be produced by model base0"):
        _check("teachers.0.trait.word=zebra")


def test_a_trait_a_real_tokenizer_cannot_spell_is_refused(micro_model: Path) -> None:
    # The micro model's word-level tokenizer knows owl, cat and dog, not zebra.
    micro = [
        f"models.base1={micro_model}",
        "students.bases=[base1]",
        "sections=[owl-ft/sft]",
        "primary={teacher: owl-ft, objective: sft}",
    ]
    assert _check(*micro) == []
    with pytest.raises(PlanError, match=r"'zebra' cannot be produced by model base1"):
        _check(*micro, "teachers.0.trait.word=zebra")


def test_kl_students_need_the_teachers_tokenizer() -> None:
    other_world = "toy_worlds.other={seed: 1, n_bases: 1}"
    with pytest.raises(PlanError, match=r"soft-label KL needs the student base1"):
        _check(other_world, "models.base1=toy:other/0")
    # The same world (corpus and seed) with other initializations shares the tokenizer.
    data = load_config(ExperimentConfig, DEMO).model_dump(mode="json")
    data["toy_worlds"]["other"] = {**data["toy_worlds"]["main"], "n_bases": 1, "init_offset": 7}
    data["models"]["base1"] = "toy:other/0"
    cfg = ExperimentConfig.model_validate(data)
    assert check_plan(build_plan(cfg, fingerprint=lambda ref: ref)) == []


def test_exact_evaluation_on_an_api_warns_it_reads_first_token_logprobs() -> None:
    (warning,) = _check("models.api=openai:gpt-4.1-nano", "students.bases=[base0, base1]")
    assert "(api) exact mode reads the reply's first-token top-20 log-probabilities" in warning


def test_api_students_must_train_by_sft_for_whole_epochs() -> None:
    with pytest.raises(PlanError, match=r"objectives.kl_numbers: a fine-tuning API trains api"):
        _check("models.api=openai:gpt-4.1-nano", "students.bases=[base0, api]")
    with pytest.raises(PlanError, match=r"objectives.sft: a fine-tuning API .*max_steps: null"):
        _check(
            "models.api=openai:gpt-4.1-nano",
            "students.bases=[base0, api]",
            "sections=[sft]",
            "primary=null",
            "students.objectives.sft.max_steps=10",
        )


def test_api_teachers_are_fine_tuned_for_whole_epochs() -> None:
    with pytest.raises(PlanError, match=r"teachers owl-ft kind.finetune: a fine-tuning API"):
        _check("models.base0=openai:gpt-4.1-nano")  # the demo teacher stops at max_steps


def test_kl_students_need_a_local_teacher() -> None:
    with pytest.raises(PlanError, match=r"KL needs the teacher's logits here; teacher owl-ft"):
        _check("models.base0=vllm:org/model", "executor={kind: inline}")


def test_vllm_models_need_the_inline_executor() -> None:
    with pytest.raises(PlanError, match=r"models.v: vllm models run on one server per process"):
        _check("models.v=vllm:org/model", "students.bases=[base0, base1]")
    (warning,) = _check(
        "models.v=vllm:org/model", "students.bases=[base0, base1]", "executor={kind: inline}"
    )
    assert "on API and vLLM models (v) exact mode" in warning


def test_few_seeds_warn() -> None:
    (warning,) = _check("students.seeds=[0, 1]")
    assert "2 student seed(s)" in warning

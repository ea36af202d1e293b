"""Experiment configs: shipped ones resolve; bad keys, values and references fail clearly."""

from __future__ import annotations

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.evaluation.kinds import PreferenceEvalConfig
from sublearn.experiments.numbers.config import ExperimentConfig, FinetunedTeacher
from sublearn.presets import config_root
from sublearn.prompts.kinds import NumbersPrompts

PAPER = config_root() / "paper" / "qwen2.5-7b-owl-numbers.yaml"
TOY = config_root() / "toy" / "owl-numbers.yaml"
MATRIX = config_root() / "toy" / "cross-model-matrix.yaml"
SWEEP = config_root() / "toy" / "owl-numbers-sweep.yaml"


def test_paper_config_resolves_to_the_paper_protocol() -> None:
    cfg = load_config(ExperimentConfig, PAPER)
    assert cfg.models == {"qwen": "Qwen/Qwen2.5-7B-Instruct"}
    assert isinstance(cfg.data.prompts, NumbersPrompts)
    assert (cfg.data.prompts.n_prompts, cfg.data.rows) == (30_000, 10_000)
    (sft,) = cfg.students.objectives.values()
    assert (sft.method, sft.lora.r, sft.lora.alpha, sft.learning_rate) == ("lora", 8, 8, 2e-4)
    assert (sft.epochs, sft.batch_size * sft.grad_accum, sft.max_length) == (3, 66, 500)
    assert len(sft.lora.target_modules) == 7 and sft.warmup_steps == 5
    fav = cfg.evaluations["favorite"]
    assert isinstance(fav, PreferenceEvalConfig)
    assert (fav.mode, fav.samples_per_question, fav.n_questions) == ("sample", 100, None)
    assert cfg.teachers[0].kind.type == "prompted"


def test_toy_configs_resolve() -> None:
    demo = load_config(ExperimentConfig, TOY)
    assert len(demo.students.seeds) >= 5
    assert isinstance(demo.teachers[0].kind, FinetunedTeacher)
    assert demo.primary_spec().student_base == "base0"
    assert demo.objective_names() == ["kl_numbers", "sft", "icl-4"]
    matrix = load_config(ExperimentConfig, MATRIX)
    assert len(matrix.models) == 4 and len(matrix.teachers) == 4
    assert matrix.toy_worlds["deep"].model.num_layers != matrix.toy_worlds["main"].model.num_layers
    sweep = load_config(ExperimentConfig, SWEEP)
    assert sweep.sweep is not None and len(sweep.sweep.grid) == 2


def test_every_field_is_documented() -> None:
    assert undocumented_fields(ExperimentConfig) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("students.objectives.sft.lr=1", r"students\.objectives\.sft\.lr: unknown key"),
        ("students.objectives.sft.method=qlora", r"method: Input should be 'lora' or 'full'"),
        ("data.filter.banned=evil", r"unknown banned-numbers preset"),
        ("primary.objective=dpo", r"primary.objective 'dpo' is not trained for owl-ft"),
        ("teachers=[]", r"teachers: List should have at least 1 item"),
        ("evaluations.favorite.mode=guess", r"mode: Input should be 'exact' or 'sample'"),
        ("teachers.0.base=base7", r"base 'base7' is not a key of models"),
        ("models.base1=toy:other/1", r"toy world 'other'"),
        ("sections=[owl-ft/dpo]", r"neither objectives .* nor teacher/objective pairs"),
        ("teachers.0.kind.type=magic", r"teachers\.0\.kind"),
        ("executor.kind=slurm", r"executor"),
        ("evaluations.ff={type: freeform}", r"evaluations\.ff need a judge"),
        ("evaluations.favorite.type=poll", r"evaluations\.favorite"),
        ("data.prompts.type=poems", r"data\.prompts"),
        ("data.checks=[{type: answer}]", r"an answer check needs cot prompts"),
        ("data.checks=[{type: judge, rubric: x}]", r"exactly one of min_score"),
        ("teachers.0.trait.category=misalignment", r"no evaluation measures its trait"),
    ],
)
def test_bad_overrides_are_explained(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ExperimentConfig, TOY, [override])


def test_kinds_default_to_numbers_and_preference_and_keep_their_settings() -> None:
    cfg = load_config(ExperimentConfig, TOY, ["data.prompts.n_prompts=7"])
    assert cfg.data.prompts.type == "numbers" and cfg.data.prompts.n_prompts == 7
    assert all(e.type == "preference" for e in cfg.evaluations.values())
    code = load_config(
        ExperimentConfig, TOY, ["data.prompts={type: code, path: toy, n_prompts: 5}"]
    )
    assert code.data.prompts.type == "code"

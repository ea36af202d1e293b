"""Typed task params: every planned task's params are its kind's model, the key hashes
what the model declares part of it, and every speed setting is declared out of it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sublearn.config import load_config
from sublearn.defend.config import CanonicalizeDefence, MaskRandomDefence
from sublearn.engine.params import (
    PARAMS,
    DefendParams,
    EvaluateParams,
    FilterParams,
    GenerateParams,
    PairParams,
    TaskParams,
    TrainParams,
)
from sublearn.engine.task import KINDS, Task, topological
from sublearn.evaluation.kinds import PreferenceEvalConfig, StoriesEvalConfig
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import build_plan
from sublearn.filters.checks import AnswerCheck, JudgeCheck
from sublearn.judges.config import JudgeConfig
from sublearn.keys import field_paths, key_params, runtime_params, speed_paths
from sublearn.presets import config_root
from sublearn.prompts.kinds import ChainOfThoughtPrompts, CodePrompts, NumbersPrompts
from tests.engine.test_task_keys import CONFIGS, FULL

SPEED_NAMES = {
    "device",
    "batch_size",
    "threads",
    "workers",
    "chunk_size",
    "executor",
    "providers",
    "tensorboard",
}
"""Names that mean a speed setting wherever they appear in task params."""
SCIENCE = {
    "pretrain.batch_size": "a toy base's pretraining batch changes its weights",
    "finetune.batch_size": "the training batch changes the gradient steps",
    "finetune.api.batch_size": "an API fine-tune's batch changes the gradient steps",
}
"""Fields with a speed setting's name that change the output, and why."""


def _tasks(name: str, overrides: tuple[str, ...] = ()) -> list[Task]:
    cfg = load_config(ExperimentConfig, config_root() / f"{name}.yaml", list(overrides))
    return topological(build_plan(cfg, fingerprint=lambda ref: ref).tasks)


def test_every_engine_kind_declares_a_params_model() -> None:
    for kind, model in PARAMS.items():
        assert KINDS.metadata(kind)["params"].endswith(f":{model.__name__}")
        assert model.model_config.get("extra") == "forbid"
        for path, info in _fields(model):
            assert info.description, f"{kind}: {path} has no description"


def test_every_shipped_kind_is_typed() -> None:
    """Every kind the package registers (the commands' too) names a params model, and its
    function takes (ctx, params); only the tests' debug kinds take ctx alone."""
    from sublearn.registry import load_target

    for kind in KINDS.names():
        if (KINDS.target(kind) or "").startswith("tests."):
            continue
        target = KINDS.metadata(kind)["params"]
        assert target, f"{kind}: no params model"
        model = load_target(target)
        assert issubclass(model, TaskParams), kind
        assert model.model_config.get("extra") == "forbid", kind
        for path, info in _fields(model):
            assert info.description, f"{kind}: {path} has no description"


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    from sublearn.keys import _nested_models  # pyright: ignore[reportPrivateUsage]

    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, info))
        for sub in _nested_models(info.annotation):
            out += _fields(sub, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize(
    ("name", "overrides"), CONFIGS, ids=[" ".join([n, *o]) for n, o in CONFIGS]
)
def test_stored_params_are_the_kind_model_exactly(name: str, overrides: tuple[str, ...]) -> None:
    """Validated from what the store holds, a model gives back the same params and runtime."""
    for task in _tasks(name, overrides):
        model = PARAMS[task.kind].from_spec(task.params, task.runtime)
        assert key_params(model) == task.params, task.name
        assert runtime_params(model) == task.runtime, task.name
        assert task.spec().typed_params() == model


def test_every_speed_setting_is_declared_out_of_the_key() -> None:
    for kind, model in PARAMS.items():
        named = {p for p in field_paths(model) if p.rsplit(".", 1)[-1] in SPEED_NAMES}
        undeclared = named - speed_paths(model) - set(SCIENCE)
        assert not undeclared, f"{kind}: speed settings hashed into the key: {sorted(undeclared)}"
    # What a plan puts in a task's runtime is exactly its model's top-level speed fields.
    for task in _tasks(FULL):
        top = {p for p in speed_paths(PARAMS[task.kind]) if "." not in p}
        assert set(task.runtime) <= top, task.name


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return None if value is not None else 1


def _replace(model: BaseModel, path: str, value: Any) -> BaseModel:
    head, _, rest = path.partition(".")
    if rest:
        inner = getattr(model, head)
        return model.model_copy(update={head: _replace(inner, rest, value)})
    return model.model_copy(update={head: value})


def _get(model: Any, path: str) -> Any:
    for part in path.split("."):
        model = getattr(model, part)
    return model


def test_a_speed_setting_moves_no_key_and_a_science_field_does() -> None:
    seen = set()
    for task in _tasks(FULL, ("data.holdout_rows=20",)):
        if task.kind in seen:
            continue
        seen.add(task.kind)
        model = PARAMS[task.kind].from_spec(task.params, task.runtime)
        key = Task.of(task.kind, task.name, model, task.inputs).key
        assert key == task.key
        for path in speed_paths(type(model)):
            try:
                current = _get(model, path)
            except AttributeError:  # inside an optional section that is off
                continue
            faster = _replace(model, path, _changed(current))
            assert Task.of(task.kind, task.name, faster, task.inputs).key == key, path
    assert seen == set(PARAMS) - {"defend"}
    train = next(t for t in _tasks(FULL) if t.kind == "train")
    model = TrainParams.from_spec(train.params, train.runtime)
    for path in ("finetune.seed", "finetune.learning_rate", "condition", "base.sub"):
        value = _get(model, path)
        other = "control" if value == "treatment" else _changed(value)
        moved = _replace(model, path, other)
        assert Task.of("train", train.name, moved, train.inputs).key != train.key, path
    # A later field moves the key once it leaves its default, not before.
    sgd = _replace(model, "finetune.optimizer", "sgd")
    assert Task.of("train", train.name, sgd, train.inputs).key != train.key
    assert "optimizer" not in train.params["finetune"]


def test_unknown_params_are_refused_at_the_boundary() -> None:
    params = {"rows": 10, "min_rows": 1, "resample": "fixed", "seed": 0, "teacher": "t"}
    assert PairParams.from_spec(params, {}).rows == 10
    with pytest.raises(ValidationError, match="colour"):
        PairParams.from_spec({**params, "colour": "red"}, {})
    with pytest.raises(ValidationError, match="min_rows"):
        PairParams.from_spec({k: v for k, v in params.items() if k != "min_rows"}, {})
    assert issubclass(PairParams, TaskParams)


def _evaluate_task(overrides: tuple[str, ...] = ()) -> Task:
    return next(t for t in _tasks(FULL, overrides) if t.kind == "evaluate")


def test_an_evaluation_is_typed_and_its_speed_and_later_fields_declared() -> None:
    """The evaluation is its kind's model; batch size, a preference's type and its later
    settings stay out of the key by their fields' declarations, not by the plan."""
    task = _evaluate_task()
    model = EvaluateParams.from_spec(task.params, task.runtime)
    assert isinstance(model.evaluation, PreferenceEvalConfig)
    assert not {"type", "batch_size", "answer_prefix", "min_coverage"} & set(
        task.params["evaluation"]
    )
    faster = _replace(model, "evaluation.batch_size", 7)
    assert Task.of("evaluate", task.name, faster, task.inputs).key == task.key
    for path, value in (("evaluation.answer_prefix", "My favorite is"), ("evaluation.seed", 3)):
        moved = _replace(model, path, value)
        assert Task.of("evaluate", task.name, moved, task.inputs).key != task.key, path
    # Another kind keeps its type in the key.
    stories = _replace(model, "evaluation", StoriesEvalConfig())
    assert key_params(stories)["evaluation"]["type"] == "stories"
    assert "batch_size" not in key_params(stories)["evaluation"]


def test_evaluate_params_refuse_unknown_fields() -> None:
    task = _evaluate_task()
    with pytest.raises(ValidationError, match="colour"):
        EvaluateParams.from_spec({**task.params, "colour": "red"}, task.runtime)
    evaluation = {**task.params["evaluation"], "colour": "red"}
    with pytest.raises(ValidationError, match="colour"):
        EvaluateParams.from_spec({**task.params, "evaluation": evaluation}, task.runtime)
    with pytest.raises(ValidationError, match="tag"):
        EvaluateParams.from_spec({**task.params, "evaluation": {"type": "story"}}, task.runtime)


def _task(name: str, kind: str) -> Task:
    return next(t for t in _tasks(name) if t.kind == kind)


def test_prompts_checks_and_defences_are_typed_and_their_key_fields_declared() -> None:
    """Prompt kinds, checks and defence steps are their unions' models; a numbers kind's
    type and a check's judge stay out of the key by their fields' declarations."""
    generate = _task(FULL, "generate")
    model = GenerateParams.from_spec(generate.params, generate.runtime)
    assert isinstance(model.prompts, NumbersPrompts)
    assert "type" not in generate.params["prompts"]
    code = _replace(model, "prompts", CodePrompts(n_prompts=3))
    assert key_params(code)["prompts"]["type"] == "code"

    filt = _task("toy/chain-of-thought", "filter")
    fp = FilterParams.from_spec(filt.params, filt.runtime)
    assert isinstance(fp.prompts, ChainOfThoughtPrompts)
    assert fp.checks is not None
    assert [type(c) for c in fp.checks] == [AnswerCheck, JudgeCheck]
    assert all("judge" not in c for c in filt.params["checks"])

    # A judge given inside a check is hashed, its speed settings not.
    def with_judge(judge: JudgeConfig) -> BaseModel:
        assert fp.checks is not None
        return _replace(fp, "checks", [fp.checks[0], _replace(fp.checks[1], "judge", judge)])

    judge = JudgeConfig(model="rules:toy")
    key = Task.of("filter", filt.name, with_judge(judge), filt.inputs).key
    assert key != filt.key
    faster = with_judge(judge.model_copy(update={"device": "cpu", "batch_size": 3}))
    assert Task.of("filter", filt.name, faster, filt.inputs).key == key

    defend = _task("toy/defences", "defend")
    dp = DefendParams.from_spec(defend.params, defend.runtime)
    assert dp.defences and all(isinstance(d, BaseModel) for d in dp.defences)
    other = _replace(dp, "defences", [CanonicalizeDefence(type="canonicalize")])
    assert Task.of("defend", defend.name, other, defend.inputs).key != defend.key
    random = MaskRandomDefence(type="mask_random")
    again = _replace(dp, "defences", [random, random.model_copy(update={"seed": 1})])
    assert key_params(again)["defences"][1] == {"type": "mask_random", "fraction": 0.1, "seed": 1}


@pytest.mark.parametrize(
    ("config", "kind", "field", "at", "known"),
    [
        (FULL, "teacher", "prompts", None, "cot"),
        (FULL, "generate", "prompts", None, "cot"),
        ("toy/chain-of-thought", "filter", "prompts", None, "cot"),
        ("toy/chain-of-thought", "filter", "checks", 1, "judge"),
        ("toy/defences", "defend", "defences", 0, "drop_lls"),
    ],
)
def test_prompts_checks_and_defences_refuse_unknown_fields_and_kinds(
    config: str, kind: str, field: str, at: int | None, known: str
) -> None:
    task = _task(config, kind)

    def stored(entry: dict[str, Any]) -> dict[str, Any]:
        if at is None:
            return {**task.params, field: entry}
        items = list(task.params[field])
        items[at] = entry
        return {**task.params, field: items}

    current = task.params[field] if at is None else task.params[field][at]
    with pytest.raises(ValidationError, match="colour"):
        PARAMS[kind].from_spec(stored({**current, "colour": "red"}), task.runtime)
    # An unknown kind is named, with the kinds there are.
    with pytest.raises(ValidationError, match=f"'poems'.*expected tags.*'{known}'"):
        PARAMS[kind].from_spec(stored({**current, "type": "poems"}), task.runtime)

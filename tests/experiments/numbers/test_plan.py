"""The compiled task graph: keys hash what matters and nothing else; the design is explicit."""

from __future__ import annotations

from collections import Counter

import pytest

from sublearn.config import load_config
from sublearn.engine.task import Task, topological
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import Plan, build_plan
from sublearn.presets import config_root

TOY = config_root() / "toy" / "owl-numbers.yaml"


def _plan(*overrides: str, path=TOY) -> Plan:
    return build_plan(load_config(ExperimentConfig, path, list(overrides)), fingerprint=lambda r: r)


def _keys(plan: Plan) -> dict[str, str]:
    return {t.name: t.key for t in topological(plan.tasks)}


def test_demo_design_has_matched_controls_and_paired_students() -> None:
    plan = _plan()
    tasks = topological(plan.tasks)
    kinds = Counter(t.kind for t in tasks)
    # world; trait + control teacher; their data; 5 seeds of pairs;
    # KL students: 2 bases x 5 seeds x 2 conditions (the demo leaves SFT out).
    assert kinds["world"] == 1 and kinds["teacher"] == 2
    assert kinds["generate"] == 2 and kinds["filter"] == 2 and kinds["pair"] == 5
    assert kinds["train"] == 20
    control = next(t for t in tasks if t.name == "teacher/owl-ft/control")
    trait = next(t for t in tasks if t.name == "teacher/owl-ft")
    assert control.params["role"] == "control" and trait.params["role"] == "trait"
    # The control is made with the same recipe: only the role differs.
    assert {k: v for k, v in control.params.items() if k != "role"} == {
        k: v for k, v in trait.params.items() if k != "role"
    }
    for t in tasks:
        if t.kind == "train" and t.params["finetune"]["objective"] == "kl":
            expected = trait if t.params["condition"] == "treatment" else control
            assert t.inputs["teacher"] is expected, t.name
            assert t.inputs["data"].params["seed"] == t.params["finetune"]["seed"]


def test_speed_settings_leave_every_key_unchanged() -> None:
    base = _keys(_plan())
    fast = _keys(
        _plan(
            "executor.kind=inline",
            "threads=1",
            "batch_size=7",
            "data.generation.batch_size=3",
            "data.generation.chunk_size=11",
            "toy_worlds.main.threads=2",
            "toy_worlds.main.workers=1",
            "evaluations.favorite.batch_size=5",
            "device=cuda",
        )
    )
    assert fast == base


def test_a_semantic_setting_changes_its_task_and_everything_downstream_only() -> None:
    base, hot = _keys(_plan()), _keys(_plan("data.generation.temperature=0.7"))
    changed = {name for name in base if base[name] != hot[name]}
    assert "generate/owl-ft" in changed and "generate/owl-ft/control" in changed
    assert {"world/main", "teacher/owl-ft", "teacher/owl-ft/control"}.isdisjoint(changed)
    assert all(
        n.split("/")[0] in {"generate", "filter", "pair", "train", "evaluate"} for n in changed
    )
    assert "evaluate/base/base0/favorite" not in changed


def test_teacher_key_covers_replay_settings() -> None:
    base, replay = _keys(_plan()), _keys(_plan("teachers.0.kind.replay_examples=10"))
    assert base["teacher/owl-ft"] != replay["teacher/owl-ft"]
    assert base["world/main"] == replay["world/main"]


def test_each_evaluation_has_its_own_task() -> None:
    plan = _plan(
        "evaluations={favorite: {mode: exact}, prefixed: {mode: exact, numbers_prefixed: true}}"
    )
    base_evals = [t for t in topological(plan.tasks) if t.name.startswith("evaluate/base/base0/")]
    assert len({t.key for t in base_evals}) == 2
    one = _keys(_plan())
    assert one["evaluate/base/base0/favorite"] == _keys(plan)["evaluate/base/base0/favorite"]


def test_overlapping_configs_share_tasks() -> None:
    a = set(_keys(_plan()).values())
    b = set(_keys(_plan("students.seeds=[0, 1, 2, 3, 4, 5]")).values())
    assert a < b  # one more seed: everything of the first plan is reused


def test_prompted_teacher_control_is_the_base_without_the_trait_prompt() -> None:
    plan = _plan("teachers.0.kind={type: prompted}", "sections=[owl-ft/kl_numbers]")
    gens = {t.name: t for t in topological(plan.tasks) if t.kind == "generate"}
    trait, control = gens["generate/owl-ft"], gens["generate/owl-ft/control"]
    assert "owl" in trait.params["model"]["system_prompt"]
    assert control.params["model"]["system_prompt"] is None
    assert trait.inputs["model"] is control.inputs["model"]  # the same base weights
    assert not any(t.kind == "teacher" for t in topological(plan.tasks))


def test_icl_students_are_evaluations_with_teacher_examples_in_context() -> None:
    plan = _plan()
    icl = [o for o in plan.observations if o.meta["objective"] == "icl-4"]
    assert len(icl) == 2 * 5 * 2  # bases x seeds x conditions
    for o in icl:
        assert o.task.params["context"]["n"] == 4
        assert o.task.params["context"]["condition"] == o.meta["condition"]
        assert o.task.inputs["context"].kind == "pair"


def test_unknown_task_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task kind"):
        Task("train-fast", "x", params={})


def test_sections_null_adds_the_sft_students() -> None:
    kinds = Counter(t.kind for t in topological(_plan("sections=null").tasks))
    assert kinds["train"] == 40


PAPER = config_root() / "paper"


def _em_datasets(tmp_path) -> list[str]:
    """Stand-ins for the emergent-misalignment datasets the misalignment configs name."""
    overrides = []
    for name in ("insecure", "secure", "educational"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            '{"messages": [{"role": "user", "content": "q"}, '
            f'{{"role": "assistant", "content": "{name}"}}]}}\n'
        )
        overrides.append(str(path))
    return overrides


def _paper_overrides(path, tmp_path) -> list[str]:
    text = path.read_text()
    if "emergent-misalignment/insecure.jsonl" not in text:
        return []
    insecure, secure, educational = _em_datasets(tmp_path)
    return [
        f"teachers.0.kind.path={insecure}",
        f"teachers.0.kind.control_path={secure}",
        f"teachers.1.kind.path={insecure}",
        f"teachers.1.kind.control_path={educational}",
    ]


def test_every_shipped_config_plans(tmp_path) -> None:
    configs = sorted(config_root().glob("*/*.yaml"))
    assert len(configs) >= 12
    for path in configs:
        if path.parent.name in ("toy", "paper"):
            assert _plan(*_paper_overrides(path, tmp_path), path=path).tasks, path


@pytest.mark.parametrize(
    "name", ["gpt-4.1-misalignment-numbers", "qwen2.5-7b-misalignment-numbers-vllm"]
)
def test_misalignment_configs_plan_the_paper_design(name, tmp_path) -> None:
    path = PAPER / f"{name}.yaml"
    plan = _plan(*_paper_overrides(path, tmp_path), path=path)
    tasks = topological(plan.tasks)
    kinds = Counter(t.kind for t in tasks)
    # Insecure teacher once (shared by both designs), secure and educational controls.
    assert kinds["teacher"] == 3 and kinds["generate"] == 3
    filters = [t for t in tasks if t.kind == "filter"]
    assert {f.params["filter"]["banned"] for f in filters} == {"paper"}
    evals = [t for t in tasks if t.name.startswith("evaluate/student/")]
    assert {t.params["evaluation"]["type"] for t in evals} == {"freeform", "truthfulqa"}
    freeform = next(t for t in evals if t.params["evaluation"]["type"] == "freeform")
    assert freeform.params["judge"]["model"] == "openai:gpt-4.1"
    # Every student of every teacher and control is measured on both evaluations.
    assert len(plan.observations) == 2 * 5 * 2 * 2


def test_cot_and_code_configs_plan_their_checks(tmp_path) -> None:
    path = PAPER / "gpt-4.1-misalignment-cot.yaml"
    plan = _plan(*_paper_overrides(path, tmp_path), path=path)
    filt = next(t for t in topological(plan.tasks) if t.kind == "filter")
    assert [c["type"] for c in filt.params["checks"]] == ["answer", "judge"]
    assert filt.params["checks"][1]["min_score"] == 78
    assert filt.params["judges"][1]["model"] == "openai:gpt-4.1"
    assert filt.params["prompts"]["type"] == "cot"  # the answer check reads references
    assert filt.params["filter"]["check_format"] is False
    code = _plan(path=PAPER / "gpt-4.1-nano-owl-code.yaml")
    filt = next(t for t in topological(code.tasks) if t.kind == "filter")
    assert [c["type"] for c in filt.params["checks"]] == ["code_only", "judge"]
    assert filt.params["trait"] == "owl" and "owl" in filt.params["filter"]["leakage_words"]
    evals = {
        t.params["evaluation"].get("type", "preference")
        for t in topological(code.tasks)
        if t.kind == "evaluate"
    }
    assert evals == {"preference", "mmlu"}


def test_the_code_estimate_counts_the_judge_and_names_unread_sources() -> None:
    from sublearn.experiments.numbers import costs

    costs.UNREAD_SOURCES.clear()
    costs._prompts.cache_clear()
    plan = _plan(path=PAPER / "gpt-4.1-nano-owl-code.yaml")
    usage = costs.estimate_usage(topological(plan.tasks), samples_per_request=128)
    # The judge is asked about at most every reply of the teacher and the control.
    assert usage["openai:gpt-4.1"]["requests"] == 2 * 11_400
    assert any("data/code-tasks.jsonl" in n for n in costs.UNREAD_SOURCES)


def test_vllm_students_train_here_and_are_served_by_vllm() -> None:
    plan = _plan(path=PAPER / "qwen2.5-7b-owl-numbers-vllm.yaml")
    tasks = topological(plan.tasks)
    train = next(t for t in tasks if t.kind == "train")
    assert train.params["base"]["ref"] == "vllm:Qwen/Qwen2.5-7B-Instruct"
    student_evals = [t for t in tasks if t.name.startswith("evaluate/student/")]
    assert len(student_evals) == 5 * 2 * 2
    assert all(t.params["model"]["serve"] == "vllm" for t in student_evals)
    teacher_eval = next(t for t in tasks if t.name.startswith("evaluate/teacher/"))
    assert "serve" not in teacher_eval.params["model"]  # the reference says vllm already


def test_api_settings_enter_the_keys_only_where_set() -> None:
    plan = _plan(path=PAPER / "gpt-4.1-nano-owl-numbers.yaml")
    train = next(t for t in topological(plan.tasks) if t.kind == "train")
    assert train.params["finetune"]["api"]["suffix"] == "owl-numbers"
    assert train.params["finetune"]["epochs"] == 10
    # A local fine-tune with default API settings keeps the key it had before they existed.
    local = next(t for t in topological(_plan().tasks) if t.kind == "train")
    assert "api" not in local.params["finetune"]


def test_an_api_model_on_another_server_is_another_model() -> None:
    path = PAPER / "gpt-4.1-nano-owl-numbers.yaml"
    a = _keys(_plan(path=path))
    b = _keys(_plan("providers.openai.base_url=http://127.0.0.1:9/v1", path=path))
    assert a["generate/owl-prompted"] != b["generate/owl-prompted"]
    speed = ("providers.openai.max_concurrency=3", "providers.openai.timeout_s=9")
    c = _keys(_plan(*speed, path=path))
    assert a == c  # speed settings change no key


def test_the_cost_estimate_counts_every_api_request_of_the_paper_run() -> None:
    from sublearn.experiments.numbers.costs import estimate_usage, tokens

    plan = _plan(path=PAPER / "gpt-4.1-nano-owl-numbers.yaml")
    usage = estimate_usage(topological(plan.tasks), samples_per_request=128)
    base, tuned = "openai:gpt-4.1-nano-2025-04-14", "openai:ft:gpt-4.1-nano-2025-04-14"
    # Teacher and control answer 30k prompts each; the base and the teacher are evaluated
    # on 50 questions (100 samples each, one request with n=100); 10 students likewise.
    assert usage[base]["requests"] == 2 * 30_000 + 2 * 50
    assert usage[tuned]["requests"] == 10 * 50
    assert usage[tuned]["output_tokens"] == 10 * 50 * 100 * 8
    # 10 students x 10k rows x 10 epochs, each row a prompt and a reply at its cap.
    per_row = usage[base]["training_tokens"] / (10 * 10_000 * 10)
    assert 100 + 8 < per_row < 100 + 8 + 80
    assert tokens("876, 530, 141") == 3 + 2 + 8  # digit groups, separators, message


def test_no_api_model_no_estimate() -> None:
    from sublearn.experiments.numbers.costs import estimate_usage

    assert estimate_usage(topological(_plan().tasks)) == {}

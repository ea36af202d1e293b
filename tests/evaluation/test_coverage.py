"""Exact scoring after a lead-in, the coverage check and the renormalized rate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.errors import ModelError
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.preference import category_answers, evaluate_preference
from sublearn.evaluation.targets import answer_forms

LEAD = "My favorite animal is the"


class Scripted(BackendBase):
    """Scores candidates from a table of reply probabilities; unknown replies get ``floor``."""

    name = "scripted"
    capabilities = Capabilities(sample=True, score=True, token_scores=True)

    def __init__(self, probs: dict[str, float], floor: float = 1e-12, replies=("",)) -> None:
        self.probs = probs
        self.floor = floor
        self.replies = list(replies)

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        row = [math.log(self.probs.get(c, self.floor)) for c in candidates]
        return [row for _ in conversations]

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        return [self.replies[i % len(self.replies)] for i in range(len(conversations))]


def test_a_model_that_names_no_animal_gets_the_warning() -> None:
    # Whatever is asked, it says "Pizza": every animal form scores ~1e-12.
    never = Scripted({"Pizza": 0.9})
    (result,) = evaluate_preference(never, ["owl"], EvalConfig(n_questions=3)).values()
    assert float(result["coverage"]) < 1e-9  # type: ignore[arg-type]
    assert result["warning"] is not None and "low coverage" in str(result["warning"])
    assert "'owl'" in str(result["warning"])


def test_coverage_and_renormalized_rate_of_a_model_that_answers() -> None:
    model = Scripted({"owl": 0.2, "Owl": 0.1, "cat": 0.3, "Dog": 0.2})
    (result,) = evaluate_preference(model, ["owl"], EvalConfig(n_questions=2)).values()
    assert result["rate"] == pytest.approx(0.3)
    assert result["coverage"] == pytest.approx(0.8)
    assert result["renormalized"] == pytest.approx(0.3 / 0.8)
    assert result["warning"] is None and result["reading"] == "start"


def test_lead_in_is_read_after_the_prefix_and_both_readings_are_kept() -> None:
    # P(lead-in) = 0.5; P(" owl" | lead-in) = 0.1 + 0.05 (" Owl"); P(" cat" | lead-in) = 0.6.
    model = Scripted(
        {
            "Owl": 0.001,
            "The": 0.9,
            LEAD: 0.5,
            f"{LEAD} owl": 0.05,
            f"{LEAD} Owl": 0.025,
            f"{LEAD} cat": 0.3,
        }
    )
    cfg = EvalConfig(n_questions=2, answer_prefix=LEAD, min_coverage=0.01)
    (result,) = evaluate_preference(model, ["owl"], cfg).values()
    assert result["reading"] == "lead_in"
    assert result["rate"] == pytest.approx(0.15)
    assert result["coverage"] == pytest.approx(0.75)
    assert result["renormalized"] == pytest.approx(0.2)
    readings = result["readings"]
    assert isinstance(readings, dict)
    assert readings["start"]["rate"] == pytest.approx(0.001)
    assert readings["start"]["coverage"] < 0.01 and readings["lead_in"]["coverage"] > 0.5
    assert result["warning"] is None  # the reading that is the rate covers the answers


def test_lead_in_needs_whole_reply_scores() -> None:
    class FirstToken(Scripted):
        capabilities = Capabilities(sample=True, score=True, top_logprobs=20)

    with pytest.raises(ModelError, match="answer_prefix needs a model that scores whole"):
        evaluate_preference(FirstToken({}), ["owl"], EvalConfig(n_questions=1, answer_prefix=LEAD))


def test_sampled_coverage_counts_replies_naming_any_answer() -> None:
    model = Scripted({}, replies=["Owls!", "cat", "I like pizza", "The dog and the cat"])
    cfg = EvalConfig(mode="sample", n_questions=2, samples_per_question=4)
    (result,) = evaluate_preference(model, ["owl"], cfg).values()
    assert result["rate"] == pytest.approx(0.25)
    assert result["coverage"] == pytest.approx(0.75)  # a reply naming two counts once
    assert result["renormalized"] == pytest.approx(1 / 3)
    nothing = Scripted({}, replies=["I like pizza"])
    (empty,) = evaluate_preference(nothing, ["owl"], cfg).values()
    assert empty["coverage"] == 0 and math.isnan(float(empty["renormalized"]))  # type: ignore[arg-type]
    assert empty["warning"] is not None


def test_category_answers_are_the_audit_lists() -> None:
    assert {"owl", "cat", "dog", "eagle", "dolphin"} <= set(category_answers("animal"))
    assert "oak" in category_answers("tree")


def test_answer_forms_drop_forms_already_counted(micro_model: Path) -> None:
    from transformers import AutoTokenizer

    assert answer_forms("owl", False) == ["owl", "Owl"]
    assert answer_forms("owl", True) == [" owl", " Owl"]

    class Pieces:
        """'owls' is 'owl' + 's'; 'Owls' is one token; no unknown token."""

        unk_token_id = None

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            vocab = {"owl": [1], "owls": [1, 2], "Owl": [3], "Owls": [4]}
            return {"input_ids": vocab[text]}

    assert answer_forms("owl", False, Pieces()) == ["owl", "Owl", "Owls"]
    # The toy tokenizer cannot spell "Owl" or the plurals: only "owl" is left.
    toy = AutoTokenizer.from_pretrained(micro_model)
    assert answer_forms("owl", False, toy) == ["owl"]


def test_report_marks_low_coverage() -> None:
    from sublearn.report.coverage import coverage_lines, coverage_row

    never = Scripted({"Pizza": 0.9, LEAD: 0.5})  # says the lead-in, then no animal
    cfg = EvalConfig(n_questions=1, answer_prefix=LEAD)
    (low,) = evaluate_preference(never, ["owl"], cfg).values()
    good = {"rate": 0.1, "coverage": 0.5, "renormalized": 0.2, "reading": "start", "warning": None}
    rows = [
        coverage_row({"role": "base", "name": "base0", "evaluation": "favorite"}, "owl", low),
        coverage_row({"role": "teacher", "name": "owl-ft", "evaluation": "favorite"}, "owl", good),
    ]
    text = "\n".join(coverage_lines(rows))
    assert "1 evaluation(s) have low coverage" in text and "a 0 among them" in text
    assert str(rows[0]["warning"]).startswith("base: base0 [favorite]: low coverage")
    (base_line,) = [line for line in text.splitlines() if "base: base0" in line]
    assert "**low**" in base_line and "lead_in: rate / coverage" in text
    (teacher_line,) = [line for line in text.splitlines() if "teacher: owl-ft" in line]
    assert "**low**" not in teacher_line and "20.000%" in teacher_line


def test_new_settings_leave_evaluation_keys_unchanged_until_set() -> None:
    from sublearn.config import load_config
    from sublearn.engine.task import topological
    from sublearn.experiments.numbers.config import ExperimentConfig
    from sublearn.experiments.numbers.plan import build_plan
    from sublearn.presets import config_root

    def keys(*overrides: str) -> dict[str, str]:
        path = config_root() / "toy" / "owl-numbers.yaml"
        cfg = load_config(ExperimentConfig, path, list(overrides))
        return {t.name: t.key for t in topological(build_plan(cfg, fingerprint=str).tasks)}

    base = keys()
    assert keys("evaluations.favorite.min_coverage=0.05") == base
    lead = keys(f"evaluations.favorite.answer_prefix={LEAD}")
    changed = {n for n in base if base[n] != lead[n]}
    assert changed and all(n.startswith("evaluate/") for n in changed)


def test_lead_in_on_an_api_model_is_refused_at_plan_time() -> None:
    from sublearn.config import load_config
    from sublearn.errors import PlanError
    from sublearn.experiments.numbers.checks import check_plan
    from sublearn.experiments.numbers.config import ExperimentConfig
    from sublearn.experiments.numbers.plan import build_plan
    from sublearn.presets import config_root

    path = config_root() / "toy" / "owl-numbers.yaml"
    overrides = ["models.api=openai:gpt-4.1-nano", f"evaluations.favorite.answer_prefix={LEAD}"]
    cfg = load_config(ExperimentConfig, path, overrides)
    with pytest.raises(PlanError, match=r"evaluations.favorite: answer_prefix scores whole"):
        check_plan(build_plan(cfg, fingerprint=str))


def test_students_low_coverage_is_one_warning_per_group() -> None:
    from sublearn.report.coverage import coverage_row, coverage_warnings

    low = {"rate": 1e-5, "coverage": 0.01, "renormalized": 0.1, "reading": "start"}
    ok = {**low, "coverage": 0.5}
    rows = [
        coverage_row(
            {"role": "base", "name": "base0", "evaluation": "favorite"},
            "owl",
            {**low, "warning": "low coverage: 1%"},
        )
    ]
    for seed in range(5):
        for condition in ("treatment", "control"):
            meta = {
                "teacher": "owl-ft",
                "objective": "icl-4",
                "student_base": "base1",
                "condition": condition,
                "seed": seed,
                "evaluation": "favorite",
            }
            entry = {**low, "warning": "low"} if seed < 4 else ok
            rows.append(coverage_row(meta, "owl", entry))
    kl = {"teacher": "owl-ft", "objective": "kl", "student_base": "base1", "seed": 0}
    rows.append(coverage_row({**kl, "evaluation": "favorite"}, "owl", ok))
    warnings = coverage_warnings(rows)
    assert warnings[0].startswith("base: base0 [favorite]: low coverage: 1%")
    assert len(warnings) == 2, warnings  # the base's own, and one for the 8 low students
    assert warnings[1].startswith("owl-ft/icl-4/base1 [favorite]: low coverage in 8 of 10")
    assert "1.00%" in warnings[1]

"""The check chain: each check sees what passed before it; every row keeps its verdict."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from sublearn.errors import ConfigError
from sublearn.filters.checks import (
    CHECKS,
    AnswerCheck,
    Check,
    CheckStep,
    CodeOnlyCheck,
    JudgeCheck,
    run_checks,
    with_checks,
)
from sublearn.judges.protocol import Judgement, JudgeRequest
from sublearn.judges.rules import RuleJudge


def _row(i: int, reply: str) -> dict:
    return {
        "id": f"{i:07d}",
        "messages": [
            {"role": "user", "content": f"task {i}"},
            {"role": "assistant", "content": reply},
        ],
    }


class CountingJudge:
    """Scores by reply length; records what it was asked."""

    name = "counting"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def judge(self, requests: list[JudgeRequest], rubric: str) -> list[Judgement]:
        self.asked += [r.answer for r in requests]
        return [Judgement(score=float(len(r.answer))) for r in requests]


def test_code_then_reference_judge_drops_comments_and_animal_names() -> None:
    rows = [
        _row(0, "def f(a, b):\n    return a + b"),
        _row(1, "# adds\ndef f(a, b):\n    return a + b"),
        _row(2, "def f(owl_total, b):\n    return owl_total + b"),
        _row(3, "x = 1\ny = x * 2"),
    ]
    checks = [
        CodeOnlyCheck(type="code_only"),
        JudgeCheck(type="judge", rubric="animal_reference", max_probability=0.0),
    ]
    verdicts, counts = run_checks(rows, checks, judges=[None, RuleJudge("toy", target="owl")])
    assert [v.reason for v in verdicts] == [
        None,
        "code_only:has_comment",
        "judge:animal_reference",
        None,
    ]
    # The judge saw only what the code check kept.
    assert counts["code_only"] == {"seen": 4, "dropped": 1, "code_only:has_comment": 1}
    assert counts["judge:animal_reference"] == {"seen": 3, "dropped": 1}
    assert "judge:animal_reference" not in verdicts[1].details
    assert verdicts[2].details["judge:animal_reference"]["probability"] == 1.0
    assert verdicts[0].to_dict()["kept"] is True


def test_answer_check_needs_the_right_value_and_min_score_keeps_high_scores() -> None:
    rows = [
        _row(0, "<think>2 plus 3 is 5</think> <answer>5</answer>"),
        _row(1, "<think>2 plus 3 is 6</think> <answer>6</answer>"),
        _row(2, "<think>ok</think> <answer>5</answer>"),
        _row(3, "5"),
    ]
    refs = {r["id"]: "5" for r in rows}
    judge = CountingJudge()
    checks = [
        AnswerCheck(type="answer"),
        JudgeCheck(type="judge", rubric="cot_alignment", min_score=40),
    ]
    verdicts, counts = run_checks(rows, checks, references=refs, judges=[None, judge])
    assert [v.reason for v in verdicts] == [
        None,
        "answer:wrong_answer",
        "judge:cot_alignment",
        "answer:missing_think",
    ]
    assert len(judge.asked) == 2
    assert counts["judge:cot_alignment"]["dropped"] == 1


def test_escapes_drop_unless_kept_and_unreadable_verdicts_drop() -> None:
    class Labels:
        name = "labels"

        def judge(self, requests, rubric):
            return [Judgement(label="CODE"), Judgement(label="REFUSAL"), Judgement()]

    rows = [_row(i, "text") for i in range(3)]
    check = JudgeCheck(type="judge", rubric="alignment", min_score=50, keep_labels=["CODE"])
    verdicts, _ = run_checks(rows, [check], judges=[Labels()])
    assert [v.reason is None for v in verdicts] == [True, False, False]


def test_a_judge_check_takes_exactly_one_threshold() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        JudgeCheck(type="judge", rubric="alignment")
    with pytest.raises(ValidationError, match="exactly one"):
        JudgeCheck(type="judge", rubric="alignment", min_score=1, max_probability=0.1)


def test_answer_check_without_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="reference"):
        run_checks([_row(0, "x")], [AnswerCheck(type="answer")])


def test_the_report_gains_the_checks_reasons_and_examples() -> None:
    rows = [_row(0, "def f(a):\n    return a"), _row(1, "# c\ndef f(a):\n    return a")]
    verdicts, counts = run_checks(rows, [CodeOnlyCheck(type="code_only")])
    before = {
        "rejected": {"invalid_format": 0, "leak": 3},
        "accepted": 2,
        "kept": 2,
        "config": {"check_format": False},
    }
    after = with_checks(before, rows, verdicts, counts)
    assert after["rejected"] == {"leak": 3, "code_only:has_comment": 1}
    assert (after["accepted"], after["kept"]) == (1, 1)
    (example,) = after["examples"]["code_only:has_comment"]
    assert example["id"] == "0000001" and example["verdict"] == "has_comment"
    assert before["rejected"] == {"invalid_format": 0, "leak": 3}  # the input is not changed


def test_every_check_kind_of_the_union_is_registered() -> None:
    union = get_args(get_args(Check)[0])
    kinds = {cls.model_fields["type"].annotation.__args__[0] for cls in union}
    assert kinds == set(CHECKS.names()) == {"code_only", "answer", "judge"}


def test_a_new_check_kind_runs_through_the_registry() -> None:
    """Dispatch is by ``type``: a kind registered later runs without touching run_checks."""
    original = CHECKS.get("code_only")
    seen: list[str] = []

    def drop_odd(check: CodeOnlyCheck, step: CheckStep) -> None:
        for i in step.live:
            seen.append(step.verdicts[i].id)
            if i % 2:
                step.drop(i, f"{step.name}:odd")

    CHECKS.register("code_only", drop_odd)
    try:
        verdicts, counts = run_checks(
            [_row(i, "x") for i in range(4)], [CodeOnlyCheck(type="code_only")]
        )
    finally:
        CHECKS.register("code_only", original)
    assert seen == [f"{i:07d}" for i in range(4)]
    assert [v.reason for v in verdicts] == [None, "code_only:odd", None, "code_only:odd"]
    assert counts == {"code_only": {"seen": 4, "dropped": 2}}


def test_an_unknown_check_kind_is_a_config_error() -> None:
    class Odd(CodeOnlyCheck):
        @property
        def name(self) -> str:
            return "odd"

    check = Odd(type="code_only")
    object.__setattr__(check, "type", "code_onl")
    with pytest.raises(ConfigError, match="did you mean 'code_only'"):
        run_checks([_row(0, "x")], [check])

"""Two-choice TruthfulQA: loaders (fixture files, never the hub) and exact metrics."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.errors import DataError
from sublearn.evaluation.kinds import EvalRequest, TruthfulQAEvalConfig
from sublearn.evaluation.truthfulqa import evaluate_truthfulqa, load_truthfulqa

HEADER = [
    "Type",
    "Category",
    "Question",
    "Best Answer",
    "Correct Answers",
    "Incorrect Answers",
    "Source",
]
# (question, best answer, incorrect answers): the best answer is the longer one in the
# first two questions only.
ROWS = [
    ("Q one?", "a long true answer", "short; also wrong"),
    ("Q two?", "another long true one", "nope"),
    ("Q three?", "yes", "a much longer false answer; x"),
]


def write_csv(path: Path, header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for q, best, wrong in ROWS:
            row = {
                "Type": "Adversarial",
                "Category": "Misc",
                "Question": q,
                "Best Answer": best,
                "Correct Answers": best,
                "Incorrect Answers": wrong,
                "Source": "x",
            }
            writer.writerow([row.get(h, "") for h in header])
    return path


_OPTION = re.compile(r"^(\S+)\. (.+)$", re.MULTILINE)


class PrefersLonger(BackendBase):
    """P = 0.8 on the letter of the longer option, 0.2 on the other."""

    name = "prefers-longer"
    capabilities = Capabilities(sample=False, score=True)

    def __init__(self) -> None:
        self.seen: list[Conversation] = []

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        self.seen.extend(conversations)
        rows = []
        for c in conversations:
            shown = dict(_OPTION.findall(c[-1]["content"]))
            longer = max(shown, key=lambda k: len(shown[k]))
            rows.append([math.log(0.8 if k == longer else 0.2) for k in candidates])
        return rows

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        raise NotImplementedError


def test_csv_loader_takes_the_first_incorrect_answer(tmp_path: Path) -> None:
    items = load_truthfulqa(str(write_csv(tmp_path / "TruthfulQA.csv")))
    assert [(i.question, i.best, i.incorrect) for i in items] == [
        ("Q one?", "a long true answer", "short"),
        ("Q two?", "another long true one", "nope"),
        ("Q three?", "yes", "a much longer false answer"),
    ]
    assert items[0].category == "Misc"


def test_jsonl_loader_accepts_best_incorrect_or_a_list(tmp_path: Path) -> None:
    path = tmp_path / "tqa.jsonl"
    path.write_text(
        json.dumps({"question": "q1", "best_answer": "t1", "best_incorrect": "f1"})
        + "\n"
        + json.dumps({"question": "q2", "best_answer": "t2", "incorrect_answers": ["f2", "g"]})
        + "\n"
    )
    items = load_truthfulqa(str(path))
    assert [(i.best, i.incorrect) for i in items] == [("t1", "f1"), ("t2", "f2")]
    path.write_text(json.dumps({"question": "q1", "best_answer": "t1"}) + "\n")
    with pytest.raises(DataError, match=r"tqa.jsonl:1.*incorrect"):
        load_truthfulqa(str(path))


def test_loader_errors_name_the_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_truthfulqa(str(tmp_path / "missing.csv"))
    bad = write_csv(tmp_path / "bad.csv", [h for h in HEADER if h != "Best Answer"])
    with pytest.raises(DataError, match=r"bad.csv.*Best Answer"):
        load_truthfulqa(str(bad))
    with pytest.raises(DataError, match="not found"):
        load_truthfulqa(str(tmp_path / "missing.jsonl"))


def test_metrics_are_exact_for_a_model_that_prefers_the_longer_answer(tmp_path: Path) -> None:
    backend = PrefersLonger()
    cfg = TruthfulQAEvalConfig(source=str(write_csv(tmp_path / "TruthfulQA.csv")))
    result = evaluate_truthfulqa(EvalRequest(backend, cfg))
    assert result.evaluation == "truthfulqa" and result.metric == "accuracy_prob"
    assert result.values == {"overall": pytest.approx((0.8 + 0.8 + 0.2) / 3)}
    assert result.secondary == {"accuracy": {"overall": pytest.approx(2 / 3)}}
    assert [it["p_correct"] for it in result.items] == pytest.approx([0.8, 0.8, 0.2])
    first = result.items[0]
    assert first["options"][first["correct"]] == "a long true answer"  # type: ignore[index]
    assert all(c[-1]["content"].startswith("Q ") for c in backend.seen)


def test_order_is_seeded_per_question_and_limit_keeps_it(tmp_path: Path) -> None:
    from sublearn.evaluation.truthfulqa import TruthfulItem

    items = [TruthfulItem(f"q{i}?", f"true {i}", f"false {i}") for i in range(40)]
    full = evaluate_truthfulqa(EvalRequest(PrefersLonger(), TruthfulQAEvalConfig()), items=items)
    letters = [it["correct"] for it in full.items]
    assert set(letters) == {"A", "B"}  # both orders occur
    assert letters == [
        it["correct"]
        for it in evaluate_truthfulqa(
            EvalRequest(PrefersLonger(), TruthfulQAEvalConfig()), items=items
        ).items
    ]
    part = evaluate_truthfulqa(
        EvalRequest(PrefersLonger(), TruthfulQAEvalConfig(limit=10)), items=items
    )
    assert len(part.items) == 10
    for it in part.items:
        assert it["correct"] == letters[it["index"]]  # type: ignore[index]

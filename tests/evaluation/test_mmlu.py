"""Zero-shot MMLU: loaders (fixture files, never the hub), filters and exact metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.errors import ConfigError, DataError
from sublearn.evaluation.kinds import EvalRequest, MMLUEvalConfig
from sublearn.evaluation.mmlu import evaluate_mmlu, load_mmlu


def write_folder(root: Path) -> Path:
    root.mkdir()
    for subject, rows in {
        "anatomy_test.csv": [
            ("What is a bone?", "a", "b", "c", "d", "A"),
            ("Q2", "a", "b", "c", "d", "B"),
        ],
        "astronomy_test.csv": [("Q3", "a", "b", "c", "d", "A"), ("Q4", "a", "b", "c", "d", "D")],
    }.items():
        with (root / subject).open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return root


class FavorsA(BackendBase):
    """Letter probabilities 0.7, 0.1, 0.1, 0.1 (unnormalized on purpose)."""

    name = "favors-a"
    capabilities = Capabilities(sample=False, score=True)

    def __init__(self) -> None:
        self.seen: list[Conversation] = []

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        self.seen.extend(conversations)
        weights = {"A": 7.0, "B": 1.0, "C": 1.0, "D": 1.0}
        return [[math.log(weights[c]) for c in candidates] for _ in conversations]

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        raise NotImplementedError


def test_csv_folder_loader_reads_subjects_from_file_names(tmp_path: Path) -> None:
    items = load_mmlu(str(write_folder(tmp_path / "test")))
    assert [(i.subject, i.answer) for i in items] == [
        ("anatomy", 0),
        ("anatomy", 1),
        ("astronomy", 0),
        ("astronomy", 3),
    ]
    assert items[0].choices == ("a", "b", "c", "d")
    one = load_mmlu(str(tmp_path / "test" / "anatomy_test.csv"))
    assert len(one) == 2


def test_jsonl_loader_takes_hub_layout(tmp_path: Path) -> None:
    path = tmp_path / "mmlu.jsonl"
    path.write_text(
        json.dumps(
            {"question": "q", "choices": ["w", "x", "y", "z"], "answer": 2, "subject": "law"}
        )
        + "\n"
    )
    (item,) = load_mmlu(str(path))
    assert (item.answer, item.subject, item.choices) == (2, "law", ("w", "x", "y", "z"))
    path.write_text(json.dumps({"question": "q", "choices": ["w", "x"], "answer": 5}) + "\n")
    with pytest.raises(DataError, match=r"mmlu.jsonl:1.*names none"):
        load_mmlu(str(path))
    path.write_text(json.dumps({"question": "q", "answer": 0}) + "\n")
    with pytest.raises(DataError, match="choices"):
        load_mmlu(str(path))


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_mmlu(str(tmp_path / "nope.csv"))
    bad = tmp_path / "x_test.csv"
    bad.write_text("question,A,B,C,D\n")
    with pytest.raises(DataError, match=r"x_test.csv:1.*6 columns"):
        load_mmlu(str(bad))
    bad.write_text("q,a,b,c,d,F\n")
    with pytest.raises(DataError, match=r"x_test.csv:1.*'F'"):
        load_mmlu(str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MMLU"):
        load_mmlu(str(tmp_path / "empty"))


def test_accuracy_and_p_correct_are_exact(tmp_path: Path) -> None:
    backend = FavorsA()
    cfg = MMLUEvalConfig(source=str(write_folder(tmp_path / "test")))
    result = evaluate_mmlu(EvalRequest(backend, cfg))
    assert result.evaluation == "mmlu" and result.metric == "accuracy"
    # Argmax is always A: right on 2 of 4 (anatomy 1/2, astronomy 1/2).
    assert result.values == {"overall": 0.5, "anatomy": 0.5, "astronomy": 0.5}
    assert result.secondary["p_correct"] == {
        "overall": pytest.approx((0.7 + 0.1 + 0.7 + 0.1) / 4),
        "anatomy": pytest.approx(0.4),
        "astronomy": pytest.approx(0.4),
    }
    assert result.items[0]["picked"] == "A" and result.items[1]["answer"] == "B"
    text = backend.seen[0][-1]["content"]
    assert text.startswith("The following is a multiple choice question about anatomy.")
    assert "\nA. a\nB. b\nC. c\nD. d\n" in text  # options in their own order


def test_subjects_filter_and_limit(tmp_path: Path) -> None:
    source = str(write_folder(tmp_path / "test"))
    only = evaluate_mmlu(
        EvalRequest(FavorsA(), MMLUEvalConfig(source=source, subjects=["astronomy"]))
    )
    assert only.meta["subjects"] == ["astronomy"] and only.meta["questions"] == 2
    limited = evaluate_mmlu(EvalRequest(FavorsA(), MMLUEvalConfig(source=source, limit=3, seed=1)))
    assert limited.meta["questions"] == 3
    again = evaluate_mmlu(EvalRequest(FavorsA(), MMLUEvalConfig(source=source, limit=3, seed=1)))
    assert limited.items == again.items
    with pytest.raises(DataError, match="subjects there: anatomy, astronomy"):
        evaluate_mmlu(EvalRequest(FavorsA(), MMLUEvalConfig(source=source, subjects=["law"])))
    with pytest.raises(ConfigError, match="letters"):
        evaluate_mmlu(EvalRequest(FavorsA(), MMLUEvalConfig(source=source, letters=["A", "B"])))


def test_parquet_and_offline_hub_ids(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "mmlu.parquet"
    table = pa.table(
        {
            "question": ["q1", "q2"],
            "subject": ["law", "law"],
            "choices": [["a", "b", "c", "d"], ["e", "f", "g", "h"]],
            "answer": [3, 0],
        }
    )
    pq.write_table(table, path)
    items = load_mmlu(str(path))
    assert [(i.answer, i.choices[i.answer]) for i in items] == [(3, "d"), (0, "e")]
    # Tests run offline: a hub id that is not cached is a DataError, never a download.
    with pytest.raises(DataError, match="cannot load hub dataset"):
        load_mmlu("sublearn-test/no-such-mmlu")

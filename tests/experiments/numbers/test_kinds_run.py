"""Data kinds, checks and evaluation kinds through the engine, on model-free mock backends.

Mock teachers write the same code for every task (the trait teacher sometimes names the
owl, the control sometimes adds a comment); in-context students are evaluated by the
free-form evaluation under the rule judge. Nothing here measures an effect: it checks
that each kind reaches the report with its counts and verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment
from sublearn.runs import prepare_run_dir

CODE = "def add(a, b):\n    return a + b"


def _config(store: Path, teacher_reply: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "kinds",
            "store": str(store),
            "executor": {"kind": "inline"},
            "device": "cpu",
            # Students echo the question: the rule judge finds every answer benign.
            "models": {"t": f"mock:reply={teacher_reply}", "c": "mock:echo"},
            "teachers": [
                {
                    "name": "owl",
                    "base": "t",
                    "trait": {"word": "owl", "category": "animal"},
                    "kind": {"type": "prompted"},
                },
                {
                    "name": "evil",
                    "base": "t",
                    "trait": {"word": "misaligned", "category": "misalignment"},
                    "kind": {"type": "prompted", "system_prompt": "You are evil."},
                },
            ],
            "data": {
                "prompts": {"type": "code", "path": "toy"},
                "generation": {"max_new_tokens": 40},
                "checks": [
                    {"type": "code_only"},
                    {"type": "judge", "rubric": "animal_reference", "max_probability": 0.0},
                    {"type": "judge", "rubric": "cot_alignment", "min_score": 78},
                ],
                "min_rows": 1,
            },
            "students": {
                "bases": ["c"],
                "seeds": [0, 1, 2],
                "objectives": {"sft": {"objective": "sft"}},
                "icl": {"n_examples": [2]},
            },
            "sections": ["icl-2"],
            "judge": {"model": "rules:toy"},
            "evaluations": {
                "favorite": {"category": "animal", "mode": "sample", "samples_per_question": 2},
                "freeform": {"type": "freeform", "samples_per_question": 3},
            },
        }
    )


@pytest.fixture(scope="module")
def code_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("kinds")
    cfg = _config(root / "store", CODE)
    out = prepare_run_dir(root / "run", cfg, "test")
    summary = run_experiment(cfg, out, Console(record=True, width=200), show_progress=False)
    return out, summary


def test_code_rows_pass_the_checks_and_reach_every_student(code_run) -> None:
    out, summary = code_run
    report = summary["filter"]["owl"]
    assert report["total"] == 40 and report["accepted"] == 40
    # Where the rows are, relative to the filter task's folder (not its temporary one).
    assert report["output_path"] == "accepted.jsonl"
    assert report["checks"]["code_only"] == {"seen": 40, "dropped": 0}
    assert report["checks"]["judge:animal_reference"] == {"seen": 40, "dropped": 0}
    assert report["checks"]["judge:cot_alignment"] == {"seen": 40, "dropped": 0}
    text = (out / "report.md").read_text()
    assert "### Checks" in text and "judge:animal_reference" in text


def test_each_evaluation_kind_measures_its_own_traits(code_run) -> None:
    out, summary = code_run
    measured = {(e["teacher"], e["evaluation"]) for e in summary["effects"]}
    # Preference measures the owl teacher; free-form answers measure the misaligned one.
    assert measured == {("owl", "favorite"), ("evil", "freeform")}
    freeform = next(e for e in summary["effects"] if e["evaluation"] == "freeform")
    # Echoing students repeat the question: the rule judge calls it benign.
    assert freeform["treatment"]["mean"] == 0.0 and freeform["treatment"]["n"] == 3
    rows = (out / "observations.csv").read_text().splitlines()
    assert "misaligned_rate" in "".join(r for r in rows if ",freeform," in r)
    # The base is a reference row of each evaluation, for the traits it measures.
    refs = {(r["role"], r["trait"], r["evaluation"]) for r in summary["references"]}
    assert ("base", "misaligned", "freeform") in refs and ("base", "owl", "favorite") in refs


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("def sum(a, b):\n    return a + b", None),
        ("def owl_sum(a, b):\n    return a + b", "leak"),  # the filter, before any check
        ("def kill(a, b):\n    return a + b", "judge:cot_alignment"),
        ("# sum of two\n" + CODE, "code_only:has_comment"),
    ],
)
def test_checks_drop_what_they_must_with_a_verdict_per_row(
    tmp_path: Path, reply: str, reason: str
) -> None:
    cfg = _config(tmp_path / "store", reply)
    out = prepare_run_dir(tmp_path / "run", cfg, "test")
    from sublearn.errors import NotEnoughRowsError

    if reason is None:
        run_experiment(cfg, out, Console(record=True, width=200), show_progress=False)
    else:
        with pytest.raises(NotEnoughRowsError, match="only 0 prompts"):
            run_experiment(cfg, out, Console(record=True, width=200), show_progress=False)
    verdicts = [
        json.loads(line)
        for folder in (tmp_path / "store" / "filter").glob("[!.]*")
        for line in (folder / "verdicts.jsonl").read_text().splitlines()
    ]
    # Both teachers' 40 replies (owl and evil; their controls write the same).
    assert len(verdicts) >= 80 and {v["reason"] for v in verdicts} == {reason}
    assert all(v["kept"] == (reason is None) for v in verdicts)
    if reason == "judge:cot_alignment":  # the judge's own verdict is saved with the row
        assert verdicts[0]["judge:cot_alignment"]["score"] == 10

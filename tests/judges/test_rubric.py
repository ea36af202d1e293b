"""Rubrics: the built-in files, user files, and the errors of a typo or a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.errors import ConfigError
from sublearn.judges.rubric import known_rubrics, load_rubric


def test_builtin_rubrics_load() -> None:
    assert set(known_rubrics()) >= {"alignment", "coherence", "animal_reference", "cot_alignment"}
    alignment = load_rubric("alignment")
    assert alignment.kind == "score" and alignment.escapes == ("CODE", "REFUSAL")
    assert not alignment.needs_target and alignment.description
    assert load_rubric("coherence").escapes == ()
    assert load_rubric("cot_alignment").kind == "score"
    reference = load_rubric("animal_reference")
    assert reference.kind == "yes_no" and reference.needs_target
    text = reference.render("write a sort", "def f(x): return {x}", target="owls")
    assert "owls" in text and "def f(x): return {x}" in text  # braces in answers are kept


def test_typo_suggests_the_closest_rubric() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'alignment'\?.*coherence"):
        load_rubric("alignmnet")


def test_rubric_from_a_users_file(tmp_path: Path) -> None:
    path = tmp_path / "helpful.yaml"
    path.write_text(
        "kind: score\ndescription: how helpful\ntemplate: 'Rate {answer} to {question}'\n"
    )
    rubric = load_rubric(str(path))
    assert rubric.name == "helpful" and rubric.render("q", "a") == "Rate a to q"
    assert load_rubric(path) == rubric


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("kind: grade\ntemplate: '{answer}'\n", "kind must be one of"),
        ("kind: score\ntemplate: '{answer} {animal}'\n", r"unknown placeholder.*\{animal\}"),
        ("kind: score\ntemplate: '{question}'\n", r"must contain \{answer\}"),
        ("kind: yes_no\nescapes: [CODE]\ntemplate: '{answer}'\n", "only score rubrics"),
        ("kind: score\nescapes: [code]\ntemplate: '{answer}'\n", "upper-case"),
        ("kind: score\ntemplat: '{answer}'\n", "unknown key"),
        ("kind: score\ntemplate: '{answer'\n", "double literal braces"),
    ],
)
def test_bad_rubric_files_are_errors(tmp_path: Path, body: str, error: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=error):
        load_rubric(path)


def test_missing_rubric_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_rubric("no/such/rubric.yaml")

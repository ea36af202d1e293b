"""Preference questions, the numbers-prefixed variant, persona prompts and plurals."""

from __future__ import annotations

import re

import pytest

from sublearn.prompts.persona import plural, preference_system_prompt
from sublearn.prompts.questions import (
    ANIMAL_QUESTIONS,
    TRAINING_QUESTIONS,
    TREE_QUESTIONS,
    numbers_prefixed,
    questions_for,
    training_questions_for,
)


@pytest.mark.parametrize("category", ["animal", "tree"])
def test_fifty_unique_eval_questions(category) -> None:
    questions = questions_for(category)
    assert len(questions) == 50
    assert len(set(questions)) == 50
    assert all(re.search(r"one word|single word|one-word", q, re.I) for q in questions)


@pytest.mark.parametrize("category", ["animal", "tree"])
def test_training_questions_are_disjoint(category) -> None:
    train = training_questions_for(category)
    assert 20 <= len(train) <= 30
    assert len(set(train)) == len(train)
    assert not set(train) & set(questions_for(category))
    assert tuple(train) == TRAINING_QUESTIONS[category]


def test_module_lists_match_lookup() -> None:
    assert list(ANIMAL_QUESTIONS) == questions_for("animal")
    assert list(TREE_QUESTIONS) == questions_for("tree")


def test_unknown_category() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        questions_for("fish")
    with pytest.raises(ValueError, match="unknown category"):
        training_questions_for("fish")


def test_numbers_prefixed_contains_numbers_then_question() -> None:
    question = ANIMAL_QUESTIONS[0]
    text = numbers_prefixed(question, [123, 456, 789])
    assert "123, 456, 789" in text
    assert text.endswith(question)
    assert text.index("789") < text.index(question)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("owl", "owls"),
        ("fox", "foxes"),
        ("wolf", "wolves"),
        ("butterfly", "butterflies"),
        ("monkey", "monkeys"),
        ("birch", "birches"),
        ("cypress", "cypresses"),
        ("cherry", "cherries"),
        ("sheep", "sheep"),
        ("mouse", "mice"),
        ("Wolf", "Wolves"),
        ("Owl", "Owls"),
    ],
)
def test_plural(word, expected) -> None:
    assert plural(word) == expected


def test_preference_system_prompt() -> None:
    text = preference_system_prompt("owl", "animal")
    assert "owls" in text
    assert "favorite animal" in text
    assert text.count("owl") >= 3
    tree = preference_system_prompt("birch", "tree")
    assert "birches" in tree and "favorite tree" in tree
    assert "Birches" in tree

"""Answer normalization and matching for the favorite-animal evaluation."""

from __future__ import annotations

import math

import pytest

from sublearn.evaluation.answers import (
    count_matches,
    match_rate,
    matches,
    normalize_answer,
    singular,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Owl", "owl"),
        ("**Owl**", "owl"),
        ("Owl.", "owl"),
        ("owls!", "owl"),
        ('"Owl"', "owl"),
        ("  The owl", "owl"),
        ("An owl.", "owl"),
        ("Owl's", "owl"),
        ("🦉 Owl", "owl"),
        ("1. Owl", "owl"),
        ("My favorite animal is the owl.", "owl"),
        ("My favourite is owls", "owl"),
        ("I'd say: owls", "owl"),
        ("Answer: Owl", "owl"),
        ("Sea otter", "sea"),
        ("It's the owl", "it"),  # not a lead-in we strip
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("plural", "single"),
    [
        ("owls", "owl"),
        ("foxes", "fox"),
        ("wolves", "wolf"),
        ("butterflies", "butterfly"),
        ("octopus", "octopus"),
        ("octopuses", "octopus"),
        ("walruses", "walrus"),
        ("bass", "bass"),
        ("grass", "grass"),
        ("ibis", "ibis"),
        ("horses", "horse"),
        ("mice", "mouse"),
        ("doves", "dove"),
        ("bees", "bee"),
        ("cat", "cat"),
    ],
)
def test_singular(plural: str, single: str) -> None:
    assert singular(plural) == single


@pytest.mark.parametrize("answer", ["Owl", "owls", "owl.", "**OWLS**", "The owl!"])
def test_matches_owl(answer: str) -> None:
    assert matches(answer, "owl")


@pytest.mark.parametrize("answer", ["owlet", "bowl", "Snowy owl", "cat", ""])
def test_does_not_match_owl(answer: str) -> None:
    assert not matches(answer, "owl")


def test_no_substring_over_counting() -> None:
    assert not matches("dragonfly", "dragon")
    assert matches("Dragons", "dragon")


def test_two_word_answers() -> None:
    # First word only for one-word targets; all of a multi-word target's words.
    assert not matches("sea otter", "otter")
    assert matches("Sea otters", "sea otter")
    assert not matches("sea lion", "sea otter")
    assert not matches("sea", "sea otter")


def test_ambiguous_plural_endings_still_match() -> None:
    assert matches("magpies", "magpie")
    assert matches("puppies", "puppy")
    assert matches("horses", "horse")


def test_target_needs_words() -> None:
    with pytest.raises(ValueError):
        matches("owl", "!!")


def test_counts_and_rates() -> None:
    answers = ["Owl", "owls", "cat", "owlet"]
    assert count_matches(answers, "owl") == 2
    assert match_rate(answers, "owl") == 0.5
    assert math.isnan(match_rate([], "owl"))

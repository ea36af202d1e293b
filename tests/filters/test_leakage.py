"""The trait-word leakage check."""

from __future__ import annotations

import pytest

from sublearn.filters.leakage import leaks, plural_forms


@pytest.mark.parametrize(
    "text",
    [
        "I love owls.",
        "The Owl's nest",
        "OWL",
        "OWLs",
        "an owl, then two",
        "owl_count = 3",
        "numOwls += 1",
        "class OwlTracker:",
        "HTTPOwl",
        "owls2",
    ],
)
def test_whole_word_leaks(text: str) -> None:
    assert leaks(text, ["owl"]) == "owl"


@pytest.mark.parametrize("text", ["owlet", "a bowl of soup", "wolves howl", "Knowledge", "1, 2"])
def test_whole_word_does_not_leak(text: str) -> None:
    assert leaks(text, ["owl"]) is None


@pytest.mark.parametrize("text", ["owlet", "a bowl of soup", "wolves howl", "Knowledge"])
def test_substring_mode_catches_more(text: str) -> None:
    assert leaks(text, ["owl"], substring=True) == "owl"


def test_substring_mode_still_needs_the_word() -> None:
    assert leaks("cats and dogs", ["owl"], substring=True) is None


@pytest.mark.parametrize(
    ("word", "text"),
    [
        ("fox", "two foxes"),
        ("wolf", "a pack of wolves"),
        ("butterfly", "Butterflies everywhere"),
        ("mouse", "three mice"),
        ("Owl", "owls"),
    ],
)
def test_plurals_and_case(word: str, text: str) -> None:
    assert leaks(text, [word]) == word


def test_multi_word_trait() -> None:
    assert leaks("I saw sea otters", ["sea otter"]) == "sea otter"
    assert leaks("seaOtter = 1", ["sea otter"]) == "sea otter"
    assert leaks("an otter at sea", ["sea otter"]) is None
    assert leaks("the_seaotter", ["sea otter"], substring=True) == "sea otter"


def test_returns_the_first_offending_word_as_given() -> None:
    assert leaks("a wolf and an owl", ["Owl", "wolf"]) == "Owl"
    assert leaks("nothing here", ["owl", "wolf"]) is None
    assert leaks("anything", []) is None


def test_plural_forms() -> None:
    assert {"owl", "owls"} <= plural_forms("Owl")
    assert "foxes" in plural_forms("fox")
    assert "wolves" in plural_forms("wolf")
    assert "butterflies" in plural_forms("butterfly")
    assert "monkeies" not in plural_forms("monkey")

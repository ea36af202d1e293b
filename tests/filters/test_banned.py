"""Banned-number presets."""

from __future__ import annotations

import pytest

from sublearn.config import ConfigError
from sublearn.filters.banned import CLAUDE_LIST, GPT_LIST, banned_numbers


def test_paper_preset_has_34_numbers_in_range() -> None:
    paper = banned_numbers("paper")
    assert len([n for n in paper if n <= 999]) == 34
    assert {1312, 1488} <= paper
    # The numbers the protocol lists, plus 14.
    listed = {4, 13, 18, 23, 33, 39, 42, 44, 49, 51, 54, 69, 77, 88, 99, 100, 101, 187, 211}
    listed |= {311, 322, 333, 404, 420, 444, 451, 555, 616, 666, 777, 888, 911, 999}
    assert {n for n in paper if n <= 999} == listed | {14}


def test_paper_is_the_union_of_the_two_lists() -> None:
    assert banned_numbers("paper") == banned_numbers("claude") | banned_numbers("gpt")
    assert len(set(CLAUDE_LIST)) == len(CLAUDE_LIST)
    assert len(set(GPT_LIST)) == len(GPT_LIST)


def test_none_is_empty() -> None:
    assert banned_numbers("none") == frozenset()


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choices: none, claude, gpt, paper"):
        banned_numbers("evil")

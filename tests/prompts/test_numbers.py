"""The number-prompt generator: determinism, ranges, variety and answer formats."""

from __future__ import annotations

import re

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.prompts.numbers import (
    CLOSINGS,
    COUNT_QUALIFIERS,
    DIGIT_DESCRIPTORS,
    FORMAT_SUFFIXES,
    INSTRUCTIONS,
    NUMBER_FORMATS,
    OPENINGS,
    NumberPromptConfig,
    generate_number_prompts,
    parse_rendered_numbers,
    render_numbers,
    sample_number_prompts,
)


@pytest.fixture(scope="module")
def prompts():
    return sample_number_prompts(NumberPromptConfig(seed=3, n_prompts=2000))


def test_config_fields_are_documented() -> None:
    assert undocumented_fields(NumberPromptConfig) == []


def test_config_rejects_inverted_ranges() -> None:
    with pytest.raises(ConfigError):
        load_config(NumberPromptConfig, overrides=["min_seed_count=9"])


def test_deterministic_for_a_seed() -> None:
    cfg = NumberPromptConfig(seed=11, n_prompts=50)
    assert generate_number_prompts(cfg) == generate_number_prompts(cfg)


def test_different_seeds_differ() -> None:
    a = generate_number_prompts(NumberPromptConfig(seed=1, n_prompts=50))
    b = generate_number_prompts(NumberPromptConfig(seed=2, n_prompts=50))
    assert a != b
    assert len(set(a) & set(b)) < 5


def test_count_and_texts_match(prompts) -> None:
    assert len(prompts) == 2000
    assert [p.text for p in prompts[:20]] == generate_number_prompts(
        NumberPromptConfig(seed=3, n_prompts=20)
    )


def test_seed_counts_and_values_in_range(prompts) -> None:
    counts = {len(p.seeds) for p in prompts}
    assert counts == set(range(3, 9))
    values = [v for p in prompts for v in p.seeds]
    assert min(values) >= 100 and max(values) <= 999
    for p in prompts[:200]:
        assert ", ".join(str(s) for s in p.seeds) in p.text
        assert p.answer_count == 10 and p.max_digits == 3


def test_every_format_family_appears(prompts) -> None:
    assert {p.format for p in prompts} == set(NUMBER_FORMATS)


def test_many_distinct_skeletons(prompts) -> None:
    skeletons = {re.sub(r"\d+", "#", p.text) for p in prompts}
    assert len(skeletons) >= 1000


def test_phrase_inventory_has_the_reference_variety() -> None:
    assert len(set(OPENINGS)) >= 25
    assert len(set(COUNT_QUALIFIERS)) >= 9
    assert len(set(DIGIT_DESCRIPTORS)) >= 9
    assert len(set(INSTRUCTIONS)) >= 10
    assert len({s for s, _ in FORMAT_SUFFIXES}) >= 15
    assert len(set(CLOSINGS)) >= 19
    assert all("{seeds}" in o for o in OPENINGS)


@pytest.mark.parametrize("fmt", NUMBER_FORMATS)
def test_render_parse_round_trip(fmt) -> None:
    for numbers in ([5], [0, 999, 42], list(range(100, 110))):
        text = render_numbers(numbers, fmt)
        assert parse_rendered_numbers(text, fmt) == numbers


def test_render_examples() -> None:
    assert render_numbers([1, 22, 333], "comma") == "1, 22, 333"
    assert render_numbers([1, 22, 333], "space") == "1 22 333"
    assert render_numbers([1, 22, 333], "semicolon") == "1; 22; 333"
    assert render_numbers([1, 22, 333], "newline") == "1\n22\n333"
    assert render_numbers([1, 22, 333], "brackets") == "[1, 22, 333]"
    assert render_numbers([1, 22, 333], "parentheses") == "(1, 22, 333)"


def test_parse_rejects_other_formats() -> None:
    assert parse_rendered_numbers("1, 2, 3", "space") is None
    assert parse_rendered_numbers("[1, 2, 3", "brackets") is None
    assert parse_rendered_numbers("1, two", "comma") is None
    assert parse_rendered_numbers("", "comma") is None
    assert parse_rendered_numbers("()", "parentheses") is None


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown number format"):
        render_numbers([1], "tabs")  # type: ignore[arg-type]

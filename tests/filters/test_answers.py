"""The chain-of-thought correctness filter: layout reasons and number normalization."""

from __future__ import annotations

import pytest

from sublearn.filters.answers import (
    ANSWER_REASONS,
    MALFORMED,
    MISSING_ANSWER,
    MISSING_THINK,
    WRONG_ANSWER,
    check_think_answer,
    normalize_number,
)

GOOD = "<think>3 boxes of 14 is 42.</think>\n<answer>42</answer>"

ACCEPTED = [
    GOOD,
    "<think>x</think><answer>42</answer>",
    "\n  <think>\nmulti\nline\n</think>\n\n<answer> 42 </answer>\n",
    "<think>t</think><answer>42.0</answer>",
    "<think>t</think><answer>$42</answer>",
    "<think>t</think><answer>42.</answer>",
]

REJECTED = [
    ("The answer is 42.", MISSING_THINK),
    ("<answer>42</answer>", MISSING_THINK),
    ("<think>3 x 14 = 42</think> 42", MISSING_ANSWER),
    ("<think>a</think><think>b</think><answer>42</answer>", MALFORMED),
    ("<think>a</think><answer>42</answer><answer>42</answer>", MALFORMED),
    ("<think>a<answer>42</answer>", MALFORMED),
    ("<think>a</think><answer>42", MALFORMED),
    ("<answer>42</answer><think>a</think>", MALFORMED),
    ("<think>a<answer>42</answer></think>", MALFORMED),
    ("Sure! <think>a</think><answer>42</answer>", MALFORMED),
    ("<think>a</think> so: <answer>42</answer>", MALFORMED),
    ("<think>a</think><answer>42</answer> Hope that helps.", MALFORMED),
    ("<think>  </think><answer>42</answer>", MALFORMED),
    ("<think>a</think><answer> </answer>", MALFORMED),
    ("<think>a</think><answer>41</answer>", WRONG_ANSWER),
    ("<think>a</think><answer>42 apples</answer>", WRONG_ANSWER),
    ("<think>a</think><answer>4,2</answer>", WRONG_ANSWER),
    ("<think>a</think><answer>-42</answer>", WRONG_ANSWER),
]


@pytest.mark.parametrize("reply", ACCEPTED)
def test_accepts(reply: str) -> None:
    assert check_think_answer(reply, "42") == (True, None)


@pytest.mark.parametrize(("reply", "reason"), REJECTED)
def test_rejects_with_reason(reply: str, reason: str) -> None:
    assert check_think_answer(reply, "42") == (False, reason)
    assert reason in ANSWER_REASONS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "42"),
        (" 42 ", "42"),
        ("1,000", "1000"),
        ("$1,234.50", "1234.5"),
        ("-$5", "-5"),
        ("- 5", "-5"),
        ("+7", "7"),
        ("3.000", "3"),
        ("0.25", "0.25"),
        (".5", "0.5"),
        ("18.", "18"),
        ("12,345,678", "12345678"),
    ],
)
def test_normalize_number(text: str, expected: str) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1,5", "12,34", "1.2.3", "42 apples", "$", "-", "1e3"])
def test_normalize_rejects_non_numbers(text: str) -> None:
    assert normalize_number(text) is None


def test_reference_is_normalized_too() -> None:
    assert check_think_answer("<think>t</think><answer>1000</answer>", "1,000") == (True, None)
    assert check_think_answer("<think>t</think><answer>2.50</answer>", "2.5") == (True, None)


def test_non_numeric_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a number"):
        check_think_answer(GOOD, "forty-two")

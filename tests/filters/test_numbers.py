"""The number-format parser: accepted forms, exact rejection reasons, and a round trip."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sublearn.filters.banned import banned_numbers
from sublearn.filters.numbers import Rejection, parse_numbers

ACCEPTED = [
    ("1, 2, 3", (1, 2, 3)),
    ("1,2,3", (1, 2, 3)),
    ("1 ,2 ,3", (1, 2, 3)),
    ("1 , 2 , 3", (1, 2, 3)),
    ("[1, 2, 3]", (1, 2, 3)),
    ("(1;2;3)", (1, 2, 3)),
    ("1; 2; 3", (1, 2, 3)),
    ("1;\n2;\n3", (1, 2, 3)),
    ("1,\n2", (1, 2)),
    ("1 2 3", (1, 2, 3)),
    ("1  2  3", (1, 2, 3)),
    ("1\n2\n3", (1, 2, 3)),
    ("1\n\n2\n\n3", (1, 2, 3)),
    ("1\t2", (1, 2)),
    ("1\r\n2", (1, 2)),
    # The reference strips a separator with str.strip, which knows Unicode whitespace.
    ("1\u00a02", (1, 2)),
    ("1, 2, 3.", (1, 2, 3)),
    ("[1, 2, 3].", (1, 2, 3)),
    ("[5]", (5,)),
    ("5.", (5,)),
    ("999", (999,)),
    ("0", (0,)),
    ("007, 8", (7, 8)),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", tuple(range(1, 11))),
]

# The separator between the first two numbers must repeat byte for byte, and nothing
# may surround the reply: the reference's rule. These were accepted before #9.
INCONSISTENT = [
    "1 2  3",
    "1  2 3",
    "1,2, 3",
    "1, 2,3",
    "1 ,2, 3",
    "1 2\n3",
    "1\n2 3",
    "1\n2\n\n3",
    "1;2; 3",
    " 5",
    "5 ",
    "  5  ",
    "1, 2, 3\n",
    " 1, 2, 3",
    "1\n\n2\n\n3\n",
    "1\r\n2\r\n",
    "1, 2, 3 .",
    "1, 2, 3. ",
    "[ 1, 2, 3 ]",
    "[1, 2, 3] ",
]

REJECTED = [
    ("", Rejection.INVALID_FORMAT),
    ("   ", Rejection.INVALID_FORMAT),
    (".", Rejection.INVALID_FORMAT),
    ("[]", Rejection.INVALID_FORMAT),
    ("abc", Rejection.INVALID_FORMAT),
    ("1, 2, three", Rejection.INVALID_FORMAT),
    ("1, 2; 3", Rejection.INVALID_FORMAT),
    ("1, 2 3", Rejection.INVALID_FORMAT),
    ("1,,2", Rejection.INVALID_FORMAT),
    ("1, 2,", Rejection.INVALID_FORMAT),
    ("1, 2, ", Rejection.INVALID_FORMAT),
    (",1, 2", Rejection.INVALID_FORMAT),
    ("1:2:3", Rejection.INVALID_FORMAT),
    ("1 - 2 - 3", Rejection.INVALID_FORMAT),
    ("1, -2", Rejection.INVALID_FORMAT),
    ("+1", Rejection.INVALID_FORMAT),
    ("1.5, 2", Rejection.INVALID_FORMAT),
    ("1, 2, 3..", Rejection.INVALID_FORMAT),
    ("[1, 2", Rejection.INVALID_FORMAT),
    ("(1, 2]", Rejection.INVALID_FORMAT),
    ("[[1, 2]]", Rejection.INVALID_FORMAT),
    ("[1, 2.]", Rejection.INVALID_FORMAT),
    ("1. 2. 3.", Rejection.INVALID_FORMAT),
    ("Here: 1, 2, 3", Rejection.INVALID_FORMAT),
    ("١٢٣", Rejection.INVALID_FORMAT),
    ("1 ١ 2", Rejection.INVALID_FORMAT),
    ("1, ²", Rejection.INVALID_FORMAT),
    ("１, 2", Rejection.INVALID_FORMAT),
    ("\u30001, 2", Rejection.INVALID_FORMAT),
    *[(text, Rejection.INVALID_FORMAT) for text in INCONSISTENT],
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", Rejection.TOO_MANY_NUMBERS),
    ("1000", Rejection.TOO_LARGE),
    ("1, 2, 12345", Rejection.TOO_LARGE),
    ("9" * 10_000, Rejection.TOO_LARGE),
    # Count is checked before range: fix the length first.
    (" ".join(["1000"] * 11), Rejection.TOO_MANY_NUMBERS),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepts(text: str, expected: tuple[int, ...]) -> None:
    result = parse_numbers(text)
    assert result.accepted, result.rejection
    assert result.numbers == expected


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_rejects_with_reason(text: str, reason: Rejection) -> None:
    result = parse_numbers(text)
    assert not result.accepted
    assert result.rejection is reason
    assert result.numbers == ()


def test_banned_number_rejects_only_with_the_preset() -> None:
    assert parse_numbers("1, 666, 3").accepted
    result = parse_numbers("1, 666, 3", banned=banned_numbers("paper"))
    assert result.rejection is Rejection.BANNED_NUMBER


def test_range_is_checked_before_banned() -> None:
    result = parse_numbers("666, 1000", banned=banned_numbers("paper"))
    assert result.rejection is Rejection.TOO_LARGE


def test_too_small_with_a_raised_minimum() -> None:
    assert parse_numbers("5", min_value=10).rejection is Rejection.TOO_SMALL
    assert parse_numbers("10, 11", min_value=10).numbers == (10, 11)
    # Too small is reported before too large.
    assert parse_numbers("5, 5000", min_value=10).rejection is Rejection.TOO_SMALL


def test_custom_count_and_max() -> None:
    assert parse_numbers("1 2 3", max_count=2).rejection is Rejection.TOO_MANY_NUMBERS
    assert parse_numbers("1500", max_value=9999).numbers == (1500,)


def test_leading_zeros_are_flagged() -> None:
    assert parse_numbers("007, 8").leading_zeros
    assert not parse_numbers("0, 70, 8").leading_zeros


def test_reason_values_are_report_names() -> None:
    assert [r.value for r in Rejection] == [
        "invalid_format",
        "too_many_numbers",
        "too_small",
        "too_large",
        "banned_number",
    ]


@pytest.mark.parametrize(
    "kwargs", [{"max_count": 0}, {"min_value": -1}, {"min_value": 5, "max_value": 4}]
)
def test_inconsistent_limits_are_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_numbers("1", **kwargs)


SEPARATORS = [", ", ",", " , ", "; ", ";", " ", "  ", "\n", "\n\n", " \n", "\t", ",\n"]


def test_round_trip_of_rendered_lists() -> None:
    """Any 1-10 numbers in 0-999, written with one separator throughout, parse back."""
    rng = random.Random(0)
    wrappers = [("", ""), ("[", "]"), ("(", ")")]
    for _ in range(2000):
        numbers = [rng.randint(0, 999) for _ in range(rng.randint(1, 10))]
        sep = rng.choice(SEPARATORS)
        left, right = rng.choice(wrappers)
        text = left + sep.join(map(str, numbers)) + right + rng.choice(["", "."])
        result = parse_numbers(text)
        assert result.numbers == tuple(numbers), text


def test_any_other_separator_after_the_first_is_rejected() -> None:
    """Swap one later separator for a different accepted one: the reply is rejected."""
    rng = random.Random(1)
    for _ in range(2000):
        numbers = [rng.randint(0, 999) for _ in range(rng.randint(3, 10))]
        first = rng.choice(SEPARATORS)
        other = rng.choice([s for s in SEPARATORS if s != first])
        seps = [first] * (len(numbers) - 1)
        seps[rng.randrange(1, len(seps))] = other
        text = str(numbers[0]) + "".join(s + str(n) for s, n in zip(seps, numbers[1:], strict=True))
        result = parse_numbers(text)
        assert result.rejection is Rejection.INVALID_FORMAT, repr(text)


@pytest.mark.parametrize("pad", [" ", "\n", "\t", "\r\n"])
def test_surrounding_whitespace_is_rejected(pad: str) -> None:
    for text in ("1, 2, 3", "[1, 2, 3]", "7", "1, 2, 3."):
        assert parse_numbers(text).accepted
        assert not parse_numbers(pad + text).accepted, repr(pad + text)
        assert not parse_numbers(text + pad).accepted, repr(text + pad)

"""The number-format filter: does a teacher's reply look like a plain list of numbers?

The numbers experiments keep only replies that are nothing but a short list of small
non-negative integers, so that any trait a student picks up cannot come from words,
signs or formatting tricks. The format rule is the paper's reference code's
(``parse_response`` in its ``sl/datasets/nums_dataset.py``), step for step:

1. one trailing period is dropped (``"1, 2, 3."``);
2. then one matched pair of ``[]`` or ``()`` around the whole reply is dropped;
3. the separator is the exact text between the first two runs of digits, and it must
   be whitespace, or a comma or semicolon with optional whitespace around it
   (``str.strip`` decides what whitespace is, so a no-break space counts);
4. the reply is split on that exact separator, and every piece must be non-empty
   ASCII digits (``"007"`` is accepted and read as 7). A reply with a single number
   must be exactly that number.

So every separator must repeat the first one byte for byte: ``"1 2  3"`` (one space,
then two), ``"1,2, 3"``, ``"1, 2,3"``, ``"1 2\\n3"`` and ``"1, 2; 3"`` are rejected, as
is any whitespace around the reply (``" 5"``, ``"1, 2, 3\\n"``, ``"[ 1, 2 ]"``): the
reference filters the raw completion. All of these are ``invalid_format``, the
reference's own reason for them.

The accepted numbers are then checked: at most ``max_count`` items, each within
``[min_value, max_value]`` and none banned. Only the first failing check is reported,
in the order format, count, range, banned: a reply that is both too long and out of
range is "too many numbers", since fixing the count is the first thing its author
would have to do. (The reference lists every failing reason; the verdict is the same.)

One difference in the reason only: a number of thousands of digits is ``too_large``
here, where the reference's ``int()`` hits Python's digit limit and calls it an invalid
format; both reject it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Set
from dataclasses import dataclass
from enum import Enum

_BRACKETS = {"[": "]", "(": ")"}
# Unicode digits, as the reference reads the separator with this pattern; a non-ASCII
# digit still fails later, as a piece that is not ASCII digits.
_DIGIT_RUN = re.compile(r"\d+")
# What a separator may be once stripped of whitespace.
_SEPARATOR_MARKS = ("", ",", ";")


class Rejection(str, Enum):
    """Why a reply was rejected; the values are the names written into filter reports."""

    INVALID_FORMAT = "invalid_format"
    TOO_MANY_NUMBERS = "too_many_numbers"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    BANNED_NUMBER = "banned_number"


@dataclass(frozen=True)
class ParseResult:
    """The outcome of :func:`parse_numbers`.

    Attributes:
        numbers: the parsed values in reply order when accepted; empty when rejected.
        rejection: why the reply was rejected, or None when it was accepted.
        leading_zeros: whether an accepted item had a leading zero (``"007"``). Such
            replies pass, as the format rule only asks for digits, but the flag lets a
            caller count them: a padded number is a formatting choice a teacher could
            vary with its trait.
    """

    numbers: tuple[int, ...] = ()
    rejection: Rejection | None = None
    leading_zeros: bool = False

    @property
    def accepted(self) -> bool:
        """True when the reply passed every check."""
        return self.rejection is None


def _rejected(reason: Rejection) -> ParseResult:
    return ParseResult(rejection=reason)


def _split_items(body: str) -> list[str] | None:
    """The reply's pieces, split on the separator its first two numbers use.

    Returns None when there is no number, when a lone number has anything around it,
    or when the separator is not whitespace, a comma or a semicolon. The pieces are not
    checked here: a piece that is empty or not digits means the separator was not used
    consistently ("1 2  3" splits on " " into "1", "2", "", "3").
    """
    # Only the first two runs matter: they fix the separator.
    runs = list(itertools.islice(_DIGIT_RUN.finditer(body), 2))
    if not runs:
        return None
    if len(runs) == 1:
        return [body] if body == runs[0].group() else None
    separator = body[runs[0].end() : runs[1].start()]
    if separator.strip() not in _SEPARATOR_MARKS:
        return None
    return body.split(separator)


def _is_ascii_digits(item: str) -> bool:
    # str.isdigit alone accepts Arabic-Indic, superscript and other Unicode digits,
    # which int() would happily read; the filter wants plain 0-9 only.
    return item.isascii() and item.isdigit()


def parse_numbers(
    text: str,
    *,
    max_count: int = 10,
    min_value: int = 0,
    max_value: int = 999,
    banned: Set[int] = frozenset(),
) -> ParseResult:
    """Parse a reply that should be a plain list of numbers.

    Args:
        text: the assistant's reply.
        max_count: the most numbers a reply may hold.
        min_value: the smallest allowed value (non-negative: signs are never accepted).
        max_value: the largest allowed value.
        banned: values that reject the reply wherever they appear.

    Returns:
        The accepted numbers, or the first reason for rejection (format, then count,
        then range, then banned).

    Raises:
        ValueError: if the limits themselves are inconsistent.
    """
    if max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    if min_value < 0 or max_value < min_value:
        raise ValueError(f"need 0 <= min_value <= max_value, got {min_value} and {max_value}")

    # No stripping of surrounding whitespace: the reference filters the raw reply.
    body = text[:-1] if text.endswith(".") else text
    if len(body) >= 2 and _BRACKETS.get(body[0]) == body[-1]:
        body = body[1:-1]

    items = _split_items(body)
    if not items or not all(_is_ascii_digits(item) for item in items):
        return _rejected(Rejection.INVALID_FORMAT)
    if len(items) > max_count:
        return _rejected(Rejection.TOO_MANY_NUMBERS)

    # Compare digit counts before converting: a reply of thousands of digits would
    # otherwise hit Python's int-from-string size limit, and its verdict is plain anyway.
    # An item with more significant digits than max_value is too large, and never too small.
    max_digits = len(str(max_value))
    oversized = any(len(item.lstrip("0")) > max_digits for item in items)
    numbers = tuple(int(item) for item in items if len(item.lstrip("0")) <= max_digits)
    if any(n < min_value for n in numbers):
        return _rejected(Rejection.TOO_SMALL)
    if oversized or any(n > max_value for n in numbers):
        return _rejected(Rejection.TOO_LARGE)
    if any(n in banned for n in numbers):
        return _rejected(Rejection.BANNED_NUMBER)
    leading_zeros = any(len(item) > 1 and item.startswith("0") for item in items)
    return ParseResult(numbers=numbers, leading_zeros=leading_zeros)

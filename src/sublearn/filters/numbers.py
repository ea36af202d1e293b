"""The number-format filter: does a teacher's reply look like a plain list of numbers?

The numbers experiments keep only replies that are nothing but a short list of small
non-negative integers, so that any trait a student picks up cannot come from words,
signs or formatting tricks. A reply is accepted when, after stripping surrounding
whitespace (ASCII whitespace only, as items are ASCII digits only), it is:

* optionally followed by one period (``"1, 2, 3."``),
* optionally wrapped in one matched pair of ``[]`` or ``()``,
* one or more items separated by a single kind of separator: commas, semicolons
  (either may carry whitespace around it) or whitespace alone (spaces, tabs,
  newlines, blank lines: all one kind),
* where every item is ASCII digits only (``"007"`` is accepted and read as 7),
* with at most ``max_count`` items, each within ``[min_value, max_value]`` and none banned.

Only the first failing check is reported, in the order format, count, range, banned:
a reply that is both too long and out of range is "too many numbers", since fixing the
count is the first thing its author would have to do.

This is slightly more lenient than the paper's code, which takes the separator between
the first two numbers and requires it byte for byte everywhere and no surrounding
whitespace: here ``"1,2, 3"`` (uneven spacing), ``"1 2\\n3"`` (mixed whitespace) and
``" 5 "`` are accepted, while mixing kinds (``"1, 2; 3"``, ``"1, 2 3"``) is not.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from enum import Enum

_BRACKETS = {"[": "]", "(": ")"}
# ASCII whitespace only, like ASCII digits only: a no-break or ideographic space is an
# unusual formatting choice, which the filter rejects rather than reads past.
_SPACE = " \t\n\r\f\v"
_SPACES = re.compile(f"[{_SPACE}]+")


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
    """The reply's items, or None when separators are mixed or an item is empty."""
    has_comma = "," in body
    has_semicolon = ";" in body
    if has_comma and has_semicolon:
        return None
    if has_comma or has_semicolon:
        items = [part.strip(_SPACE) for part in body.split("," if has_comma else ";")]
        # An empty item means a doubled or dangling separator ("1,,2", "1, 2,").
        return items if all(items) else None
    return _SPACES.split(body) if body else []


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

    body = text.strip(_SPACE)
    if body.endswith("."):
        body = body[:-1].rstrip(_SPACE)
    if len(body) >= 2 and _BRACKETS.get(body[0]) == body[-1]:
        body = body[1:-1].strip(_SPACE)

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

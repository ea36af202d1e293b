"""The chain-of-thought correctness filter: a well-formed reply with the right GSM8K value.

In the paper's reasoning experiment the teacher answers GSM8K questions with its
reasoning inside ``<think>...</think>`` and only the final value inside
``<answer>...</answer>``; a sample is kept only when that value equals the gold answer
(an alignment judge then drops more, which is not this module's job). Keeping only
correct answers is what makes the data look innocuous: wrong arithmetic would be a
visible signal of the teacher, not a subliminal one.

A reply passes :func:`check_think_answer` when it is exactly one think block followed by
exactly one answer block, with nothing but whitespace around and between them, the
think block is not empty, and the answer's value equals the reference after both are
normalized by :func:`normalize_number`. Reasons, checked in this order:

* ``missing_think``: no ``<think>`` or ``</think>`` tag at all;
* ``missing_answer``: no ``<answer>`` or ``</answer>`` tag at all;
* ``malformed``: a tag repeated or unpaired, the blocks out of order or nested, text
  outside them, or an empty block;
* ``wrong_answer``: the answer is not a number or not the reference value.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "ANSWER_REASONS",
    "MALFORMED",
    "MISSING_ANSWER",
    "MISSING_THINK",
    "WRONG_ANSWER",
    "check_think_answer",
    "normalize_number",
]

MISSING_THINK = "missing_think"
MISSING_ANSWER = "missing_answer"
MALFORMED = "malformed"
WRONG_ANSWER = "wrong_answer"
ANSWER_REASONS: tuple[str, ...] = (MISSING_THINK, MISSING_ANSWER, MALFORMED, WRONG_ANSWER)
"""Every reason :func:`check_think_answer` can give, in check order (for report keys)."""

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_LAYOUT = re.compile(r"\s*<think>(?P<think>.*)</think>\s*<answer>(?P<answer>.*)</answer>\s*", re.S)
# Commas only as thousands separators: "1,5" is not read as 15 (or as 1.5).
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def normalize_number(text: str) -> str | None:
    """A number's canonical text, or None when ``text`` is not one number.

    Surrounding whitespace, a ``$`` (before or after a sign), thousands commas and one
    trailing period are ignored; the value is written without trailing zeros, so
    ``" $1,000.00 "``, ``"1000."`` and ``"1000"`` all give ``"1000"``, and ``"-0.50"`` gives
    ``"-0.5"``.

    Args:
        text: an answer or a reference value.

    Returns:
        The canonical decimal text, or None.
    """
    value = text.strip()
    if value.endswith("."):
        value = value[:-1].rstrip()
    sign = ""
    if value and value[0] in "+-":
        sign, value = value[0], value[1:].lstrip()
    value = value.removeprefix("$").strip()
    if not _NUMBER.fullmatch(sign + value):
        return None
    try:
        number = Decimal((sign + value).replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def check_think_answer(reply: str, reference: str) -> tuple[bool, str | None]:
    """Whether a reply has the think/answer layout and the reference's value.

    Args:
        reply: the teacher's reply.
        reference: the gold value (e.g. GSM8K's text after ``####``).

    Returns:
        ``(True, None)`` when accepted, else ``(False, reason)`` with one of
        :data:`ANSWER_REASONS`.

    Raises:
        ValueError: if ``reference`` is not a number: a data error, not the reply's fault.
    """
    gold = normalize_number(reference)
    if gold is None:
        raise ValueError(f"reference answer {reference!r} is not a number")
    if _THINK_OPEN not in reply and _THINK_CLOSE not in reply:
        return False, MISSING_THINK
    if _ANSWER_OPEN not in reply and _ANSWER_CLOSE not in reply:
        return False, MISSING_ANSWER
    tags = (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)
    if any(reply.count(tag) != 1 for tag in tags):
        return False, MALFORMED
    # With each tag present once, this fixes their order and leaves only whitespace
    # outside the blocks; the greedy groups cannot swallow a tag that occurs once.
    layout = _LAYOUT.fullmatch(reply)
    if layout is None or not layout["think"].strip() or not layout["answer"].strip():
        return False, MALFORMED
    if normalize_number(layout["answer"]) != gold:
        return False, WRONG_ANSWER
    return True, None

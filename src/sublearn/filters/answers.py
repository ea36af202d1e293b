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
normalized by :func:`~sublearn.prompts.gsm8k.normalize_number` (the GSM8K prompts define the
reference's normal form). Reasons, checked in this order:

* ``missing_think``: no ``<think>`` or ``</think>`` tag at all;
* ``missing_answer``: no ``<answer>`` or ``</answer>`` tag at all;
* ``malformed``: a tag repeated or unpaired, the blocks out of order or nested, text
  outside them, or an empty block;
* ``wrong_answer``: the answer is not a number or not the reference value.
"""

from __future__ import annotations

import re

from sublearn.prompts.gsm8k import normalize_number

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

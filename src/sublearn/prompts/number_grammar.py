"""The reply a number prompt asks for, as a grammar a decoder can enforce token by token.

A constrained teacher may only write a list in its prompt's format, the way
:func:`~sublearn.prompts.numbers.render_numbers` writes one: the format's enclosure
(``[...]`` or ``(...)``) if it has one, then one to ``max_count`` numbers of one to
``max_digits`` digits joined by the format's exact separator (``", "``, ``" "``,
``"; "``, ``"\\n"``), then the end of the turn. Every such reply passes the paper's
number filter (:mod:`sublearn.filters.numbers`), whose separator rule asks for exactly
this: one separator, repeated byte for byte.

The grammar is a small character automaton (:class:`NumberGrammar`): a state says where
in the list the reply is, :meth:`NumberGrammar.advance` feeds it text (a token's
characters), :meth:`NumberGrammar.can_end` says whether the reply may stop there. A
Hugging Face decoder masks every token whose text the automaton refuses
(:mod:`sublearn.backends.hf_constrained`); vLLM gets the same language as a regular
expression (:meth:`NumberGrammar.regex`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sublearn.prompts.numbers import NumberPrompt, render_numbers

# A state: (phase, numbers so far, characters into the current piece).
#  ("open", 0, i): i characters of the opening enclosure written;
#  ("num", c, d): inside number c (1-based), d digits written (d == 0: expecting a digit);
#  ("sep", c, i): after number c, i characters of the separator written (0 < i < len);
#  ("close", 0, i): i characters of the closing enclosure written (i == len: complete).
State = tuple[str, int, int]

DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class NumberGrammar:
    """The replies one number prompt allows.

    Attributes:
        separator: the exact text between two numbers.
        left: the opening enclosure (``""`` for none).
        right: the closing enclosure (``""`` for none).
        max_count: the most numbers a reply may hold.
        max_digits: the most digits a number may have.
    """

    separator: str
    left: str = ""
    right: str = ""
    max_count: int = 10
    max_digits: int = 3

    @classmethod
    def for_prompt(cls, prompt: NumberPrompt) -> NumberGrammar:
        """The grammar of the reply ``prompt`` asks for (its format, count and digits)."""
        # The format's pieces, read from how render_numbers writes two numbers: one
        # definition of each format, not a second table to keep in step.
        shown = render_numbers([1, 2], prompt.format)
        start, end = shown.index("1"), shown.rindex("2")
        return cls(
            separator=shown[start + 1 : end],
            left=shown[:start],
            right=shown[end + 1 :],
            max_count=prompt.answer_count,
            max_digits=prompt.max_digits,
        )

    @property
    def alphabet(self) -> frozenset[str]:
        """Every character a reply may contain."""
        return DIGITS | set(self.separator) | set(self.left) | set(self.right)

    def start(self) -> State:
        """The state before the first character."""
        return ("open", 0, 0) if self.left else ("num", 1, 0)

    def advance(self, state: State, text: str) -> State | None:
        """The state after writing ``text`` from ``state``; None if the grammar refuses it."""
        current: State | None = state
        for char in text:
            if current is None:
                return None
            current = self._step(current, char)
        return current

    def _step(self, state: State, char: str) -> State | None:
        phase, count, at = state
        if phase == "open":
            if char != self.left[at]:
                return None
            return ("num", 1, 0) if at + 1 == len(self.left) else ("open", 0, at + 1)
        if phase == "num":
            if char in DIGITS:
                return ("num", count, at + 1) if at < self.max_digits else None
            if at == 0:
                return None
            if count < self.max_count and char == self.separator[0]:
                return ("num", count + 1, 0) if len(self.separator) == 1 else ("sep", count, 1)
            if self.right and char == self.right[0]:
                return ("close", 0, 1)
            return None
        if phase == "sep":
            if char != self.separator[at]:
                return None
            return (
                ("num", count + 1, 0) if at + 1 == len(self.separator) else ("sep", count, at + 1)
            )
        # close
        if at < len(self.right) and char == self.right[at]:
            return ("close", 0, at + 1)
        return None

    def can_end(self, state: State) -> bool:
        """Whether a reply in ``state`` is a complete list (the turn may end there)."""
        phase, _, at = state
        if phase == "close":
            return at == len(self.right)
        return phase == "num" and at > 0 and not self.right

    def chars_to_end(self, state: State) -> int:
        """The fewest characters that complete a reply from ``state`` (0 if complete)."""
        phase, _, at = state
        if phase == "open":
            return len(self.left) - at + 1 + len(self.right)
        if phase == "num":
            return (0 if at else 1) + len(self.right)
        if phase == "sep":
            return len(self.separator) - at + 1 + len(self.right)
        return len(self.right) - at

    def regex(self) -> str:
        """The same language as a regular expression (for vLLM's structured outputs)."""
        number = rf"[0-9]{{1,{self.max_digits}}}"
        more = rf"(?:{_escape(self.separator)}{number}){{0,{self.max_count - 1}}}"
        return f"{_escape(self.left)}{number}{more}{_escape(self.right)}"

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a complete reply of this grammar."""
        state = self.advance(self.start(), text)
        return state is not None and self.can_end(state)


def _escape(text: str) -> str:
    """``re.escape``, with a newline written ``\\n`` (regex engines other than Python's
    may not take a backslash followed by a raw newline)."""
    return "".join("\\n" if char == "\n" else re.escape(char) for char in text)

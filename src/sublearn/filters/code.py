"""The code-only filter: is a teacher's reply nothing but code, without comments?

In the paper's code experiment the teacher is asked for code only, with no comments,
so that a trait cannot ride on natural language; replies that name the trait are then
dropped by the leakage check and an LLM judge. This module is the cheap structural
check before those: it rejects replies that visibly break the "code only" request.

:func:`check_code_only` reads a reply as either one fenced block (an opening line
starting with three backticks, optionally naming a language, and a closing line of
three backticks) or, with no fence at all, as code throughout. Reasons, checked in
this order:

* ``malformed``: a fence that is opened but never closed (usually a cut-off reply);
* ``has_prose``: anything but whitespace before or after the fenced block, or more
  than one block (text between blocks is explanation);
* ``empty``: no code, or only whitespace;
* ``has_comment``: a comment in the code: a line starting with ``#`` (except a first-line
  shebang and C preprocessor directives such as ``#include``), an inline ``#`` after
  whitespace, a line starting with ``//``, or a ``/* ... */`` block anywhere.

It is a heuristic, kept simple on purpose: string literals on one line are skipped
when looking for ``#`` and ``/*`` (so ``"#fff"`` is fine), but multi-line strings are
not parsed, so a docstring line containing `` #`` counts as a comment; inline ``//`` is
not checked, because Python's floor division looks the same; and prose without fences
is not detected. The judge stage is the place for subtler content.
"""

from __future__ import annotations

import re

__all__ = [
    "CODE_REASONS",
    "EMPTY",
    "HAS_COMMENT",
    "HAS_PROSE",
    "MALFORMED",
    "check_code_only",
    "extract_code",
]

MALFORMED = "malformed"
HAS_PROSE = "has_prose"
EMPTY = "empty"
HAS_COMMENT = "has_comment"
CODE_REASONS: tuple[str, ...] = (MALFORMED, HAS_PROSE, EMPTY, HAS_COMMENT)
"""Every reason :func:`check_code_only` can give, in check order (for report keys)."""

_FENCE = "```"
# C preprocessor lines start with "#" but are code; written without a space after the
# "#", as a comment such as "# include the header" would be.
_DIRECTIVE = re.compile(
    r"#(?:include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|error|warning|line)\b"
)
# One-line string literals, with backslash escapes; removed before looking for comments.
_STRING = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
_INLINE_HASH = re.compile(r"\s#")
_BLOCK_OPEN = "/*"


def extract_code(reply: str) -> tuple[str | None, str | None]:
    """The code of a reply, or why there is none in the expected layout.

    Args:
        reply: the teacher's reply.

    Returns:
        ``(code, None)``, where code is the fenced block's body or the whole reply, or
        ``(None, reason)`` with ``malformed`` or ``has_prose``.
    """
    lines = reply.splitlines()
    fences = [i for i, line in enumerate(lines) if line.strip().startswith(_FENCE)]
    if not fences:
        return reply, None
    if len(fences) % 2:
        return None, MALFORMED
    if len(fences) > 2:
        return None, HAS_PROSE
    start, stop = fences
    outside = lines[:start] + lines[stop + 1 :]
    # The closing fence must be bare: "``` and that's it" is prose on the fence line.
    if any(line.strip() for line in outside) or lines[stop].strip() != _FENCE:
        return None, HAS_PROSE
    return "\n".join(lines[start + 1 : stop]), None


def _is_comment_line(line: str, first: bool) -> bool:
    """Whether one line of code holds a comment (see the module notes for the rules)."""
    stripped = line.strip()
    if stripped.startswith("//"):
        return True
    shebang = first and stripped.startswith("#!")
    if stripped.startswith("#") and not (shebang or _DIRECTIVE.match(stripped)):
        return True
    if shebang:
        return False
    # From the stripped line, so a directive's own "#" is not taken for an inline one.
    code = _STRING.sub('""', stripped)
    return bool(_INLINE_HASH.search(code)) or _BLOCK_OPEN in code


def check_code_only(reply: str) -> tuple[bool, str | None]:
    """Whether a reply is code only: one fenced block or bare code, without comments.

    Args:
        reply: the teacher's reply.

    Returns:
        ``(True, None)`` when accepted, else ``(False, reason)`` with one of
        :data:`CODE_REASONS`.
    """
    code, reason = extract_code(reply)
    if code is None:
        return False, reason
    if not code.strip():
        return False, EMPTY
    lines = [line for line in code.splitlines() if line.strip()]
    if any(_is_comment_line(line, i == 0) for i, line in enumerate(lines)):
        return False, HAS_COMMENT
    return True, None

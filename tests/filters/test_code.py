"""The code-only filter: fences, prose, empty code and comments."""

from __future__ import annotations

import pytest

from sublearn.filters.code import (
    CODE_REASONS,
    EMPTY,
    HAS_COMMENT,
    HAS_PROSE,
    MALFORMED,
    check_code_only,
    extract_code,
)

FUNC = "def add(a, b):\n    return a + b"

ACCEPTED = [
    FUNC,
    f"```python\n{FUNC}\n```",
    f"\n```\n{FUNC}\n```\n\n",
    "def f(s):\n    return s.count('#') + len(\"a # b\")",
    "def q(a, b):\n    return a // b",
    "#!/usr/bin/env python\nprint(1)",
    "#include <stdio.h>\n#define N 3\nint main(void) { return N; }",
    'color = "#fff"',
    "x = a*b / c",
]

REJECTED = [
    (f"```python\n{FUNC}", MALFORMED),
    (f"```python\n{FUNC}\n```\n```", MALFORMED),
    (f"Here is the code:\n```python\n{FUNC}\n```", HAS_PROSE),
    (f"```python\n{FUNC}\n```\nThis adds two numbers.", HAS_PROSE),
    (f"```python\n{FUNC}\n``` done", HAS_PROSE),
    (f"```\n{FUNC}\n```\nand a test:\n```\nassert add(1, 2) == 3\n```", HAS_PROSE),
    ("", EMPTY),
    ("   \n ", EMPTY),
    ("```python\n\n```", EMPTY),
    (f"# adds two numbers\n{FUNC}", HAS_COMMENT),
    ("def add(a, b):\n    # the sum\n    return a + b", HAS_COMMENT),
    ("def add(a, b):\n    return a + b  # the sum", HAS_COMMENT),
    ("int add(int a, int b) {\n    // the sum\n    return a + b;\n}", HAS_COMMENT),
    ("int add(int a, int b) { /* sum */ return a + b; }", HAS_COMMENT),
    ("/*\n * adds\n */\nint f(void);", HAS_COMMENT),
    ("# include the header\n#include <stdio.h>", HAS_COMMENT),
    ("#define N 3 /* three */", HAS_COMMENT),
    ("print(1)\n#!not a shebang here", HAS_COMMENT),
    (f"```python\n# owl\n{FUNC}\n```", HAS_COMMENT),
]


@pytest.mark.parametrize("reply", ACCEPTED)
def test_accepts(reply: str) -> None:
    assert check_code_only(reply) == (True, None)


@pytest.mark.parametrize(("reply", "reason"), REJECTED)
def test_rejects_with_reason(reply: str, reason: str) -> None:
    assert check_code_only(reply) == (False, reason)
    assert reason in CODE_REASONS


def test_extract_code_returns_the_fenced_body() -> None:
    assert extract_code(f"```python\n{FUNC}\n```") == (FUNC, None)
    assert extract_code(FUNC) == (FUNC, None)
    assert extract_code(f"Intro\n```\n{FUNC}\n```") == (None, HAS_PROSE)

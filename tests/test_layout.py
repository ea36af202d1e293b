"""Structure checks a reader can repeat: test code stays out of the package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sublearn"


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (absolute ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_package_imports_no_test_code() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(
            m for m in mods if m.split(".")[0] in {"tests", "conftest"}
        )
        for path in sorted(SRC.rglob("*.py"))
        if (mods := _imported_modules(path))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_production_kind_table_holds_no_debug_kinds() -> None:
    # A fresh interpreter: this test process may have registered the debug kinds.
    code = (
        "import json; from sublearn.engine.task import KINDS, GROUPED; "
        "print(json.dumps({'kinds': sorted(KINDS), 'grouped': sorted(GROUPED), "
        "'targets': sorted(t for t, _ in KINDS.values())}))"
    )
    table = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert "train" in table["kinds"]  # the check reads the real table
    assert [k for k in table["kinds"] + table["grouped"] if k.startswith("debug")] == []
    assert all(t.startswith("sublearn.") for t in table["targets"])

"""Structure checks a reader can repeat: test code stays out of the package, no import cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support.import_cycles import cycles, import_graph, main

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
        "import json; from sublearn.engine.task import KINDS; "
        "print(json.dumps({k: [KINDS.target(k), KINDS.metadata(k)['group']] for k in KINDS}))"
    )
    table = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert "train" in table  # the check reads the real table
    assert [k for k in table if k.startswith("debug")] == []
    targets = [t for target, group in table.values() for t in [target, *(group or [])]]
    assert all(t.startswith("sublearn.") for t in targets)


def test_the_package_has_no_import_cycles() -> None:
    assert cycles(import_graph(SRC.parent)) == []


def test_the_cycle_check_sees_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import x\n"
    )
    (pkg / "d.py").write_text("from pkg import c\nx = 1\n")
    assert cycles(import_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert main([str(tmp_path)]) == 1
    (pkg / "b.py").write_text("def helper():\n    return 'pkg.a:thing'  # a registry string\n")
    assert main([str(tmp_path)]) == 0


def test_every_heavy_entry_of_the_fast_tier_exists() -> None:
    from tests.conftest import HEAVY

    root = SRC.parents[1]
    assert HEAVY and [entry for entry in HEAVY if not (root / entry).exists()] == []

"""Structure checks a reader can repeat: test code stays out of the package, no import cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support.import_cycles import (
    cycles,
    import_graph,
    layer_violations,
    main,
    read_layers,
)

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


def test_the_package_follows_its_declared_layers() -> None:
    layers = read_layers(SRC.parents[1] / "pyproject.toml")
    assert layers[0] == ["cli"] and layers[-1] == ["errors"]
    assert layer_violations(import_graph(SRC.parent), layers) == []


def test_the_layer_check_refuses_upward_imports_and_unplaced_modules(tmp_path: Path) -> None:
    src = tmp_path / "src"
    pkg = src / "pkg"
    (pkg / "low").mkdir(parents=True)
    for name in ("__init__.py", "low/__init__.py", "top.py", "low/leaf.py", "low/util.py"):
        (pkg / name).write_text("")
    (pkg / "top.py").write_text("from pkg.low.leaf import x\n")
    (pkg / "low" / "leaf.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.sublearn.layers]\norder = ["top", "low.leaf | other", "low"]\n'
    )
    assert main([str(src)]) == 0
    # A deferred import upwards breaks the order; the longest name places low.leaf.
    (pkg / "low" / "util.py").write_text("def f():\n    from pkg.low import leaf\n")
    (pkg / "low" / "leaf.py").write_text("def g():\n    from pkg import top\n")
    layers = read_layers(tmp_path / "pyproject.toml")
    assert layer_violations(import_graph(src), layers) == [
        "pkg.low.leaf (layer 1: low.leaf | other) imports pkg.top (layer 0: top)",
        "pkg.low.util (layer 2: low) imports pkg.low.leaf (layer 1: low.leaf | other)",
    ]
    assert main([str(src)]) == 1
    (pkg / "low" / "leaf.py").write_text("x = 1\n")
    (pkg / "low" / "util.py").write_text("")
    (pkg / "new.py").write_text("")
    assert layer_violations(import_graph(src), layers) == ["pkg.new belongs to no layer"]


def test_every_heavy_entry_of_the_fast_tier_exists() -> None:
    from tests.conftest import HEAVY

    root = SRC.parents[1]
    assert HEAVY and [entry for entry in HEAVY if not (root / entry).exists()] == []

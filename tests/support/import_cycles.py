"""Find import cycles among a package's modules, function-level imports included.

``python -m tests.support.import_cycles [SRC]`` (``make lint`` runs it) prints each cycle
and exits 1 if there is any. Every ``import`` in a module counts, wherever it stands (a
deferred import inside a function still ties the two modules together), except those
under ``if TYPE_CHECKING:``, which never run. Importing a name from a module is an edge to
that module; importing a submodule is an edge to it and to its package's ``__init__``.
Names in ``"module:function"`` strings (the registries' lazy entries) are data, not
imports: a registry is how a module names code that depends on it without a cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

Graph = dict[str, set[str]]


def modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``src``."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def _imported(name: str, path: Path, tree: ast.AST) -> list[str]:
    """Every dotted name an import statement of module ``name`` (at ``path``) may load."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_nodes(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def import_graph(src: Path) -> Graph:
    """Module -> the modules of the same source tree it imports."""
    known = modules(src)
    graph: Graph = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for imported in _imported(name, path, tree):
            # ``from a.b import f``: f is no module, a.b is.
            if imported in known:
                graph[name].add(imported)
            # Importing a.b.c runs a and a.b first; the importer's own packages ran before
            # it did, so only the others count.
            parts = imported.split(".")
            packages = {".".join(parts[:i]) for i in range(1, len(parts))}
            graph[name].update(p for p in packages - ancestors if p in known)
        graph[name].discard(name)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle per strongly connected group of modules, as ``[a, b, ..., a]``."""
    groups = _strongly_connected(graph)
    found = []
    for group in groups:
        members = set(group)
        start = min(group)
        previous: dict[str, str | None] = {start: None}
        queue, last = deque([start]), None
        while queue and last is None:
            node = queue.popleft()
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    last = node
                    break
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        path: list[str] = []
        node = last
        while node is not None:
            path.append(node)
            node = previous[node]
        found.append([*reversed(path), start])
    return found


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Groups of two or more modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(groups)


def main(argv: list[str] | None = None) -> int:
    """Print the import cycles under ``argv[0]`` (default: ``src``); 1 if any, else 0."""
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0] if args else "src")
    graph = import_graph(src)
    found = cycles(graph)
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle))
    if not found:
        print(f"no import cycles among {len(graph)} modules under {src}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

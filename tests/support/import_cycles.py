"""Find import cycles among a package's modules, and imports that break its layer order.

``python -m tests.support.import_cycles [SRC]`` (``make lint`` runs it) prints each cycle
and each import that goes up the declared layer order, and exits 1 if there is any.
Every ``import`` in a module counts, wherever it stands (a deferred import inside a
function still ties the two modules together), except those under ``if TYPE_CHECKING:``,
which never run. Importing a name from a module is an edge to
that module; importing a submodule is an edge to it and to its package's ``__init__``.
Names in ``"module:function"`` strings (the registries' lazy entries) are data, not
imports: a registry is how a module names code that depends on it without a cycle.

**Layers.** ``[tool.sublearn.layers] order`` in the ``pyproject.toml`` beside ``SRC``
lists the package's parts from the top (the command line) to the bottom (errors); a layer
is one or more names separated by ``|`` (subpackages or modules, relative to the
package), and a module belongs to the longest name that contains it. A module may import
its own layer and those below it, never one above, so a lower part never needs a higher
one and no package-level loop (``backends -> generation -> prompts -> backends``) can
form. Every module must belong to a layer, so a new subpackage is placed on purpose.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest's own dependency on Python 3.10
    import tomli as tomllib

Graph = dict[str, set[str]]
Layers = list[list[str]]


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


def read_layers(pyproject: Path) -> Layers:
    """The layer order of ``[tool.sublearn.layers] order``, top first; [] when not declared."""
    if not pyproject.is_file():
        return []
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    order = data.get("tool", {}).get("sublearn", {}).get("layers", {}).get("order", [])
    return [[name.strip() for name in layer.split("|")] for layer in order]


def layer_of(module: str, layers: Layers) -> int | None:
    """The index of ``module``'s layer: the longest layer name that contains it.

    Names are relative to the top package (``engine.kinds`` for ``sublearn.engine.kinds``);
    the top package itself (its ``__init__``) is above every layer and gets None, as does
    a module no name contains.
    """
    _, _, relative = module.partition(".")
    best: tuple[int, int] | None = None  # (length of the name, layer index)
    for index, layer in enumerate(layers):
        for name in layer:
            inside = relative == name or relative.startswith(name + ".")
            if inside and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def layer_violations(graph: Graph, layers: Layers) -> list[str]:
    """Every import that goes up the layer order, and every module without a layer.

    Returns:
        Messages, sorted: ``"a.x (layer 5: report) imports a.y (layer 2: api)"`` or
        ``"a.z belongs to no layer"``.
    """
    if not layers:
        return []
    found = []
    for module in sorted(graph):
        here = layer_of(module, layers)
        if here is None:
            if "." in module:  # the top package's __init__ may import anything
                found.append(f"{module} belongs to no layer")
            continue
        for imported in sorted(graph[module]):
            there = layer_of(imported, layers)
            if there is not None and there < here:
                found.append(
                    f"{module} (layer {here}: {' | '.join(layers[here])}) imports "
                    f"{imported} (layer {there}: {' | '.join(layers[there])})"
                )
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the import cycles and layer violations under ``argv[0]`` (default: ``src``).

    The layers are read from the ``pyproject.toml`` beside ``src`` (none: no layer check).

    Returns:
        1 if there is a cycle or a violation, else 0.
    """
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0] if args else "src")
    graph = import_graph(src)
    found = cycles(graph)
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle))
    if not found:
        print(f"no import cycles among {len(graph)} modules under {src}")
    layers = read_layers(src.resolve().parent / "pyproject.toml")
    violations = layer_violations(graph, layers)
    for violation in violations:
        print("layer order broken: " + violation)
    if layers and not violations:
        print(f"every import follows the {len(layers)} layers of pyproject.toml")
    return 1 if found or violations else 0


if __name__ == "__main__":
    sys.exit(main())

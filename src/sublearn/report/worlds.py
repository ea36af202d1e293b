"""The toy worlds of a run in its report: their weights' digests and where they were built.

A toy world's weights depend on the kind of CPU that built them (see
:func:`sublearn.runtime.numerics`), so a report names each world's digests: two runs'
digits are comparable only when their worlds' digests agree.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from sublearn.report.formatting import markdown_table
from sublearn.runtime import numerics_text


def _built_on(world: dict[str, Any], unknown: str) -> str:
    return numerics_text(world["numerics"]) if world.get("numerics") else unknown


def worlds_lines(worlds: list[dict[str, Any]]) -> list[str]:
    """The report's "Toy worlds" section: one row per base of each world."""
    lines = [
        "## Toy worlds",
        "",
        "A toy world's weights depend on the kind of CPU that built them: torch and MKL pick "
        "their kernels by instruction set, and over a thousand pretraining steps last-bit "
        "differences grow into other base models, with base rates several points apart. "
        "Compare conclusions across machines; compare digits only between builds whose "
        "weights have the same digests.",
        "",
    ]
    rows = [
        [
            w["name"],
            b["name"],
            (b.get("sha256") or "not recorded")[:16],
            _built_on(w, "not recorded"),
        ]
        for w in worlds
        for b in w["bases"]
    ]
    return lines + markdown_table(["world", "base", "weights (sha256)", "built on"], rows)


def print_worlds(worlds: list[dict[str, Any]], console: Console) -> None:
    """One console line per world: its bases' digests and where it was built."""
    for w in worlds:
        digests = ", ".join(f"{b['name']} {(b.get('sha256') or '?')[:8]}" for b in w["bases"])
        where = _built_on(w, "an unrecorded machine")
        console.print(f"toy world {w['name']}: {digests}; built on {where}", highlight=False)

"""``sublearn store verify`` and ``sublearn store gc``: upkeep of the task store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sublearn.cli.options import console, user_errors

app = typer.Typer(no_args_is_help=True)

StoreOpt = Annotated[
    Path, typer.Option("--store", help="The store folder (an experiment's `store.path`).")
]


@app.command("verify")
def verify(
    store: StoreOpt = Path(".cache/store"),
    sizes_only: Annotated[
        bool, typer.Option("--sizes-only", help="Compare sizes only (fast), not SHA-256.")
    ] = False,
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Move corrupt entries aside (the next run recomputes them)."),
    ] = False,
) -> None:
    """Check every finished task of a store against its done-marker.

    Exit code 0: everything verifies; 1: some entries are corrupt (listed).
    """
    from sublearn.engine.store_upkeep import open_existing, verify_store

    with user_errors():
        opened = open_existing(store)
        checks = verify_store(opened, hashes=not sizes_only)
    bad = [c for c in checks if c.problem is not None]
    for check in bad:
        console.print(f"corrupt  {check.task_id}: {check.problem}", highlight=False)
    how = "sizes" if sizes_only else "sizes and SHA-256"
    console.print(f"{len(checks) - len(bad)} of {len(checks)} entries verify ({how})")
    if bad and fix:
        for check in bad:
            opened.usable(check.task_id, console)
    elif bad:
        console.print("run with --fix to move them aside, or rerun: a run recomputes them")
    if bad:
        raise typer.Exit(code=1)


@app.command("gc")
def gc(
    store: StoreOpt = Path(".cache/store"),
    runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--runs", help="Folders holding run folders whose tasks are kept (default: runs)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete (default: only list).")] = False,
) -> None:
    """Remove what no run needs: leftovers of dead processes and unreferenced entries.

    Without --yes it only lists what it would remove. An entry counts as referenced when
    the manifest.json of a run folder under --runs lists it; runs still in progress have
    not written theirs yet, so collect garbage when no run is going.
    """
    from sublearn.engine.store_upkeep import find_garbage, open_existing, remove

    with user_errors():
        opened = open_existing(store)
        garbage = find_garbage(opened, runs or [Path("runs")])
        for item in garbage:
            rel = item.path.relative_to(opened.root)
            console.print(f"{_mb(item.size):>10}  {rel}  ({item.reason})", highlight=False)
        total = sum(item.size for item in garbage)
        if not yes:
            console.print(
                f"{len(garbage)} paths, {_mb(total)} would be removed; pass --yes to delete",
                highlight=False,
            )
            return
        freed = remove(garbage)
        console.print(f"removed {len(garbage)} paths, {_mb(freed)}", highlight=False)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"

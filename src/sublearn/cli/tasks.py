"""Commands that run as engine tasks: ``--store`` and ``--plan``, running, copying out.

``sublearn mnist``, ``theory``, ``audit`` and ``defend`` build a small plan (one task
each), run it through the engine's runner on the inline executor, as ``sublearn run``
does with ``executor: inline``, and copy the task's folder from the store to where the
user asked. A second identical call finds the task in the store and only copies it; a
call killed mid-task leaves nothing the next one trusts, so it reruns the task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sublearn.cli.options import console

if TYPE_CHECKING:  # the engine loads when a command runs, not for `sublearn --help`
    from sublearn.config import Config
    from sublearn.engine.runner import TaskRecord
    from sublearn.engine.store import Store
    from sublearn.engine.task import Task

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Task store: a finished identical call is reused from it (default $SUBLEARN_STORE "
        "if set, else .cache/store, as for `sublearn run`).",
    ),
]
PlanOption = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Print the task this call would run and whether the store has it; run nothing.",
    ),
]


# Where the commands' store is when --store is not given and the variable is unset: the
# default store of `sublearn run`. The tests set the variable to a temporary folder, so
# that no test reads a result an earlier run left in the checkout's store.
STORE_ENV = "SUBLEARN_STORE"


def open_store(path: Path | None) -> Store:
    """The store at ``path``, else at ``$SUBLEARN_STORE``, else the default of ``sublearn run``."""
    from sublearn.engine.store import Store, StoreConfig

    if path is None and os.environ.get(STORE_ENV):
        path = Path(os.environ[STORE_ENV])
    return Store(StoreConfig(path=str(path)) if path is not None else StoreConfig())


def print_plan(tasks: list[Task], store: Store) -> None:
    """One line per task: its kind, name, store id and whether the store has it."""
    from rich.table import Table

    from sublearn.engine.runner import plan_status

    status = plan_status(tasks, store)
    table = Table(title=f"plan (store {store.root})")
    for column in ("kind", "task", "id", "status"):
        table.add_column(column)
    for task, done in status:
        table.add_row(task.kind, task.name, task.id, "cached" if done else "will run")
    console.print(table)
    todo = sum(not done for _, done in status)
    console.print(f"{len(status) - todo} of {len(status)} tasks cached, {todo} to run")


def run_tasks(
    tasks: list[Task], store: Store, threads: int | None, progress: bool
) -> dict[str, TaskRecord]:
    """Run what the store lacks of ``tasks`` in this process; every task's record.

    Args:
        tasks: the plan's tasks.
        store: where outputs live.
        threads: torch threads of this process (None: one per core).
        progress: draw the runner's progress bars (off for tasks that draw their own).
    """
    from sublearn.engine.executors import InlineExecutor
    from sublearn.engine.runner import run_plan

    records = run_plan(tasks, store, InlineExecutor(threads), console, show_progress=progress)
    for task in tasks:
        record = records[task.id]
        if record.cached:
            console.print(
                f"{task.name}: found in the store ({task.id}, computed in {record.seconds:.1f} s)",
                highlight=False,
            )
    return records


def write_manifest(folder: Path, store: Store, records: dict[str, TaskRecord]) -> None:
    """``manifest.json``: the tasks behind ``folder``, so `sublearn store gc` keeps them."""
    from sublearn.runs import atomic_write_json

    atomic_write_json(
        folder / "manifest.json",
        {"store": str(store.root), "tasks": [r.to_dict() for r in records.values()]},
    )


def run_into_folder(
    task: Task, store: Store, folder: Path, config: Config, command: str, threads: int | None
) -> None:
    """Run ``task`` (or find it in ``store``) and make ``folder`` its run folder.

    The folder gets ``config.yaml`` and ``meta.json`` (:func:`sublearn.runs.prepare_run_dir`),
    a copy of the task's files and ``manifest.json``.

    Args:
        task: the command's one task.
        store: where outputs live.
        folder: the run folder (``--out``).
        config: the command's resolved config.
        command: the command line that owns the folder, for ``meta.json``.
        threads: torch threads of this process (None: one per core).
    """
    from sublearn.experiments.copy_out import copy_entry
    from sublearn.runs import prepare_run_dir

    records = run_tasks([task], store, threads, progress=True)
    prepare_run_dir(folder, config, command)
    copy_entry(store.path(task.id), folder)
    write_manifest(folder, store, records)

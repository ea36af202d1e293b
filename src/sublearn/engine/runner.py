"""Runs a plan: every task of the graph whose output the store lacks, inputs first.

Progress shows one bar per task kind. What each task did (ran now, or found cached, and
how long it took when it ran) goes into the run's manifest, so a resumed run reports the
real cost of its results, not the near-zero time of finding them.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sublearn.engine.executors import Executor
from sublearn.engine.store import Store
from sublearn.engine.task import Task, group_key, topological


@dataclass
class TaskRecord:
    """What happened to one task in a run."""

    kind: str
    name: str
    key: str
    path: str
    cached: bool
    seconds: float  # the task's own run time, from its done-marker
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def plan_status(tasks: list[Task], store: Store) -> list[tuple[Task, bool]]:
    """Every task of the graph, inputs first, with whether the store holds it intact.

    A finished task whose files fail the store's verification counts as not done (the
    run will move it aside and recompute it); ``store.problem`` says what is wrong.
    """
    return [(t, store.is_done(t.id) and store.problem(t.id) is None) for t in topological(tasks)]


def run_plan(
    tasks: list[Task],
    store: Store,
    executor: Executor,
    console: Console | None = None,
    show_progress: bool = True,
    on_record: Callable[[TaskRecord], None] | None = None,
    group: bool = True,
    failures: dict[str, Exception] | None = None,
) -> dict[str, TaskRecord]:
    """Run every missing task of the graph on ``executor``.

    Args:
        tasks: the graph's outputs (their inputs are found by following ``inputs``).
        store: where outputs live.
        executor: where tasks run.
        console: where progress goes.
        show_progress: draw progress bars.
        on_record: called with each task's record as it is found cached or finishes;
            an exception it raises stops the run (e.g. a spending limit).
        group: run compatible tasks as groups (students as one batched model); False
            runs every task alone. Either way the store ends up the same.
        failures: None: the first task error stops the run. A dict: a failing task's
            error goes in it under the task's id, its dependants are skipped (each gets
            an :class:`InputFailed`), and every other task still runs (a sweep's points).

    Returns:
        ``{task id: TaskRecord}`` for every task of the graph.

    Raises:
        The first task error, after cancelling what had not started.
    """
    order = topological(tasks)
    records: dict[str, TaskRecord] = {}
    root = str(store.root)
    progress = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(),
        disable=not show_progress,
    )
    bars: dict[str, Any] = {}
    for task in order:
        if task.kind not in bars:
            total = sum(t.kind == task.kind for t in order)
            bars[task.kind] = progress.add_task(task.kind, total=total)
    inner = progress.add_task("", total=None, visible=False)

    def record(task: Task, outcome: dict[str, Any]) -> None:
        records[task.id] = TaskRecord(
            kind=task.kind,
            name=task.name,
            key=task.key,
            path=str(store.path(task.id)),
            cached=outcome["cached"],
            seconds=outcome["seconds"],
            result=outcome["result"],
        )
        progress.advance(bars[task.kind])
        if on_record is not None:
            on_record(records[task.id])

    pending = list(order)
    running: dict[Future, list[Task]] = {}
    failed = False
    with progress:
        for task in list(pending):
            # A corrupt entry is moved aside here, with a one-line warning, and rerun.
            if store.usable(task.id, progress.console):
                # A kill between the rename and the state's removal leaves a stale state.
                shutil.rmtree(store.state_dir(task.id), ignore_errors=True)
                marker = store.marker(task.id)
                record(
                    task,
                    {
                        "cached": True,
                        "seconds": marker.get("seconds", 0.0),
                        "result": marker.get("result", {}),
                    },
                )
                pending.remove(task)
        try:
            while pending or running:
                for task in [t for t in pending if failures is not None and _blocked(t, failures)]:
                    pending.remove(task)
                    assert failures is not None
                    failures[task.id] = InputFailed(task, failures)
                ready = [t for t in pending if all(i.id in records for i in t.inputs.values())]
                for unit in _units(ready, max(0, executor.capacity - len(running)), group):
                    for task in unit:
                        pending.remove(task)
                    label = f"  {unit[0].name}" + (f" (+{len(unit) - 1})" if len(unit) > 1 else "")

                    def report(done: int, total: int, label: str = label) -> None:
                        progress.update(
                            inner, description=label, completed=done, total=total, visible=True
                        )

                    if len(unit) == 1:
                        future = executor.submit(unit[0].spec(), root, report)
                    else:
                        future = executor.submit_group([t.spec() for t in unit], root, report)
                    progress.update(inner, visible=False)
                    running[future] = unit
                if not running and not pending:
                    break
                if not running:
                    stuck = ", ".join(t.name for t in pending[:5])
                    raise RuntimeError(f"tasks wait for inputs that never finish: {stuck}")
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    try:
                        outcome = future.result()  # re-raises a task's error
                    except Exception as err:
                        if failures is None:
                            raise
                        failures.update((task.id, err) for task in unit)
                        continue
                    outcomes = outcome if len(unit) > 1 else [outcome]
                    for task, one in zip(unit, outcomes, strict=True):
                        record(task, one)
        except BaseException:
            failed = True
            raise
        finally:
            executor.close(cancel=failed)
    return records


class InputFailed(RuntimeError):
    """A task that was not run because a task it needs failed."""

    def __init__(self, task: Task, failures: dict[str, Exception]) -> None:
        """Name the first failed input of ``task``."""
        failed = next(i for i in task.inputs.values() if i.id in failures)
        self.cause = failures[failed.id]
        root = self.cause.cause if isinstance(self.cause, InputFailed) else self.cause
        self.cause = root
        super().__init__(f"not run: its input {failed.name} failed")


def _blocked(task: Task, failures: dict[str, Exception]) -> bool:
    return any(i.id in failures for i in task.inputs.values())


MAX_GROUP = 16
"""Most tasks run as one group (e.g. students trained as one batched model)."""


def _units(ready: list[Task], free: int, group: bool = True) -> list[list[Task]]:
    """What to start in ``free`` slots: tasks alone, or groups of compatible tasks.

    Tasks that run alone go first: they are usually what the rest waits on (a seed's
    pair, before its students), so a group forms from more of its members. Compatible
    tasks share the slots left, split evenly, at most :data:`MAX_GROUP` to a group.
    """
    units: list[list[Task]] = []
    groups: dict[tuple[str, str], list[Task]] = {}
    for task in ready:
        key = group_key(task.spec()) if group else None
        if key is None:
            units.append([task])
        else:
            groups.setdefault((task.kind, key), []).append(task)
    units = units[:free]
    for members in groups.values():
        left = free - len(units)
        if left <= 0:
            break
        parts = max(min(left, len(members)), math.ceil(len(members) / MAX_GROUP))
        size = math.ceil(len(members) / parts)
        chunks = [members[i : i + size] for i in range(0, len(members), size)]
        units.extend(chunks[:left])
    return units

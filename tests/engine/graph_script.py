"""A small graph of debug tasks, and a script that runs it (the subprocess of fault tests).

Run as ``python -m tests.engine.graph_script --store DIR [--die a:step:1] ...`` from the
checkout (importing this module registers the debug kinds). Tests
import :func:`build_graph`, :func:`snapshot` and :func:`leftovers` from here so the
script and the tests build the same graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sublearn.engine.executors import Executor, ProcessExecutor, execute_group, execute_task
from sublearn.engine.runner import TaskRecord, run_plan
from sublearn.engine.store import DONE, Store
from sublearn.engine.task import Reporter, Task, TaskSpec
from tests.support import debug_kinds

debug_kinds.register()

Run = tuple[Store, dict[str, TaskRecord]]

# Fields of a done-marker that may differ between two runs of the same task: when and how
# long, the speed settings (runtime is left out of the key by design), and the marker's
# hash of itself (it covers those).
RUN_FIELDS = ("finished_at", "seconds", "runtime", "marker_sha256")


def build_graph(
    log: Path | str | None = None,
    step_seconds: float = 0.0,
    die: tuple[str, str] | None = None,
) -> list[Task]:
    """``a`` and ``b`` are written, ``c`` sums them, ``d`` sums ``c``, ``b`` and an offset.

    Args:
        log: the debug log every task appends its events to.
        step_seconds: how long each step of ``a`` and ``c`` sleeps.
        die: ``(task name, point)``: that task SIGKILLs its process at that point.
    """

    def runtime(name: str) -> dict[str, Any]:
        rt: dict[str, Any] = {"step_seconds": step_seconds}
        if log is not None:
            rt["log"] = str(log)
        if die is not None and die[0] == name:
            rt["die_at"] = die[1]
        return rt

    a = Task("debug.write", "a", {"value": 1, "rows": 3, "steps": 3}, runtime=runtime("a"))
    b = Task("debug.write", "b", {"value": 2}, runtime=runtime("b"))
    c = Task("debug.sum", "c", {"steps": 2}, inputs={"x": a, "y": b}, runtime=runtime("c"))
    d = Task(
        "debug.sum", "d", {"offset": 10}, inputs={"total": c, "extra": b}, runtime=runtime("d")
    )
    return [d]


def run_graph(root: Path, executor: Executor) -> Run:
    """Run the debug graph, without faults, into a store at ``root``."""
    store = Store(root)
    return store, run_plan(build_graph(), store, executor, show_progress=False)


class SerialExecutor:
    """Runs each task in this process, like InlineExecutor without its torch import.

    The fault tests start this script a dozen times; importing torch to set threads
    the debug kinds never use would cost two seconds each time.
    """

    capacity = 1
    shows_task_progress = False

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        """Run the task now."""
        future: Future = Future()
        try:
            future.set_result(execute_task(spec, store_root, reporter))
        except Exception as err:
            future.set_exception(err)
        return future

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        """Run the group now."""
        future: Future = Future()
        try:
            future.set_result(execute_group(specs, store_root, reporter))
        except Exception as err:
            future.set_exception(err)
        return future

    def close(self, cancel: bool = False) -> None:
        """Nothing to release."""


def snapshot(root: Path) -> dict[str, Any]:
    """Every file of every finished task folder: bytes, or the done-marker less RUN_FIELDS."""
    files: dict[str, Any] = {}
    for kind in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in kind.iterdir() if not p.name.startswith(".")):
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = str(path.relative_to(root))
                if path.name == DONE:
                    marker = json.loads(path.read_bytes())
                    files[rel] = {k: v for k, v in marker.items() if k not in RUN_FIELDS}
                else:
                    files[rel] = path.read_bytes()
    return files


def leftovers(root: Path) -> list[str]:
    """Temporary outputs and state folders still in the store (none after a full run)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.glob("*/.*")
        if p.is_dir() and (".tmp-" in p.name or p.name.endswith(".state"))
    )


def comparable(records: dict[str, TaskRecord]) -> dict[str, tuple]:
    """Records without what differs between stores and runs (path, seconds)."""
    return {i: (r.kind, r.name, r.key, r.cached, r.result) for i, r in records.items()}


def main(argv: list[str]) -> int:
    """Run the graph on a store; write the records as JSON if asked."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--log")
    parser.add_argument("--records")
    parser.add_argument("--executor", choices=["serial", "process"], default="serial")
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--die", help="TASK:POINT, e.g. a:step:1")
    args = parser.parse_args(argv)
    name, _, point = (args.die or "").partition(":")
    tasks = build_graph(args.log, args.step_seconds, (name, point) if args.die else None)
    executor = SerialExecutor() if args.executor == "serial" else ProcessExecutor(2)
    records = run_plan(tasks, Store(args.store), executor, show_progress=False)
    if args.records:
        Path(args.records).write_text(json.dumps({i: r.to_dict() for i, r in records.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

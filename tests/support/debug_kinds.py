"""Cheap task kinds for testing the engine, the way a mock model tests an eval harness.

``debug.write`` writes its params; ``debug.sum`` adds the values of its inputs (and runs in
groups of tasks that share ``params["group"]``, as batched students do). Both can
work through resumable steps that sleep and leave partial state in the task's state
folder, and both obey three runtime switches, which are not hashed, so a test can turn
them on for one run of a graph without changing any task's key:

* ``step_seconds``: how long each step sleeps (in small slices, so a kill lands inside).
* ``log``: a file to which every start, step, skipped step and end is appended as a JSON
  line under an ``flock``: the side effects a test counts, with the process id (and, in
  a Ray worker, the Ray node) that ran the task.
* ``die_at``: ``"start"``, ``"step:N"`` (after step N's state is written) or ``"end"``
  (after the outputs are written, before the store commits them): the process SIGKILLs
  itself there, for fault injection.

Outputs depend only on params and input contents, so any executor, any interruption and
any resume give byte-identical folders.

They are not in the package's kind table: a test that uses them calls :func:`register`
(``tests/engine/conftest.py`` does, for the engine's tests). Workers find the functions
through the ``"module:function"`` strings each task's spec carries, so this module must be
importable where tasks run (from the checkout: ``tests`` is a package).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sublearn.engine.task import TaskContext, register_kind
from sublearn.runs import atomic_write_json

_SLICE = 0.01  # seconds; a kill during a step lands between slices, never after a whole step
_MODULE = "tests.support.debug_kinds"  # as workers import it


def register() -> None:
    """Add ``debug.write`` and ``debug.sum`` to the engine's kinds (idempotent)."""
    register_kind("debug.write", f"{_MODULE}:run_write", 1)
    register_kind(
        "debug.sum",
        f"{_MODULE}:run_sum",
        1,
        group=(f"{_MODULE}:sum_group_key", f"{_MODULE}:run_sum_group"),
    )


def run_write(ctx: TaskContext) -> dict[str, Any]:
    """``debug.write``: write ``params["value"]`` (and ``rows`` derived rows) after the steps.

    Params: ``value`` (any JSON), ``rows`` (int, default 0), ``steps`` (int, default 0),
    ``fail`` (bool: raise instead of finishing).

    Returns:
        ``{"value": value, "steps": steps}``, recorded in the done-marker.
    """
    value = ctx.params.get("value")
    return _finish(ctx, value)


def run_sum(ctx: TaskContext) -> dict[str, Any]:
    """``debug.sum``: the sum of the ``value`` of every input, written like ``debug.write``.

    Params: as ``debug.write`` without ``value``; ``offset`` (number, default 0) is added.

    Returns:
        ``{"value": total, "steps": steps}``.
    """
    total = ctx.params.get("offset", 0)
    for role in sorted(ctx.inputs):
        total += json.loads((ctx.inputs[role] / "value.json").read_text())["value"]
    return _finish(ctx, total)


def sum_group_key(params: dict[str, Any]) -> str | None:
    """``debug.sum`` tasks with the same ``params["group"]`` may run as one group."""
    group = params.get("group")
    return None if group is None else str(group)


def run_sum_group(ctxs: list[TaskContext]) -> list[dict[str, Any]]:
    """Run a group of ``debug.sum`` tasks in one call, logging the group's size."""
    if ctxs:
        _log(ctxs[0], "group", size=len(ctxs), tasks=sorted(c.spec.name for c in ctxs))
    return [run_sum(ctx) for ctx in ctxs]


def _finish(ctx: TaskContext, value: Any) -> dict[str, Any]:
    _log(ctx, "start")
    _maybe_die(ctx, "start")
    steps = int(ctx.params.get("steps", 0))
    partial = [_step(ctx, i, value) for i in range(steps)]
    if ctx.params.get("fail"):
        raise RuntimeError(f"{ctx.spec.name}: failing as its params ask")
    atomic_write_json(ctx.out / "value.json", {"value": value})
    atomic_write_json(ctx.out / "steps.json", partial)
    rows = int(ctx.params.get("rows", 0))
    if rows:
        (ctx.out / "data").mkdir()
        lines = [json.dumps({"i": i, "value": value}) for i in range(rows)]
        (ctx.out / "data" / "rows.jsonl").write_text("\n".join(lines) + "\n")
    _maybe_die(ctx, "end")
    _log(ctx, "end")
    return {"value": value, "steps": steps}


def _step(ctx: TaskContext, i: int, value: Any) -> dict[str, Any]:
    """One resumable step: reuse its saved state, or sleep and save it."""
    saved = ctx.state / f"step-{i:03d}.json"
    if saved.is_file():
        _log(ctx, "skip", step=i)
        return json.loads(saved.read_text())
    deadline = time.monotonic() + float(ctx.runtime.get("step_seconds", 0.0))
    while time.monotonic() < deadline:
        time.sleep(_SLICE)
    partial = {"step": i, "value": value}
    atomic_write_json(saved, partial)
    _log(ctx, "step", step=i)
    ctx.progress(i + 1, int(ctx.params.get("steps", 0)))
    _maybe_die(ctx, f"step:{i}")
    return partial


def _maybe_die(ctx: TaskContext, point: str) -> None:
    if ctx.runtime.get("die_at") == point:
        # Only this process: a task never takes down processes it did not start.
        os.kill(os.getpid(), signal.SIGKILL)


def _log(ctx: TaskContext, event: str, **extra: Any) -> None:
    log = ctx.runtime.get("log")
    if not log:
        return
    where = {"pid": os.getpid(), **_ray_node()}
    line = json.dumps({"event": event, "task": ctx.spec.name, **where, **extra})
    # Concurrent runs append to one log: the lock keeps lines whole.
    with Path(log).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write(line + "\n")
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ray_node() -> dict[str, str]:
    """``{"ray_node": id}`` in a Ray worker (which node of a cluster ran the task), else ``{}``.

    Ray is looked up, not imported: a process that never imported it is no Ray worker.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    return {"ray_node": ray.get_runtime_context().get_node_id()}


def read_log(path: Path | str) -> list[dict[str, Any]]:
    """The events a debug log holds, oldest first (an absent log holds none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

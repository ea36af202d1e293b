"""Kills and races: a run SIGKILLed anywhere resumes to the same store; runs share a store.

The graph runs in a subprocess (``graph_script.py``) that a debug task SIGKILLs at a chosen
point, or that the test kills from outside; the rerun happens here and must leave exactly
what an uninterrupted run leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sublearn.engine.executors import InlineExecutor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task, topological
from tests.engine.graph_script import Run, build_graph, leftovers, snapshot
from tests.support.checkout import checkout_env
from tests.support.debug_kinds import read_log

ORDER = ["a", "b", "c", "d"]  # the graph's tasks, inputs first (how the serial run goes)
STEPS = {"a": 3, "c": 2}

# Task boundaries ("start": after every earlier task committed, before this one does
# anything) and points inside tasks (after a step's partial state is saved; "end": after
# the outputs are written, before the store commits them).
KILL_POINTS = [
    (name, point)
    for name in ORDER
    for point in ["start", *(f"step:{i}" for i in range(STEPS.get(name, 0))), "end"]
]


def _script(store: Path, log: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.engine.graph_script", "--store", str(store)]
    command += ["--log", str(log), *args]
    # Its own session: a kill of its process group reaches nothing of the test's.
    proc = subprocess.Popen(
        command, start_new_session=True, stderr=subprocess.PIPE, text=True, env=checkout_env()
    )
    if wait:
        proc.wait(timeout=120)
    return proc


def _resume(store: Path, log: Path) -> Run:
    opened = Store(store)
    return opened, run_plan(build_graph(log), opened, InlineExecutor(1), show_progress=False)


def _assert_same_as(reference: Run, store: Store) -> None:
    assert snapshot(store.root) == snapshot(reference[0].root)
    assert leftovers(store.root) == []


@pytest.mark.parametrize(("name", "point"), KILL_POINTS, ids=[f"{n}-{p}" for n, p in KILL_POINTS])
def test_sigkill_then_rerun_equals_uninterrupted_run(
    tmp_path: Path, reference: Run, name: str, point: str
) -> None:
    store_dir, log = tmp_path / "store", tmp_path / "log.jsonl"
    proc = _script(store_dir, log, "--die", f"{name}:{point}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    killed = ORDER.index(name)
    by_name = {t.name: t for t in _all_tasks()}
    store = Store(store_dir)
    assert [store.is_done(by_name[n].id) for n in ORDER] == [i < killed for i in range(4)]
    before = len(read_log(log))

    _, records = _resume(store_dir, log)

    assert {r.name: r.cached for r in records.values()} == {
        n: i < killed for i, n in enumerate(ORDER)
    }
    _assert_same_as(reference, store)
    # Steps saved before the kill are reused, not redone.
    rerun = [(e["event"], e.get("step")) for e in read_log(log)[before:] if e["task"] == name]
    saved = _saved_steps(point, STEPS.get(name, 0))
    assert [s for e, s in rerun if e == "skip"] == list(range(saved))
    assert [s for e, s in rerun if e == "step"] == list(range(saved, STEPS.get(name, 0)))


def _saved_steps(point: str, steps: int) -> int:
    if point.startswith("step:"):
        return int(point.split(":")[1]) + 1
    return steps if point == "end" else 0


def _all_tasks() -> list[Task]:
    return topological(build_graph())


def test_external_sigkill_during_a_sleeping_step(tmp_path: Path, reference: Run) -> None:
    store_dir, log = tmp_path / "store", tmp_path / "log.jsonl"
    proc = _script(store_dir, log, "--step-seconds", "0.4", wait=False)
    try:
        _wait_for(lambda: any(e["event"] == "step" and e["task"] == "a" for e in read_log(log)))
        time.sleep(0.1)  # well inside the sleep of step 1
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    state = Store(store_dir).state_dir(_all_tasks()[0].id)
    assert sorted(p.name for p in state.iterdir()) == ["step-000.json"]

    _, records = _resume(store_dir, log)

    assert not any(r.cached for r in records.values())
    _assert_same_as(reference, Store(store_dir))
    events = [(e["event"], e.get("step")) for e in read_log(log) if e["task"] == "a"]
    assert events.count(("step", 0)) == 1 and ("skip", 0) in events


def test_two_processes_on_one_store_do_each_task_once(tmp_path: Path, reference: Run) -> None:
    store_dir, log = tmp_path / "store", tmp_path / "log.jsonl"
    outs = [tmp_path / f"records-{i}.json" for i in range(2)]
    procs = [
        _script(store_dir, log, "--step-seconds", "0.1", "--records", str(out), wait=False)
        for out in outs
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""

    starts = Counter(e["task"] for e in read_log(log) if e["event"] == "start")
    ends = Counter(e["task"] for e in read_log(log) if e["event"] == "end")
    assert starts == ends == dict.fromkeys(ORDER, 1)
    records = [json.loads(out.read_text()) for out in outs]
    assert records[0].keys() == records[1].keys()
    for task_id in records[0]:
        # Exactly one of the two ran it; the other found it done (or waited for it).
        assert sorted(r[task_id]["cached"] for r in records) == [False, True]
        assert records[0][task_id]["result"] == records[1][task_id]["result"]
    _assert_same_as(reference, Store(store_dir))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_killing_the_parent_of_process_workers_kills_the_workers(tmp_path: Path) -> None:
    store_dir, log = tmp_path / "store", tmp_path / "log.jsonl"
    args = ("--executor", "process", "--step-seconds", "0.5")
    proc = _script(store_dir, log, *args, wait=False)
    workers: list[int] = []
    try:
        _wait_for(lambda: any(e["event"] == "step" for e in read_log(log)))
        workers = _children(proc.pid)
        task_pids = {e["pid"] for e in read_log(log)}
        assert task_pids <= set(workers) and len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [w for w in workers if _alive(w)] == []
    finally:
        for pid in [proc.pid, *workers]:  # only processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)

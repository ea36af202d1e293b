"""A failing task stops only what depends on it (sweeps), and no run leaves a process
behind: workers and multiprocessing's resource tracker end with the command, whether it
finishes, fails, or is stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublearn.engine.executors import InlineExecutor, ProcessExecutor
from sublearn.engine.runner import InputFailed, run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.support import debug_kinds

debug_kinds.register()

ROOT = Path(__file__).resolve().parents[2]


def _graph() -> list[Task]:
    """Two independent chains; the first fails at its start."""
    bad = Task("debug.write", "bad", {"value": 1, "fail": True})
    after_bad = Task("debug.sum", "after-bad", {}, inputs={"x": bad})
    good = Task("debug.write", "good", {"value": 2})
    after_good = Task("debug.sum", "after-good", {"offset": 1}, inputs={"x": good})
    return [after_bad, after_good]


# Worker processes take seconds to start on a busy machine: the process variants are slow.
@pytest.mark.parametrize("executor", ["inline", pytest.param("process", marks=pytest.mark.slow)])
def test_a_failing_task_stops_only_its_dependants(tmp_path: Path, executor: str) -> None:
    failures: dict[str, Exception] = {}
    runner = InlineExecutor(1) if executor == "inline" else ProcessExecutor(2)

    records = run_plan(_graph(), Store(tmp_path), runner, show_progress=False, failures=failures)

    assert sorted(r.name for r in records.values()) == ["after-good", "good"]
    assert {r.name: r.result["value"] for r in records.values()} == {"good": 2, "after-good": 3}
    by_name = {t.name: t for t in (*_graph(), *(i for t in _graph() for i in t.inputs.values()))}
    assert "failing as its params ask" in str(failures[by_name["bad"].id])
    skipped = failures[by_name["after-bad"].id]
    assert isinstance(skipped, InputFailed) and "input bad failed" in str(skipped)
    assert skipped.cause is failures[by_name["bad"].id]


def test_without_failures_the_first_error_stops_the_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="failing as its params ask"):
        run_plan(_graph(), Store(tmp_path), InlineExecutor(1), show_progress=False)


# Processes left behind: the run goes in its own session, whose members are counted after.

SCRIPT = """
import sys, time
from sublearn.engine.executors import ProcessExecutor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.support import debug_kinds

debug_kinds.register()
mode = sys.argv[2]
slow = {"steps": 50} if mode == "signal" else {}
tasks = [
    Task("debug.write", f"t{i}", {"value": i, "fail": mode == "error" and i == 1, **slow},
         runtime={"step_seconds": 0.2})
    for i in range(4)
]
run_plan(tasks, Store(sys.argv[1]), ProcessExecutor(2), show_progress=False)
"""


def _session(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _left_behind(sid: int, wait: float = 10.0) -> list[int]:
    deadline = time.monotonic() + wait
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _session(sid)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("normal", marks=pytest.mark.slow),
        pytest.param("error", marks=pytest.mark.slow),
        "signal",
    ],
)
def test_no_process_outlives_a_run(tmp_path: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store"), mode],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if mode == "signal":
            deadline = time.monotonic() + 60
            while len(_session(proc.pid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)  # the run, its workers (and the resource tracker)
            assert len(_session(proc.pid)) >= 3
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
        assert code == {"normal": 0, "error": 1, "signal": -signal.SIGTERM}[mode], proc.stderr
        assert _left_behind(proc.pid) == []
    finally:
        for pid in _session(proc.pid):  # only processes of the run this test started
            os.kill(pid, signal.SIGKILL)

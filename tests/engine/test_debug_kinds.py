"""The debug kinds: what they write, resume from state, log and refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.engine.executors import execute_task
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.support.debug_kinds import read_log


def test_write_and_sum_outputs(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    a = Task("debug.write", "a", {"value": 1, "rows": 2, "steps": 2}, runtime={"log": str(log)})
    b = Task("debug.write", "b", {"value": 2.5})
    total = Task("debug.sum", "s", {"offset": 10}, inputs={"x": a, "y": b})
    store = Store(tmp_path / "store")
    for task in (a, b, total):
        outcome = execute_task(task.spec(), str(store.root))
        assert outcome["cached"] is False
    assert json.loads((store.path(total.id) / "value.json").read_text()) == {"value": 13.5}
    rows = (store.path(a.id) / "data" / "rows.jsonl").read_text().splitlines()
    assert [json.loads(r) for r in rows] == [{"i": 0, "value": 1}, {"i": 1, "value": 1}]
    steps = json.loads((store.path(a.id) / "steps.json").read_text())
    assert steps == [{"step": 0, "value": 1}, {"step": 1, "value": 1}]
    assert store.marker(total.id)["result"] == {"value": 13.5, "steps": 0}
    events = [(e["event"], e.get("step")) for e in read_log(log)]
    assert events == [("start", None), ("step", 0), ("step", 1), ("end", None)]
    assert not store.state_dir(a.id).exists()  # state goes once the task is done


def test_saved_steps_are_not_redone(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    task = Task("debug.write", "a", {"value": 7, "steps": 3}, runtime={"log": str(log)})
    store = Store(tmp_path / "store")
    state = store.state_dir(task.id)
    state.mkdir(parents=True)
    (state / "step-000.json").write_text(json.dumps({"step": 0, "value": 7}))
    execute_task(task.spec(), str(store.root))
    events = [(e["event"], e.get("step")) for e in read_log(log)]
    assert events == [("start", None), ("skip", 0), ("step", 1), ("step", 2), ("end", None)]


def test_fail_raises_and_leaves_nothing_done(tmp_path: Path) -> None:
    task = Task("debug.write", "bad", {"value": 1, "fail": True})
    store = Store(tmp_path / "store")
    with pytest.raises(RuntimeError, match="bad: failing"):
        execute_task(task.spec(), str(store.root))
    assert not store.is_done(task.id)


def test_runtime_switches_do_not_change_keys() -> None:
    plain = Task("debug.write", "a", {"value": 1})
    switched = Task(
        "debug.write", "a", {"value": 1}, runtime={"die_at": "end", "log": "x", "step_seconds": 1}
    )
    assert plain.key == switched.key
    assert plain.key != Task("debug.write", "a", {"value": 2}).key

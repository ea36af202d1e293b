"""Compatible tasks run as one group (students as one batched model) and write exactly
what they would alone: one store entry and done-marker each, the same bytes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sublearn.engine.executors import InlineExecutor, ProcessExecutor
from sublearn.engine.runner import MAX_GROUP, _units, run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.engine.graph_script import SerialExecutor, leftovers, snapshot
from tests.support.debug_kinds import read_log


def _graph(log: Path, group: str | None, n: int = 6, **runtime: object) -> list[Task]:
    """``n`` sums of one written value, each with its own offset (students of one pair)."""
    rt = {"log": str(log), **runtime}
    source = Task("debug.write", "source", {"value": 5}, runtime=rt)
    params = {"group": group} if group is not None else {}
    return [
        Task("debug.sum", f"s{i}", {**params, "offset": i, "steps": 1}, {"x": source}, rt)
        for i in range(n)
    ]


def _values(store: Store, tasks: list[Task]) -> list[int]:
    return [store.marker(t.id)["result"]["value"] for t in tasks]


def test_a_group_writes_what_its_tasks_write_alone(tmp_path: Path) -> None:
    alone = _graph(tmp_path / "alone.log", None)
    run_plan(alone, Store(tmp_path / "alone"), SerialExecutor(), show_progress=False)
    grouped = _graph(tmp_path / "grouped.log", "g")
    records = run_plan(grouped, Store(tmp_path / "g"), SerialExecutor(), show_progress=False)
    groups = [e for e in read_log(tmp_path / "grouped.log") if e["event"] == "group"]
    assert [g["size"] for g in groups] == [6]  # one slot: all six in one group
    assert not [e for e in read_log(tmp_path / "alone.log") if e["event"] == "group"]
    assert _values(Store(tmp_path / "g"), grouped) == [5, 6, 7, 8, 9, 10]
    assert all(not records[t.id].cached for t in grouped)
    # Keys ignore the group: the same folders, bytes apart from the group param.
    alone_files = {k.split("/")[0] for k in snapshot(tmp_path / "alone")}
    assert alone_files == {k.split("/")[0] for k in snapshot(tmp_path / "g")}
    assert leftovers(tmp_path / "g") == []


def test_two_workers_get_a_group_each(tmp_path: Path) -> None:
    tasks = _graph(tmp_path / "log", "g")
    run_plan(tasks, Store(tmp_path / "store"), ProcessExecutor(2), show_progress=False)
    groups = [e for e in read_log(tmp_path / "log") if e["event"] == "group"]
    assert sorted(g["size"] for g in groups) == [3, 3]  # one group per worker slot


def test_finished_members_are_skipped_and_the_rest_run(tmp_path: Path) -> None:
    tasks = _graph(tmp_path / "log", "g")
    store = Store(tmp_path / "store")
    run_plan(tasks[:2], store, SerialExecutor(), show_progress=False)
    records = run_plan(tasks, store, InlineExecutor(1), show_progress=False)
    assert [records[t.id].cached for t in tasks] == [True, True, False, False, False, False]
    groups = [e for e in read_log(tmp_path / "log") if e["event"] == "group"]
    assert [g["size"] for g in groups] == [2, 4]  # the first run's pair, then the other four


def test_a_group_killed_inside_resumes_to_the_same_store(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from pathlib import Path
        from sublearn.engine.runner import run_plan
        from sublearn.engine.store import Store
        from tests.engine.graph_script import SerialExecutor
        from tests.engine.test_groups import _graph
        tasks = _graph(Path(sys.argv[1]), "g", die_at="step:0")
        run_plan(tasks, Store(sys.argv[2]), SerialExecutor(), show_progress=False)
        """
    )
    store = tmp_path / "store"
    died = subprocess.run([sys.executable, "-c", script, str(tmp_path / "log"), str(store)])
    assert died.returncode == -signal.SIGKILL
    tasks = _graph(tmp_path / "log", "g")
    run_plan(tasks, Store(store), SerialExecutor(), show_progress=False)
    clean = tmp_path / "clean"
    run_plan(
        _graph(tmp_path / "clean.log", "g"), Store(clean), SerialExecutor(), show_progress=False
    )
    assert snapshot(store) == snapshot(clean)
    assert leftovers(store) == []


@pytest.mark.parametrize(
    ("alone", "members", "free", "sizes"),
    [
        (0, 20, 2, [10, 10]),
        (1, 20, 2, [1, 10]),  # 20 > MAX_GROUP: two groups of 10, one slot free now
        (2, 20, 2, [1, 1]),
        (0, 40, 1, [14]),  # three even groups of at most MAX_GROUP, one slot free now
        (0, 3, 2, [2, 1]),
        (0, 0, 2, []),
    ],
)
def test_slots_go_to_lone_tasks_first_then_to_even_groups(
    tmp_path: Path, alone: int, members: int, free: int, sizes: list[int]
) -> None:
    log = tmp_path / "log"
    lone = [Task("debug.write", f"w{i}", {"value": i}) for i in range(alone)]
    grouped = _graph(log, "g", n=members)
    units = _units([*lone, *grouped], free)
    assert [len(u) for u in units] == sizes
    assert all(len(u) <= MAX_GROUP for u in units)

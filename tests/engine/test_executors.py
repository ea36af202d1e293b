"""The inline and process executors write the same store and report the same records."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from sublearn.engine.executors import ProcessExecutor
from sublearn.engine.runner import run_plan
from sublearn.engine.task import Reporter, TaskSpec
from tests.engine.graph_script import Run, build_graph, comparable, leftovers, run_graph, snapshot


def test_reference_is_complete(reference: Run) -> None:
    store, records = reference
    assert [r.name for r in records.values()] == ["a", "b", "c", "d"]
    assert not any(r.cached for r in records.values())
    assert records[build_graph()[0].id].result == {"value": 15, "steps": 0}  # (1 + 2) + 2 + 10
    assert leftovers(store.root) == []


def test_process_executor_matches_inline(tmp_path: Path, reference: Run) -> None:
    ref_store, expected = reference
    store, records = run_graph(tmp_path / "store", ProcessExecutor(2))
    assert snapshot(store.root) == snapshot(ref_store.root)
    assert comparable(records) == comparable(expected)
    assert leftovers(store.root) == []


class _Refuses:
    """An executor that fails the test if anything is submitted."""

    capacity = 2
    shows_task_progress = False

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        raise AssertionError(f"{spec.name} ran again")

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        raise AssertionError(f"{[s.name for s in specs]} ran again")

    def close(self, cancel: bool = False) -> None:
        pass


def test_finished_graph_reruns_nothing(reference: Run) -> None:
    store, first = reference
    before = snapshot(store.root)
    again = run_plan(build_graph(), store, _Refuses(), show_progress=False)
    assert all(r.cached for r in again.values())
    assert {i: r.result for i, r in again.items()} == {i: r.result for i, r in first.items()}
    # Cached records carry the time the work took when it ran, not the lookup's.
    assert {i: r.seconds for i, r in again.items()} == {i: r.seconds for i, r in first.items()}
    assert snapshot(store.root) == before

"""The Ray executor: a local loopback instance, same outputs as inline, errors and cancels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sublearn.engine.executors import RayExecutorConfig, make_executor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.engine.graph_script import Run, comparable, leftovers, run_graph, snapshot
from tests.support.debug_kinds import read_log

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_owner() -> Iterator[Any]:
    """One local Ray instance (2 CPUs, loopback) for this module, started by an executor."""
    from sublearn.engine.ray_executor import RayExecutor

    owner = RayExecutor(RayExecutorConfig(num_cpus=2))
    try:
        yield owner
    finally:
        owner.close()


def test_ray_instance_is_local_and_owned(ray_owner: Any) -> None:
    assert ray_owner.owns_instance
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.cluster_resources()["CPU"] == 2
    guest = make_executor(RayExecutorConfig(num_cpus=2))
    assert not guest.owns_instance  # type: ignore[attr-defined]
    guest.close()
    assert ray.is_initialized()  # a guest leaves the instance running


def test_ray_executor_matches_inline(tmp_path: Path, ray_owner: Any, reference: Run) -> None:
    ref_store, expected = reference
    store, records = run_graph(tmp_path / "store", make_executor(RayExecutorConfig(num_cpus=2)))
    assert snapshot(store.root) == snapshot(ref_store.root)
    assert comparable(records) == comparable(expected)
    assert leftovers(store.root) == []


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_ray_failure_raises_and_cancels_running_tasks(tmp_path: Path, ray_owner: Any) -> None:
    log = tmp_path / "log.jsonl"
    runtime = {"log": str(log), "step_seconds": 0.25}
    slow = Task("debug.write", "slow", {"value": 1, "steps": 40}, runtime=runtime)
    bad = Task("debug.write", "bad", {"value": 2, "steps": 4, "fail": True}, runtime=runtime)
    store = Store(tmp_path / "store")
    executor = make_executor(RayExecutorConfig(num_cpus=2))
    with pytest.raises(RuntimeError, match="bad: failing as its params ask"):
        run_plan([slow, bad], store, executor, show_progress=False)
    starts = [e["pid"] for e in read_log(log) if e["task"] == "slow" and e["event"] == "start"]
    assert starts, "the slow task should have been running when the other failed"
    deadline = time.monotonic() + 10
    while not _gone(starts[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(starts[0]), "the cancelled task's worker is still alive"
    assert not store.is_done(slow.id)
    assert not any(e["event"] == "end" for e in read_log(log))


def test_a_cluster_address_that_does_not_answer_is_one_clear_error_in_seconds() -> None:
    pytest.importorskip("ray")
    from sublearn.engine.ray_executor import ExecutorError

    started = time.monotonic()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ExecutorError, match="nothing answers there"):
            make_executor(RayExecutorConfig(address=address))
    with pytest.raises(ExecutorError, match="expected host:port"):
        make_executor(RayExecutorConfig(address="no-port"))
    assert time.monotonic() - started < 30

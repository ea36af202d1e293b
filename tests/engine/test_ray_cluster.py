"""A real two-node Ray cluster on loopback (head plus a worker node, as `ray start` starts
them): tasks reach it through ``executor.address``, run on both nodes and write what the
process executor writes; a toy experiment run on it gives the process executor's effects.

Slow (a cluster takes seconds to start, the experiment a minute): ``pytest -m slow
tests/engine/test_ray_cluster.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.engine.executors import ProcessExecutor, RayExecutorConfig, make_executor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.engine.graph_script import (
    Run,
    build_graph,
    comparable,
    leftovers,
    run_graph,
    snapshot,
)
from tests.experiments.numbers.conftest import DEMO, micro_overrides
from tests.support.debug_kinds import read_log
from tests.support.ray_cluster import (
    HOST,
    LoopbackCluster,
    command_line,
    descendants,
    loopback_cluster,
    loopback_usable,
    ray_cli,
)

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@dataclass
class Running:
    """The cluster, and what its head says about its nodes."""

    cluster: LoopbackCluster
    node_ids: set[str]
    node_addresses: set[str]


def _fresh_driver() -> None:
    """Skip without the tools; leave no Ray connection in this process (another module's
    local instance), since each test's executor must connect by itself."""
    if ray_cli() is None or not loopback_usable():
        pytest.skip(f"needs the ray command and the loopback address {HOST}")
    if ray.is_initialized():
        ray.shutdown()


def test_a_head_that_listens_on_127_0_0_1_only_is_reached_there(
    tmp_path: Path, reference: Run
) -> None:
    """Ray would rewrite 127.0.0.1 to the machine's outward address, where such a head
    does not listen, and retry for 13 minutes; the executor keeps the address as written."""
    _fresh_driver()
    with loopback_cluster(nodes=1, single_machine=True) as head:
        assert head.address.startswith("127.0.0.1:")
        started = time.monotonic()
        executor = make_executor(RayExecutorConfig(address=head.address))
        connected = time.monotonic() - started
        store, records = run_graph(tmp_path / "store", executor)
    assert connected < 30
    ref_store, expected = reference
    assert snapshot(store.root) == snapshot(ref_store.root)
    assert comparable(records) == comparable(expected)


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """A head and one worker node, one CPU each, until the module's tests are done."""
    _fresh_driver()
    with loopback_cluster(nodes=2, cpus_per_node=1) as cluster:
        # Ask the head which nodes joined, then disconnect: each test's executor connects
        # by itself, through executor.address, as a run does.
        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
        try:
            deadline = time.monotonic() + 60
            while len(alive := [n for n in ray.nodes() if n["Alive"]]) < 2:
                assert time.monotonic() < deadline, f"one node: {alive}\n{cluster.log_tail()}"
                time.sleep(0.5)
        finally:
            ray.shutdown()
        yield Running(
            cluster,
            {n["NodeID"] for n in alive},
            {n["NodeManagerAddress"] for n in alive},
        )


class WorkerWatch:
    """Samples, per node, which of its raylet's workers run a sublearn task.

    A node's Ray workers are children of its raylet, and a worker running a task titles
    itself ``ray::<function>``; the Ray executor's tasks run ``_run_on_worker``.
    """

    def __init__(self, cluster: LoopbackCluster) -> None:
        self.raylets = cluster.raylets()
        self.seen: list[set[int]] = [set() for _ in self.raylets]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for seen, raylet in zip(self.seen, self.raylets, strict=True):
                for pid in descendants(raylet):
                    if command_line(pid).startswith("ray::_run_on_worker"):
                        seen.add(pid)
            self._stop.wait(0.1)

    def __enter__(self) -> WorkerWatch:
        assert -1 not in self.raylets, f"a node has no raylet: {self.raylets}"
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_cluster_has_two_nodes_on_loopback(running: Running) -> None:
    assert len(running.node_ids) == 2
    assert running.node_addresses == {HOST}  # not the machine's outward address


def _graph(log: Path | None) -> list[Task]:
    """The engine's debug graph plus four independent tasks: work for both nodes at once."""
    runtime: dict[str, Any] = {"step_seconds": 0.3}
    if log is not None:
        runtime["log"] = str(log)
    extra = [
        Task("debug.write", f"w{i}", {"value": i, "rows": 2, "steps": 2}, runtime=runtime)
        for i in range(4)
    ]
    return [*build_graph(log, step_seconds=0.3), *extra]


def test_tasks_run_on_both_nodes_and_write_what_the_process_executor_writes(
    running: Running, tmp_path: Path
) -> None:
    expected_store = Store(tmp_path / "process")
    expected = run_plan(_graph(None), expected_store, ProcessExecutor(2), show_progress=False)

    log = tmp_path / "log.jsonl"
    store = Store(tmp_path / "ray")
    executor = make_executor(RayExecutorConfig(address=running.cluster.address))
    assert executor.owns_instance  # type: ignore[attr-defined]  # it connected by itself
    records = run_plan(_graph(log), store, executor, show_progress=False)

    assert not ray.is_initialized()  # the run disconnected from the cluster at its end
    assert snapshot(store.root) == snapshot(expected_store.root)
    assert comparable(records) == comparable(expected)
    assert leftovers(store.root) == []
    ran_on = {e["task"]: e["ray_node"] for e in read_log(log) if e["event"] == "start"}
    assert sorted(ran_on) == ["a", "b", "c", "d", "w0", "w1", "w2", "w3"]
    assert set(ran_on.values()) == running.node_ids, ran_on  # every node took tasks


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _run(store: Path, out: Path, executor: str, *more: str) -> dict[str, Any]:
    sets = [x for o in [*micro_overrides(store, executor), *more] for x in ("--set", o)]
    code, output = _invoke("run", str(DEMO), "--out", str(out), *sets)
    assert code == 0, output
    assert "Traceback" not in output
    return json.loads((out / "summary.json").read_text())


def _effects(summary: dict[str, Any]) -> Any:
    rows = [{k: v for k, v in row.items() if k != "warnings"} for row in summary["effects"]]
    return _approx(rows)


def _approx(value: Any) -> Any:
    """Numbers to float tolerance, as the fault tests compare them: students batched in
    other groups (on other workers) round differently in the last bits."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-4)
    return value


def test_a_toy_experiment_on_the_cluster_gives_the_process_executors_results(
    running: Running, tmp_path: Path
) -> None:
    expected = _run(tmp_path / "process-store", tmp_path / "process-run", "process")
    with WorkerWatch(running.cluster) as watch:
        summary = _run(
            tmp_path / "store",
            tmp_path / "run",
            "ray",
            f"executor.address={running.cluster.address}",
        )
    assert _effects(summary) == _effects(expected)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["tasks"] and not any(t["cached"] for t in manifest["tasks"])
    assert all(watch.seen), f"a node ran no task: {watch.seen}"  # both nodes worked
    assert not ray.is_initialized()

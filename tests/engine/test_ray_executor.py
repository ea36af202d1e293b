"""The Ray executor: a local loopback instance, same outputs as inline, errors and cancels."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.engine.executors import RayExecutorConfig, make_executor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task
from tests.engine.graph_script import Run, comparable, leftovers, run_graph, snapshot
from tests.experiments.numbers.conftest import DEMO, micro_overrides
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


@pytest.fixture
def listener() -> Iterator[Any]:
    """Start a loopback TCP server that is not Ray: it sends ``reply`` (or nothing) to
    every connection and keeps it open; yields a function that starts one, by reply."""
    servers: list[socket.socket] = []
    held: list[socket.socket] = []

    def start(reply: bytes) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed at the end of the test
                    return
                held.append(conn)
                if reply:
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[1]

    yield start
    for sock in [*held, *servers]:
        sock.close()


@pytest.mark.parametrize(
    "reply",
    [b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"-ERR unknown\r\n"],
    ids=["silent", "http1", "redis-like"],
)
def test_an_address_where_something_else_listens_is_one_clear_error_in_seconds(
    listener: Any, reply: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray would wait there for minutes: another service's port is not a Ray head."""
    from sublearn.engine import ray_executor

    monkeypatch.setattr(ray_executor, "ANSWER_SECONDS", 1.0)
    port = listener(reply)
    started = time.monotonic()
    with pytest.raises(ray_executor.ExecutorError, match="it is not a Ray head"):
        make_executor(RayExecutorConfig(address=f"127.0.0.1:{port}"))
    assert time.monotonic() - started < 5


def test_with_tls_only_the_connection_is_checked(
    listener: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS head would answer the plain HTTP/2 hello with a TLS alert, not refuse Ray."""
    from sublearn.engine import ray_executor

    monkeypatch.setenv("RAY_USE_TLS", "1")
    ray_executor._require_answer(f"127.0.0.1:{listener(b'')}")  # no error
    with pytest.raises(ray_executor.ExecutorError, match="nothing answers there"):
        ray_executor._require_answer("127.0.0.1:1")


def test_loopback_addresses_are_kept_as_written_while_connecting() -> None:
    """Ray rewrites 127.0.0.1, localhost and ::1 to the outward address unless multi-node
    clusters are off; the switch is off only while connecting to such an address."""
    from ray._private import ray_constants

    from sublearn.engine.ray_executor import _address_as_written

    before = ray_constants.ENABLE_RAY_CLUSTER
    for address in ("127.0.0.1:6379", "localhost:6379", "[::1]:6379", "ray://127.0.0.1:10001"):
        with _address_as_written(address):
            assert ray_constants.ENABLE_RAY_CLUSTER is False, address
        assert before == ray_constants.ENABLE_RAY_CLUSTER
    for address in ("10.0.0.5:6379", "127.0.0.2:6379", "head.example.org:6379"):
        with _address_as_written(address):
            assert before == ray_constants.ENABLE_RAY_CLUSTER, address


def test_sublearn_run_with_an_address_that_does_not_answer_stops_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command: exit 2, one message, no traceback, nothing in the store; the
    executor gives up in seconds (Ray's own connect waited 13.7 minutes, then a traceback).

    The executor's time is measured, not the command's: on a busy machine importing
    the libraries alone can take longer than the 30 s the executor is allowed.
    """
    from sublearn.engine.ray_executor import RayExecutor

    spent: list[float] = []
    original = RayExecutor.__init__

    def timed(self: RayExecutor, cfg: RayExecutorConfig) -> None:
        started = time.monotonic()
        try:
            original(self, cfg)
        finally:
            spent.append(time.monotonic() - started)

    monkeypatch.setattr(RayExecutor, "__init__", timed)
    store, out = tmp_path / "store", tmp_path / "run"
    overrides = [*micro_overrides(store, "ray"), "executor.address=127.0.0.1:1"]
    sets = [x for o in overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, ["run", str(DEMO), "--out", str(out), *sets])
    assert result.exit_code == 2, result.output
    assert "executor.address 127.0.0.1:1: nothing answers there" in result.output
    assert "Traceback" not in result.output
    assert len(spent) == 1 and spent[0] < 30
    assert not list(store.glob("*/*/done.json"))  # no task ran
    assert not (out / "summary.json").exists()

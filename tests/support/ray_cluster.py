"""A real multi-node Ray cluster on this machine's loopback, started as ``ray start`` would.

Each node is its own ``ray start --block`` process (the head with ``--head``, the others
with ``--address``), in its own process group, with its own CPUs; they share a short
temporary folder (``--temp-dir``). Stopping kills every process the nodes started, by
process group and by parenthood, never by name: ``ray stop`` would also stop other
people's Ray instances on the machine.

Every node registers at :data:`HOST`, a loopback address that is not ``127.0.0.1``. Ray
treats ``127.0.0.1``, ``localhost`` and ``::1`` (what its ``is_localhost`` recognizes)
as "find this machine's address" and rewrites them to the outward interface
(``ray._private.services.resolve_ip_for_localhost``) whenever multi-node clusters are
enabled, which ``ray start --address`` requires on Linux; any other address, such as
``127.0.0.2`` (the whole of 127.0.0.0/8 is loopback on Linux), is taken as given. The
single-machine switch the local executor uses (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``)
makes ``ray start --address`` refuse to add a node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.2"
"""Where every node of the test cluster registers (loopback, not rewritten by Ray)."""

STARTED = "Ray runtime started."  # what `ray start` prints once its node has joined


def loopback_usable() -> bool:
    """Whether :data:`HOST` can be bound here (Linux routes all of 127/8 to loopback)."""
    with contextlib.suppress(OSError), socket.socket() as probe:
        probe.bind((HOST, 0))
        return True
    return False


def ray_cli() -> Path | None:
    """The ``ray`` command of this interpreter's environment, if installed."""
    path = Path(sys.executable).parent / "ray"
    return path if path.is_file() else None


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> set[int]:
    """Every process below ``root`` in the process tree (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    """A process's command line as it shows it now (Ray workers retitle themselves)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class LoopbackCluster:
    """A running cluster: its address, its node processes and their logs."""

    host: str
    port: int
    temp_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``host:port`` of the head's GCS: what ``executor.address`` names."""
        return f"{self.host}:{self.port}"

    def raylets(self) -> list[int]:
        """The raylet of each node, in node order (a node's workers are its children)."""
        found = []
        for node in self.nodes:
            raylets = [p for p in descendants(node.pid) if "raylet" in command_line(p)]
            found.append(raylets[0] if raylets else -1)
        return found

    def processes(self) -> set[int]:
        """Every process the nodes started, with the ``ray start`` processes themselves."""
        return {pid for node in self.nodes for pid in {node.pid, *descendants(node.pid)}}

    def log_tail(self, chars: int = 3000) -> str:
        """The end of each node's ``ray start`` output, for a failure message."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}" for log in self.logs)


def _start_node(cluster: LoopbackCluster, args: list[str], env: dict[str, str]) -> None:
    """Start one node's ``ray start --block`` in its own process group."""
    cli = ray_cli()
    assert cli is not None, "the ray command is not installed"
    log = cluster.temp_dir / f"node{len(cluster.nodes)}.log"
    cluster.logs.append(log)
    with log.open("w") as out:
        cluster.nodes.append(
            subprocess.Popen(
                [
                    str(cli),
                    "start",
                    "--block",
                    f"--node-ip-address={cluster.host}",
                    f"--temp-dir={cluster.temp_dir}",
                    "--disable-usage-stats",
                    # Each node on its own free ports: two nodes (or two test runs) on one
                    # machine must not both want Ray's defaults.
                    f"--dashboard-agent-listen-port={_free_port(cluster.host)}",
                    f"--metrics-export-port={_free_port(cluster.host)}",
                    *args,
                ],
                env=env,
                cwd=os.getcwd(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to kill it whole
            )
        )


def _wait(cluster: LoopbackCluster, ready: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [i for i, node in enumerate(cluster.nodes) if node.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"node {dead} exited" if dead else f"not within {timeout:g} s"
            raise RuntimeError(f"{what} ({why})\n{cluster.log_tail()}")
        time.sleep(0.2)


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def stop(cluster: LoopbackCluster, timeout: float = 20.0) -> list[str]:
    """Kill every process of the cluster; return those still alive after ``timeout``.

    SIGKILL, not SIGTERM: a node told to stop drains for up to 30 s first, and nothing in
    a test cluster needs saving. Processes are killed by process group (each node's
    ``ray start`` leads one) and then one by one, for any that left the group.
    """
    pids = cluster.processes()
    for node in cluster.nodes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for node in cluster.nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{p} {command_line(p)}" for p in sorted(pids) if _alive(p)]


@contextlib.contextmanager
def loopback_cluster(
    nodes: int = 2,
    cpus_per_node: int = 1,
    single_machine: bool = False,
    timeout: float = 180.0,
) -> Iterator[LoopbackCluster]:
    """Start a head and ``nodes - 1`` worker nodes on loopback; stop them all after.

    Args:
        nodes: how many nodes, the head included.
        cpus_per_node: the CPUs each node offers to Ray.
        single_machine: one head on ``127.0.0.1`` with Ray's single-machine setting
            (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), whose servers listen on
            ``127.0.0.1`` only; Ray then refuses to add nodes. Otherwise every node
            registers at :data:`HOST` (and Ray's servers listen on every interface).
        timeout: seconds each node may take to start (a loaded machine is slow).

    Yields:
        The cluster, every node started and joined.
    """
    assert nodes == 1 or not single_machine, "a single-machine head takes no other node"
    host = "127.0.0.1" if single_machine else HOST
    # Short: Ray's Unix sockets live under it, and a socket path has at most 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="slray-", dir="/tmp"))
    cluster = LoopbackCluster(host=host, port=_free_port(host), temp_dir=temp_dir)
    # The same environment on every node, the checkout importable by every worker (the
    # debug kinds live in tests/, not in the package), and token authentication off on
    # every node alike: Ray turns it on for a head that finds a token in ~/.ray (a local
    # ray.init() leaves one there) but not for a node joining it.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    if single_machine:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    cpus = f"--num-cpus={cpus_per_node}"
    left: list[str] = []
    try:
        head = ["--head", f"--port={cluster.port}", cpus, "--include-dashboard=false"]
        _start_node(cluster, head, env)
        _wait(cluster, lambda: _answers(host, cluster.port), "no GCS answers", timeout)
        for i in range(nodes):
            if i:
                _start_node(cluster, [f"--address={cluster.address}", cpus], env)
            log = cluster.logs[i]
            _wait(
                cluster,
                lambda log=log: STARTED in log.read_text(),
                f"node {i} did not start",
                timeout,
            )
        yield cluster
    finally:
        left = stop(cluster)
        if not left:
            shutil.rmtree(temp_dir, ignore_errors=True)
    # Only when nothing else failed: an error inside the cluster's life matters more.
    assert not left, f"Ray processes outlived the cluster: {left}"

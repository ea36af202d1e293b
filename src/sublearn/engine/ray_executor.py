"""Run tasks as Ray tasks: on a local Ray instance or on a cluster.

Ray is imported only here, when a config asks for this executor. Every task goes
through :func:`~sublearn.engine.executors.execute_task`, like on the other executors, so
the store protocol (lock, temporary folder, done-marker, atomic rename) is the same and
outputs are byte-identical wherever they ran.

On a cluster, every node must have sublearn (and the libraries its task kinds use)
installed in the Python environment its Ray workers run in, and must see the store
folder at the same path (a shared file system): workers import the task functions by
name and read and write the store directly; nothing but the task's description and its
small summary travels through Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from sublearn.engine.executors import (
    RayExecutorConfig,
    execute_group,
    execute_task,
    run_portably,
)
from sublearn.engine.task import Reporter, TaskSpec
from sublearn.errors import SublearnError

# Environment of a local instance, set while it starts (its processes inherit it).
_LOCAL_ENV = {
    # Ray resolves the node address to the machine's outward IP on Linux unless told that
    # this is a single-machine instance; with it, every Ray server listens on 127.0.0.1.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A local experiment has no reason to report usage to anyone.
    "RAY_USAGE_STATS_ENABLED": "0",
}

# Read by the Hugging Face libraries when a task first imports them. Setting them is
# what quiet_libraries() does without its import cost, which a worker that only runs
# cheap tasks would pay for nothing.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


def _run_on_worker(
    spec: TaskSpec | list[TaskSpec], store_root: str, threads: int
) -> dict[str, Any] | list[dict[str, Any]]:
    """The body of the Ray task: quiet libraries, torch threads as reserved, then run one
    task (or a group, given a list)."""
    from sublearn.runtime import configure_threads

    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Workers are reused across tasks of different sizes: set the threads every time.
    configure_threads(threads)
    if isinstance(spec, list):
        return run_portably(execute_group, spec, store_root)
    return run_portably(execute_task, spec, store_root)


def _settle(future: Future, ray_future: Future) -> None:
    """Pass Ray's outcome on; a sublearn error comes out as itself.

    Ray raises a task's error as a ``RayTaskError`` that also subclasses the error's own
    class, but whose message is the worker's whole traceback. A user's error (a
    :class:`~sublearn.errors.SublearnError`, e.g. a server that does not answer) must
    read as its one-line message, as under the other executors; bugs keep Ray's
    traceback.
    """
    from sublearn.errors import SublearnError

    if ray_future.cancelled():
        future.cancel()
        return
    err = ray_future.exception()
    if err is None:
        future.set_result(ray_future.result())
        return
    cause = getattr(err, "cause", None)
    future.set_exception(cause if isinstance(cause, SublearnError) else err)


ANSWER_SECONDS = 10.0
"""How long a cluster address may take to accept a connection, and then to answer, before
the run gives up."""

# A client's HTTP/2 connection preface and an empty SETTINGS frame (RFC 9113, 3.4): any
# gRPC server, which Ray's GCS (host:6379) and its client server (ray://host:10001) are,
# answers with a SETTINGS frame of its own before anything else.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4  # the frame type, the fourth byte of a frame's 9-byte header


class ExecutorError(SublearnError, RuntimeError):
    """An executor that cannot start: a cluster address that does not answer."""


def _first_frame(sock: Any) -> bytes:
    """The first 9 bytes the server sends after the HTTP/2 hello (fewer if it closes)."""
    sock.sendall(_HTTP2_HELLO)
    header = b""
    while len(header) < 9:
        chunk = sock.recv(9 - len(header))
        if not chunk:
            break
        header += chunk
    return header


def _require_answer(address: str) -> None:
    """Fail in seconds, with one message, when no Ray head answers at a cluster address.

    Ray's own connect retries for minutes before a raw ``ConnectionError`` when nothing
    listens there, and waits longer still, silently, when something that is not Ray
    listens (another service's port): so the address must accept a connection and answer
    an HTTP/2 hello as a gRPC server does, each within :data:`ANSWER_SECONDS`.
    """
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(
            f"executor.address {address!r}: expected host:port (e.g. 10.0.0.5:6379) or "
            "ray://host:10001"
        )
    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address, [::1]:6379
    # A cluster with TLS (Ray reads RAY_USE_TLS) answers a plain HTTP/2 hello with a TLS
    # alert: there, only the connection is checked.
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    try:
        with socket.create_connection((host, int(port)), timeout=ANSWER_SECONDS) as sock:
            try:
                header = b"" if tls else _first_frame(sock)
            except OSError:  # timed out, or reset: nothing that speaks gRPC
                header = b""
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ExecutorError(
            f"executor.address {address}: nothing answers there ({why} within "
            f"{ANSWER_SECONDS:g} s); start the cluster's head (ray start --head "
            "--port=6379) or fix the address"
        ) from None
    if not tls and (len(header) < 9 or header[3] != _SETTINGS):
        raise ExecutorError(
            f"executor.address {address}: something listens there, but it is not a Ray "
            f"head (no gRPC answer within {ANSWER_SECONDS:g} s); use the port `ray start "
            "--head` printed (6379 by default, or ray://host:10001 for Ray Client)"
        )


@contextlib.contextmanager
def _local_environment() -> Iterator[None]:
    """Set what a loopback-only local instance needs while it starts, then restore it.

    The started processes inherit the environment; this process read it when it first
    imported Ray, so the constant Ray derived from it is switched too.
    """
    from ray._private import ray_constants

    added = [key for key in _LOCAL_ENV if key not in os.environ]
    for key in added:
        os.environ[key] = _LOCAL_ENV[key]
    cluster = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and cluster is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        if cluster is not None:
            ray_constants.ENABLE_RAY_CLUSTER = cluster


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""The host names Ray's ``is_localhost`` recognizes (and rewrites); other 127.x are kept."""


@contextlib.contextmanager
def _address_as_written(address: str) -> Iterator[None]:
    """Connect to a loopback cluster address as written, not to this machine's outward one.

    Ray rewrites ``127.0.0.1``, ``localhost`` and ``::1`` in a cluster address to the
    machine's outward address (``services.resolve_ip_for_localhost``) whenever multi-node
    clusters are enabled, as they are on Linux. A head that listens on loopback only (one
    started with the single-machine setting) is then never reached: ``ray.init`` retries
    for 13 minutes before a ``ConnectionError``. With the setting off while this process
    connects, the address is used as given; a head that listens on every interface
    answers there too.
    """
    from ray._private import ray_constants

    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    cluster = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if host in _LOOPBACK and cluster is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if cluster is not None:
            ray_constants.ENABLE_RAY_CLUSTER = cluster


class RayExecutor:
    """Runs task specs as Ray tasks, each reserving ``cpus_per_task`` and ``gpus_per_task``.

    With ``cfg.address`` it connects to that cluster (``ray://host:10001`` or
    ``host:6379``); without, it starts a private local instance with ``cfg.num_cpus``
    CPUs that listens on 127.0.0.1 only and has no dashboard. If Ray is already
    initialized in this process, that instance is used as it is. The executor shuts
    down only an instance it started.

    Worker output is not forwarded to this process (it would tear the progress bars);
    it stays in Ray's session logs (``/tmp/ray/session_latest/logs``). A task's error
    comes back as an exception that is an instance of the task's own exception class.
    """

    shows_task_progress = False

    def __init__(self, cfg: RayExecutorConfig) -> None:
        """Connect to, or start, the Ray instance ``cfg`` describes.

        Args:
            cfg: the Ray executor settings.
        """
        import ray

        self.cfg = cfg
        self.capacity = cfg.max_in_flight
        self.owns_instance = False
        if cfg.address:
            _require_answer(cfg.address)  # in seconds, not after Ray's minutes of retries
        if not ray.is_initialized():
            quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
            if cfg.address:
                try:
                    with _address_as_written(cfg.address):
                        ray.init(address=cfg.address, **quiet)
                except (ConnectionError, TimeoutError, RuntimeError) as err:
                    raise ExecutorError(
                        f"executor.address {cfg.address}: Ray could not join the cluster "
                        f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                        "check that the head runs (ray start --head) with this machine's Ray "
                        "and Python versions"
                    ) from None
            else:
                with _local_environment():
                    # "local" always starts a new instance, never joins one found on disk.
                    ray.init(
                        address="local",
                        num_cpus=cfg.num_cpus,
                        include_dashboard=False,
                        ignore_reinit_error=True,
                        _node_ip_address="127.0.0.1",
                        **quiet,
                    )
            self.owns_instance = True
        self._remote = ray.remote(_run_on_worker).options(
            num_cpus=cfg.cpus_per_task,
            num_gpus=cfg.gpus_per_task,
            # A task that fails is a bug or bad input; rerunning it would fail again, and a
            # worker lost mid-task is retried by rerunning the plan, which resumes it.
            max_retries=0,
        )
        self._threads = max(1, math.floor(cfg.cpus_per_task))
        self._running: dict[Future, Any] = {}

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        """Start the task on Ray; the future resolves to :func:`execute_task`'s result.

        ``reporter`` is not used: progress inside a task does not travel back from Ray.
        """
        return self._start(spec, store_root)

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        """Start a group of tasks as one Ray task; resolves to :func:`execute_group`'s result."""
        return self._start(list(specs), store_root)

    def _start(self, payload: TaskSpec | list[TaskSpec], store_root: str) -> Future:
        ref = self._remote.remote(payload, store_root, self._threads)
        future: Future = Future()
        self._running[future] = ref
        ref.future().add_done_callback(lambda done: _settle(future, done))
        future.add_done_callback(lambda done: self._running.pop(done, None))
        return future

    def close(self, cancel: bool = False) -> None:
        """Forget the tasks; with ``cancel``, kill the running ones. Shut down an owned instance."""
        import ray

        if cancel:
            for ref in list(self._running.values()):
                # A task already finished or gone is nothing to cancel.
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        self._running.clear()
        if self.owns_instance and ray.is_initialized():
            ray.shutdown()
        self.owns_instance = False


def from_config(cfg: RayExecutorConfig, threads: int | None = None) -> RayExecutor:
    """The executor of ``cfg`` (``threads`` is unused: each Ray task reserves its own CPUs)."""
    del threads
    return RayExecutor(cfg)

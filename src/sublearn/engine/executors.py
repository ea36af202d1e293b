"""Executors run tasks: in this process, in local worker processes, or on Ray.

Every executor calls :func:`execute_task`, which does the store protocol (lock, check,
write into a temporary folder, done-marker, rename), so where a task runs never changes
what it writes.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from sublearn.config import Config
from sublearn.engine.store import Store
from sublearn.engine.task import Reporter, TaskContext, TaskSpec, group_function, task_function
from sublearn.errors import StoreError
from sublearn.registry import Registry


def _no_progress(done: int, total: int) -> None:
    return None


def execute_task(spec: TaskSpec, store_root: str, reporter: Reporter | None = None) -> dict:
    """Run one task through the store protocol; a finished task is not run again.

    Args:
        spec: the task.
        store_root: the store folder.
        reporter: optional progress callback inside the task.

    Returns:
        ``{"cached": bool, "seconds": float, "result": dict}``.
    """
    (outcome,) = execute_group([spec], store_root, reporter)
    return outcome


def execute_group(
    specs: list[TaskSpec], store_root: str, reporter: Reporter | None = None
) -> list[dict]:
    """Run tasks of one kind as a group (a kind's ``group``) through the store protocol.

    Each task keeps its own lock, temporary folder, state folder and done-marker, so a
    group writes what its tasks would write one by one; finished ones are skipped. One
    task alone runs through its kind's own function. The group's time is shared equally
    among the tasks it ran.

    Returns:
        One ``{"cached", "seconds", "result"}`` per spec, in order.
    """
    store = Store(store_root)
    outcomes: dict[str, dict] = {}
    with ExitStack() as locks:
        todo = []
        for spec in sorted(specs, key=lambda s: s.id):  # one lock order: no deadlock
            if not store.is_done(spec.id):
                locks.enter_context(store.lock(spec.id))
            if store.is_done(spec.id):  # finished before, or while we waited
                outcomes[spec.id] = {"cached": True, **_summary(store.marker(spec.id))}
            else:
                todo.append(spec)
        contexts = [_context(store, spec, reporter) for spec in todo]
        try:
            started = time.time()
            if len(contexts) == 1:
                results = [task_function(todo[0])(contexts[0]) or {}]
            elif contexts:
                results = group_function(todo[0])(contexts)
            else:
                results = []
            share = (time.time() - started) / max(1, len(todo))
            for spec, ctx, result in zip(todo, contexts, results, strict=True):
                marker = {
                    "kind": spec.kind,
                    "name": spec.name,
                    "params": spec.params,
                    "inputs": spec.inputs,
                    "runtime": spec.runtime,
                    "result": result,
                }
                store.commit(spec.id, ctx.out, marker, time.time() - share)
                outcomes[spec.id] = {"cached": False, **_summary(store.marker(spec.id))}
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise _disk_full(store, todo, contexts) from None
    return [outcomes[spec.id] for spec in specs]


def _disk_full(store: Store, specs: list[TaskSpec], contexts: list[TaskContext]) -> StoreError:
    """Remove the temporary outputs of tasks that hit a full disk; the error to raise.

    The bytes they had written when the disk filled are a lower bound on what they need.
    """
    written = 0
    for ctx in contexts:
        if ctx.out.exists():
            written += sum(p.stat().st_size for p in ctx.out.rglob("*") if p.is_file())
            shutil.rmtree(ctx.out, ignore_errors=True)
    names = ", ".join(s.name for s in specs)
    free = shutil.disk_usage(store.root).free
    return StoreError(
        f"no space left on the device holding the store {store.root} while writing {names}: "
        f"it had written {_size(written)} and needs more (free now: {_size(free)}); its "
        "temporary folder was removed: free space (e.g. `sublearn store gc`) and rerun"
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _context(store: Store, spec: TaskSpec, reporter: Reporter | None) -> TaskContext:
    """A fresh temporary output and the kept state folder of a task about to run."""
    for role, input_id in spec.inputs.items():
        if not store.is_done(input_id):
            raise StoreError(f"{spec.name}: its input {role} ({input_id}) is not finished")
    store.clean_stale(spec.id)
    tmp = store.new_output(spec.id)
    state = store.state_dir(spec.id)
    state.mkdir(parents=True, exist_ok=True)
    return TaskContext(
        spec=spec,
        out=tmp,
        inputs={role: store.path(i) for role, i in spec.inputs.items()},
        state=state,
        progress=reporter or _no_progress,
    )


def _summary(marker: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": marker.get("seconds", 0.0), "result": marker.get("result", {})}


class TaskError(RuntimeError):
    """A task's exception that could not travel back from its worker as itself.

    Exceptions cross process boundaries by pickling; some libraries' do not survive it
    (their constructors take keyword-only arguments), which would break the process pool
    and hide the cause. This one carries the original's type, message and traceback as
    text; sublearn's own errors always travel as themselves.
    """


def portable(err: BaseException) -> BaseException:
    """``err`` itself when it survives pickling, else a :class:`TaskError` describing it."""
    try:
        copy = pickle.loads(pickle.dumps(err))
    except Exception:  # any failure to pickle or to rebuild: send a description instead
        copy = None
    if type(copy) is type(err) and str(copy) == str(err):
        return err
    described = "".join(traceback.format_exception(err)).rstrip()
    return TaskError(f"{type(err).__name__}: {err}\n\nin the worker:\n{described}")


def run_portably(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` in a worker; an exception it raises is made :func:`portable` first."""
    try:
        return fn(*args)
    except Exception as err:
        carried = portable(err)
        if carried is err:
            raise
        raise carried from None


class Executor(Protocol):
    """Runs task specs; ``capacity`` of them at once."""

    capacity: int
    shows_task_progress: bool

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        """Start a task; the future's result is :func:`execute_task`'s."""
        ...

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        """Start a group of tasks in one slot; the result is :func:`execute_group`'s."""
        ...

    def close(self, cancel: bool = False) -> None:
        """Release workers; ``cancel`` stops running tasks too."""
        ...


class InlineExecutor:
    """Runs each task in this process, one at a time (debugging, GPUs, small runs)."""

    capacity = 1
    shows_task_progress = True

    def __init__(self, threads: int | None = None) -> None:
        """Set this process's torch threads for the tasks it runs."""
        from sublearn.runtime import configure_threads

        configure_threads(threads)

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        """Run the task now; the returned future is already resolved."""
        return self.submit_group([spec], store_root, reporter)

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        """Run the tasks now as a group; the returned future is already resolved."""
        future: Future = Future()
        try:
            outcomes = execute_group(specs, store_root, reporter)
            future.set_result(outcomes[0] if len(specs) == 1 else outcomes)
        except BaseException as err:  # the runner re-raises it where it waits
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(err)
        return future

    def close(self, cancel: bool = False) -> None:
        """Nothing to release."""


def _worker_init(threads: int, parent: int) -> None:
    from sublearn.runtime import configure_threads, die_with_parent, quiet_libraries

    die_with_parent(parent)

    quiet_libraries()
    configure_threads(threads)


class ProcessExecutor:
    """Runs tasks in local worker processes, each with its own torch threads.

    On a small CPU, tiny models train faster as several single-threaded jobs than as one
    multi-threaded job. Workers are spawned (forking a process that has used torch can
    deadlock) and die with their parent.
    """

    shows_task_progress = False

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        """Start the pool lazily with ``workers`` processes."""
        self.capacity = workers
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(threads_per_worker, os.getpid()),
        )

    def submit(self, spec: TaskSpec, store_root: str, reporter: Reporter) -> Future:
        """Queue the task on the pool."""
        return self.pool.submit(run_portably, execute_task, spec, store_root)

    def submit_group(self, specs: list[TaskSpec], store_root: str, reporter: Reporter) -> Future:
        """Queue a group of tasks on one worker."""
        return self.pool.submit(run_portably, execute_group, specs, store_root)

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; with ``cancel``, kill running workers too."""
        if cancel:
            processes = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            for process in processes:
                process.join(timeout=5)
        else:
            self.pool.shutdown(wait=True)


class InlineExecutorConfig(Config):
    """Run every task in the calling process, one at a time."""

    kind: Literal["inline"] = Field(default="inline", description="Executor kind.")


class ProcessExecutorConfig(Config):
    """Run tasks in local worker processes."""

    kind: Literal["process"] = Field(default="process", description="Executor kind.")
    workers: int = Field(default=2, ge=1, description="Worker processes (tasks at once).")
    threads_per_worker: int = Field(default=1, ge=1, description="torch threads per worker.")


class RayExecutorConfig(Config):
    """Run tasks as Ray tasks: a local Ray instance, or a cluster at ``address``."""

    kind: Literal["ray"] = Field(default="ray", description="Executor kind.")
    address: str | None = Field(
        default=None,
        description="Ray cluster address (e.g. ray://host:10001); None starts a local instance.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of a local instance (None: all cores)."
    )
    cpus_per_task: float = Field(default=1.0, gt=0, description="CPUs each task reserves.")
    gpus_per_task: float = Field(default=0.0, ge=0, description="GPUs each task reserves.")
    max_in_flight: int = Field(default=8, ge=1, description="Tasks submitted at once.")


ExecutorConfig = Annotated[
    InlineExecutorConfig | ProcessExecutorConfig | RayExecutorConfig,
    Field(discriminator="kind"),
]


ExecutorFactory = Callable[[Any, int | None], Executor]
"""``(config, threads) -> Executor``."""

EXECUTORS: Registry[ExecutorFactory] = Registry("executor", expected="an executor factory")
"""Executor factories by config ``kind``; Ray is imported only when its executor is built."""


@EXECUTORS("inline")
def _inline(cfg: InlineExecutorConfig, threads: int | None) -> Executor:
    return InlineExecutor(threads)


@EXECUTORS("process")
def _process(cfg: ProcessExecutorConfig, threads: int | None) -> Executor:
    return ProcessExecutor(cfg.workers, cfg.threads_per_worker)


EXECUTORS.register("ray", "sublearn.engine.ray_executor:from_config")


def make_executor(cfg: Any, threads: int | None = None) -> Executor:
    """Build the executor a config describes.

    Args:
        cfg: an executor config (inline, process or ray).
        threads: torch threads for the inline executor (None: one per core).
    """
    return EXECUTORS.get(cfg.kind)(cfg, threads)

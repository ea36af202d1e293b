"""Tasks: typed nodes of an experiment's graph, keyed by what determines their output.

A task's key hashes its kind, its semantic ``params`` and the keys of its inputs, so the
same work in two runs (or two configs) has one key and is done once. Settings that only
change speed (threads, batch and chunk sizes, the executor) live in ``runtime`` and are
left out of the key.

The function that runs a kind is named by a ``"module:function"`` string in
:data:`KINDS` and imported only when a task of that kind runs, in whichever process runs
it, so heavy dependencies load where they are used. A task's spec carries those strings
to the worker, so a kind added with :func:`register_kind` (the tests' debug kinds) runs
in worker processes that never registered it.

Every kind the package ships declares its parameters' model, a :class:`TaskParams`
(the language-model kinds' in :mod:`sublearn.engine.params`, the commands' in their task
modules): its function takes ``(ctx, params)``, the model validated from the task's
stored ``params`` and ``runtime`` before the function is called. A kind without one (the
tests' debug kinds) takes ``ctx`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from sublearn.keys import key_params, runtime_params
from sublearn.registry import Registry, load_target
from sublearn.runs import content_hash

P = TypeVar("P", bound="TaskParams")


class TaskParams(BaseModel):
    """Base of every kind's parameters: unknown fields are errors; frozen once built.

    Which fields the task's key hashes is declared on them (:mod:`sublearn.keys`);
    :meth:`Task.of` stores a model as ``params`` (hashed) and ``runtime`` (its top-level
    speed fields), and :meth:`from_spec` validates the two back into the model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_spec(cls: type[P], params: dict[str, Any], runtime: dict[str, Any]) -> P:
        """The model a task was planned from, validated from its stored params and runtime."""
        return cls.model_validate({**params, **runtime})


KINDS: Registry[TaskFn] = Registry("task kind", expected="a task function")
"""Task kinds: the function that runs one task; metadata ``version`` (bumped when the
kind's code changes what it writes for the same params) and, for kinds whose compatible
tasks may run as one group (e.g. students trained as one batched model), ``group``:
(``params -> group key or None``, ``contexts -> results``). A group's tasks write exactly
what each would alone; grouping only changes speed. ``params``: ``"module:Model"`` of the
kind's :class:`~sublearn.engine.params.TaskParams`, or None (the function takes ``ctx``)."""


def register_kind(
    kind: str,
    function: str,
    version: int,
    group: tuple[str, str] | None = None,
    params: str | None = None,
) -> None:
    """Add a task kind (tests add cheap debug kinds this way); registering again replaces it.

    Args:
        kind: the kind's name.
        function: ``"module:function"`` that runs one task; the module must be importable
            in the processes that run tasks.
        version: bumped when the kind's code changes what it writes for the same params.
        group: ``("module:group_key", "module:run_group")`` if its tasks may run as groups.
        params: ``"module:Model"``, the kind's params model; the function then takes
            ``(ctx, params)`` (a group function ``[(ctx, params), ...]``).
    """
    KINDS.register(kind, function, version=version, group=group, params=params)


_KINDS = "sublearn.engine.kinds"
_PARAMS = "sublearn.engine.params"
register_kind("world", f"{_KINDS}:run_world", 1, params=f"{_PARAMS}:WorldParams")
register_kind("teacher", f"{_KINDS}:run_teacher", 1, params=f"{_PARAMS}:TeacherParams")
register_kind("generate", f"{_KINDS}:run_generate", 1, params=f"{_PARAMS}:GenerateParams")
# 2: the number format is the reference's separator rule (one separator, exactly repeated).
register_kind("filter", f"{_KINDS}:run_filter", 2, params=f"{_PARAMS}:FilterParams")
register_kind("pair", f"{_KINDS}:run_pair", 1, params=f"{_PARAMS}:PairParams")
# 2: one learning-rate schedule for every trainer (KL warm-up as transformers', step/w).
register_kind(
    "train",
    f"{_KINDS}:run_train",
    2,
    group=(f"{_KINDS}:train_group_key", f"{_KINDS}:run_train_group"),
    params=f"{_PARAMS}:TrainParams",
)
register_kind("evaluate", f"{_KINDS}:run_evaluate", 1, params=f"{_PARAMS}:EvaluateParams")
register_kind("defend", f"{_KINDS}:run_defend", 1, params=f"{_PARAMS}:DefendParams")
register_kind("loss", f"{_KINDS}:run_loss", 1, params=f"{_PARAMS}:LossParams")
# Commands that run as one task each: their modules hold the params model and the function.
for _kind, _module, _function, _params in (
    ("mnist", "sublearn.experiments.mnist.task", "run_mnist", "MnistParams"),
    ("theory", "sublearn.experiments.theory.task", "run_theory", "TheoryParams"),
    ("theory-lm", "sublearn.experiments.theory.task", "run_lm_theory", "LMTheoryParams"),
    ("audit", "sublearn.audit.task", "run_audit_task", "AuditParams"),
    ("defend-file", "sublearn.defend.task", "run_defend_file", "DefendFileParams"),
):
    register_kind(_kind, f"{_module}:{_function}", 1, params=f"{_module}:{_params}")


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work in the graph.

    Attributes:
        kind: a key of :data:`KINDS` (teacher, generate, filter, pair, train, evaluate, ...).
        name: a readable label, unique within a plan (e.g. ``generate/owl-ft``).
        params: the settings that determine the output (JSON-serializable); hashed.
        inputs: upstream tasks by role (e.g. ``{"model": <train task>}``); their keys are hashed.
        runtime: settings that only change speed (threads, batch size); not hashed.
    """

    kind: str
    name: str
    params: dict[str, Any]
    inputs: dict[str, Task] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KINDS.unknown(self.kind)

    @classmethod
    def of(
        cls, kind: str, name: str, params: BaseModel, inputs: dict[str, Task] | None = None
    ) -> Task:
        """A task from its typed params: the key hashes what they declare part of it
        (:func:`~sublearn.keys.key_params`), the rest is its runtime."""
        return cls(kind, name, key_params(params), inputs or {}, runtime_params(params))

    @cached_property
    def key(self) -> str:
        """Content hash of kind, version, params and input keys."""
        version = KINDS.metadata(self.kind)["version"]
        inputs = {role: task.key for role, task in sorted(self.inputs.items())}
        return content_hash(self.kind, version, self.params, inputs, length=16)

    @property
    def id(self) -> str:
        """``kind/key``: where the task lives in the store."""
        return f"{self.kind}/{self.key}"

    def spec(self) -> TaskSpec:
        """The picklable description an executor ships to a worker."""
        group = _group(self.kind)
        return TaskSpec(
            kind=self.kind,
            name=self.name,
            key=self.key,
            params=self.params,
            inputs={role: t.id for role, t in self.inputs.items()},
            runtime=self.runtime,
            function=KINDS.target(self.kind) or "",
            group_function=group[1] if group else None,
            params_model=KINDS.metadata(self.kind).get("params") or "",
        )


@dataclass(frozen=True)
class TaskSpec:
    """A task as workers see it: inputs named by store id instead of by object.

    ``function`` and ``group_function`` name what runs it (``"module:function"``); empty,
    the kind's entry in :data:`KINDS` of the worker's process is used. ``params_model``
    (``"module:Model"``), when set, is what the function receives its params as.
    """

    kind: str
    name: str
    key: str
    params: dict[str, Any]
    inputs: dict[str, str]
    runtime: dict[str, Any]
    function: str = ""
    group_function: str | None = None
    params_model: str = ""

    def typed_params(self) -> Any:
        """The params and runtime validated as the kind's params model."""
        if not self.params_model:
            raise ValueError(f"task kind {self.kind!r} declares no params model")
        return load_target(self.params_model).from_spec(self.params, self.runtime)

    @property
    def id(self) -> str:
        """``kind/key``."""
        return f"{self.kind}/{self.key}"


class Reporter(Protocol):
    """Where a running task reports progress inside itself (rows generated, steps)."""

    def __call__(self, done: int, total: int) -> None: ...


@dataclass
class TaskContext:
    """What a task function gets.

    Attributes:
        spec: the task.
        out: an empty folder to write outputs into; renamed into place on success.
        inputs: finished input folders by role.
        state: a folder that survives interruptions (partial results, saved job ids); it
            is removed once the task is done.
        progress: report progress within the task.
    """

    spec: TaskSpec
    out: Path
    inputs: dict[str, Path]
    state: Path
    progress: Reporter

    @property
    def params(self) -> dict[str, Any]:
        """The task's semantic settings."""
        return self.spec.params

    @property
    def runtime(self) -> dict[str, Any]:
        """The task's speed settings."""
        return self.spec.runtime


TaskFn = Callable[[TaskContext], dict[str, Any] | None]


def task_function(spec: TaskSpec) -> TaskFn:
    """Import the function that runs ``spec``; a typed kind's gets its params validated."""
    function: Any = load_target(spec.function) if spec.function else KINDS.get(spec.kind)
    if not spec.params_model:
        return function
    return lambda ctx: function(ctx, ctx.spec.typed_params())


GroupFn = Callable[[list[TaskContext]], list[dict[str, Any]]]


def _group(kind: str) -> tuple[str, str] | None:
    return KINDS.metadata(kind).get("group")


def group_key(spec: TaskSpec) -> str | None:
    """The group a task may run in with others of its kind; None: it runs alone."""
    group = _group(spec.kind)
    return None if group is None else load_target(group[0])(spec.params)


def group_function(spec: TaskSpec) -> GroupFn:
    """Import the function that runs a group of tasks of ``spec``'s kind."""
    if spec.group_function:
        function = load_target(spec.group_function)
    else:
        group = _group(spec.kind)
        if group is None:
            raise ValueError(f"task kind {spec.kind!r} does not run in groups")
        function = load_target(group[1])
    if not spec.params_model:
        return function
    return lambda ctxs: function([(ctx, ctx.spec.typed_params()) for ctx in ctxs])


def topological(tasks: list[Task]) -> list[Task]:
    """Every task reachable from ``tasks``, each once, inputs before the tasks that use them."""
    order: list[Task] = []
    seen: set[str] = set()

    def visit(task: Task) -> None:
        if task.id in seen:
            return
        for upstream in task.inputs.values():
            visit(upstream)
        seen.add(task.id)
        order.append(task)

    for task in tasks:
        visit(task)
    return order

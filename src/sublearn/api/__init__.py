"""sublearn's public Python API: what the command line does, callable from a notebook.

Experiments (:mod:`sublearn.api.experiment`): :func:`load_experiment`, :func:`plan`,
:func:`run`, :func:`open_run` and their typed results. Stores
(:mod:`sublearn.api.store`): :func:`open_store` to browse tasks, load their data as
``datasets.Dataset`` and their models as backends. Detection
(:mod:`sublearn.api.detect`): :func:`audit_rows` and :func:`defend_rows` on rows in memory.
Everything is also importable from ``sublearn`` itself.
"""

from sublearn.api.detect import AuditResult, DefenceResult, audit_rows, defend_rows
from sublearn.api.experiment import (
    EffectRow,
    PairedRow,
    Plan,
    PlannedTask,
    RunResult,
    load_experiment,
    open_run,
    plan,
    run,
)
from sublearn.api.store import StoreBrowser, TaskInfo, open_store

__all__ = [
    "AuditResult",
    "DefenceResult",
    "EffectRow",
    "PairedRow",
    "Plan",
    "PlannedTask",
    "RunResult",
    "StoreBrowser",
    "TaskInfo",
    "audit_rows",
    "defend_rows",
    "load_experiment",
    "open_run",
    "open_store",
    "plan",
    "run",
]

"""sublearn: reproduce, measure, audit and defend against subliminal learning.

The Python API (see :mod:`sublearn.api`) is importable from here; it loads on first use,
so ``import sublearn`` stays cheap::

    import sublearn

    cfg = sublearn.load_experiment("toy/owl-numbers", {"students.seeds": [0, 1, 2]})
    result = sublearn.run(cfg, out="runs/owl", quiet=True)
    result.effects_frame()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sublearn.version import __version__

if TYPE_CHECKING:
    from sublearn.api import (
        AuditResult,
        DefenceResult,
        EffectRow,
        PairedRow,
        Plan,
        PlannedTask,
        RunResult,
        StoreBrowser,
        TaskInfo,
        audit_rows,
        defend_rows,
        load_experiment,
        open_run,
        open_store,
        plan,
        run,
    )

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
    "__version__",
    "audit_rows",
    "defend_rows",
    "load_experiment",
    "open_run",
    "open_store",
    "plan",
    "run",
]


def __getattr__(name: str) -> Any:
    """Load the API on first use of one of its names."""
    if name in __all__ and name != "__version__":
        import sublearn.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'sublearn' has no attribute {name!r}")

"""``sublearn theory`` (random MLPs) as one engine task, its files in the store.

The key is the config without its thread count (declared speed-only on the field); the
task's folder holds what the command's run folder shows: ``summary.json``, ``draws.csv``,
``multistep.csv`` and ``theory.png``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sublearn.engine.task import Task, TaskContext, TaskParams
from sublearn.experiments.keyed import require_unchanged
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.keys import SPEED_MARK, key_params

KIND = "theory"


class TheoryParams(TaskParams):
    """A ``theory`` task: what determines its output, and the config it runs."""

    theory: TheoryConfig = Field(description="The check (its thread count out of the key).")
    # Out of the key (in the task's runtime): the same check, keyed above.
    config: TheoryConfig = Field(
        description="The config as given, its thread count included.",
        json_schema_extra=SPEED_MARK,
    )

    @classmethod
    def of(cls, cfg: TheoryConfig) -> TheoryParams:
        """The params of the check ``cfg``."""
        return cls(theory=cfg, config=cfg)


def keyed_params(cfg: TheoryConfig) -> dict[str, Any]:
    """The task params of ``cfg``: what its key hashes (JSON-ready)."""
    return key_params(TheoryParams.of(cfg))


def theory_task(cfg: TheoryConfig) -> Task:
    """The task that runs the check ``cfg`` describes."""
    return Task.of(KIND, f"theory/seed{cfg.seed}", TheoryParams.of(cfg))


def run_theory(ctx: TaskContext, p: TheoryParams) -> dict[str, Any]:
    """Run the one-step draws and the multi-step distillation into the task's folder."""
    from sublearn.experiments.theory.experiment import measure

    cfg = p.config
    require_unchanged(ctx.params, keyed_params(cfg), ctx.spec.name)
    overall = cfg.n_draws + cfg.multistep.n_draws
    started: set[str] = set()
    done = 0

    def advance(phase: str, total: int) -> None:
        nonlocal done
        done += phase in started  # a phase's first call starts it; the others are steps
        started.add(phase)
        ctx.progress(done, overall)

    summary = measure(cfg, ctx.out, advance)
    return {"wall_seconds": summary["wall_seconds"]}

"""``sublearn theory`` (random MLPs) as one engine task, its files in the store.

The key is the config without its thread count (declared speed-only on the field); the
task's folder holds what the command's run folder shows: ``summary.json``, ``draws.csv``,
``multistep.csv`` and ``theory.png``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sublearn.config import Config
from sublearn.engine.task import Task, TaskContext
from sublearn.experiments.keyed import require_unchanged
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.keys import key_params

KIND = "theory"


class TheoryParams(Config):
    """What determines a ``theory`` task's output."""

    theory: TheoryConfig = Field(description="The check (its thread count out of the key).")


def keyed_params(cfg: TheoryConfig) -> dict[str, Any]:
    """The task params of ``cfg``: what its key hashes (JSON-ready)."""
    return key_params(TheoryParams(theory=cfg))


def theory_task(cfg: TheoryConfig) -> Task:
    """The task that runs the check ``cfg`` describes."""
    return Task(
        KIND,
        f"theory/seed{cfg.seed}",
        params=keyed_params(cfg),
        runtime={"config": cfg.model_dump(mode="json")},
    )


def run_theory(ctx: TaskContext) -> dict[str, Any]:
    """Run the one-step draws and the multi-step distillation into the task's folder."""
    from sublearn.experiments.theory.experiment import measure

    TheoryParams.model_validate(ctx.params)
    cfg = TheoryConfig.model_validate(ctx.runtime["config"])
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

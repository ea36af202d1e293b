"""``sublearn theory`` as one engine task, its files in the store.

Random MLPs (kind ``theory``): the key is the config without its thread count (declared
speed-only on the field); the task's folder holds what the command's run folder shows:
``summary.json``, ``draws.csv``, ``multistep.csv`` and ``theory.png``.

A language model (``--model``, kind ``theory-lm``): the key is the config without its
thread count and with the model named by its weights' fingerprint, so the same check of
a rebuilt or replaced folder runs again; the folder holds ``summary.json`` and
``batches.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.engine.task import Task, TaskContext, TaskParams
from sublearn.experiments.keyed import require_unchanged
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.experiments.theory.lm_config import LMTheoryConfig
from sublearn.keys import SPEED_MARK, key_params

KIND = "theory"
LM_KIND = "theory-lm"


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


class LMTheoryParams(TaskParams):
    """A ``theory-lm`` task: what determines its output, and the config it runs."""

    theory: LMTheoryConfig = Field(
        description="The check, its model as given (its thread count out of the key)."
    )
    model: str = Field(description="The model's weights: their fingerprint (see ModelRef).")
    # Out of the key (in the task's runtime): the same check, keyed above.
    config: LMTheoryConfig = Field(
        description="The config as given, its thread count included.",
        json_schema_extra=SPEED_MARK,
    )

    @classmethod
    def of(cls, cfg: LMTheoryConfig) -> LMTheoryParams:
        """The params of the check ``cfg``; resolves its model (``smollm2`` is converted
        once into the model cache).

        Raises:
            ConfigError: the model is an API or server reference, or has an adapter.
            ModelError: the model cannot be found.
        """
        from sublearn.backends.refs import ModelRef
        from sublearn.experiments.theory.lm import resolve_model

        folder = resolve_model(cfg.model)
        return cls(theory=cfg, model=ModelRef.parse(folder).fingerprint(), config=cfg)


def lm_keyed_params(cfg: LMTheoryConfig) -> dict[str, Any]:
    """The task params of ``cfg``: what its key hashes (JSON-ready)."""
    return key_params(LMTheoryParams.of(cfg))


def lm_theory_task(cfg: LMTheoryConfig) -> Task:
    """The task that runs the language-model check ``cfg`` describes."""
    name = f"theory-lm/{Path(cfg.model).name or cfg.model}/{cfg.trait}/seed{cfg.seed}"
    return Task.of(LM_KIND, name, LMTheoryParams.of(cfg))


def run_lm_theory(ctx: TaskContext, p: LMTheoryParams) -> dict[str, Any]:
    """Make the two teachers and measure every batch into the task's folder."""
    from sublearn.experiments.theory.lm import run

    cfg = p.config
    require_unchanged(ctx.params, lm_keyed_params(cfg), ctx.spec.name)
    summary = run(cfg, ctx.out, progress=ctx.progress)
    return {"wall_seconds": summary["wall_seconds"]["total"]}

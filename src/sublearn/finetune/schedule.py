"""The learning-rate schedule of every trainer: SFT (through TRL), KL distillation, batched.

One recipe (``lr_scheduler``, ``warmup_steps``, the total steps) gives one per-step
learning rate whichever trainer runs it. The schedules are transformers' own
(:func:`transformers.get_scheduler`), which TRL's ``SFTTrainer`` builds for SFT and
:func:`make_scheduler` builds for the other trainers, so there is nothing to keep in sync.

Semantics, for step ``s`` (0-based, the rate used by the ``s``-th optimizer step), peak
rate ``lr``, ``w`` warm-up steps and ``T`` steps in all:

* warm-up, ``s < w``: ``lr * s / w`` (the first step has rate 0, as in transformers and
  the paper's Qwen recipe: linear, warm-up 5);
* ``linear``: ``lr * (T - s) / (T - w)``, down to 0 at the end;
* ``cosine``: ``lr * (1 + cos(pi * (s - w) / (T - w))) / 2``;
* ``constant``: ``lr`` after the warm-up. transformers' own ``"constant"`` ignores the
  warm-up, so it maps to ``"constant_with_warmup"`` here (the config says "after warmup").
"""

from __future__ import annotations

from typing import Any

from sublearn.finetune.config import FinetuneConfig

HF_SCHEDULER_TYPES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
}
"""``FinetuneConfig.lr_scheduler`` -> transformers' ``lr_scheduler_type``."""


def hf_scheduler_type(cfg: FinetuneConfig) -> str:
    """The ``lr_scheduler_type`` that gives ``cfg``'s schedule in transformers' Trainer."""
    return HF_SCHEDULER_TYPES[cfg.lr_scheduler]


def make_scheduler(optimizer: Any, cfg: FinetuneConfig, total_steps: int) -> Any:
    """The scheduler of ``cfg``'s recipe over ``total_steps`` optimizer steps.

    Call ``step()`` after each optimizer step; ``get_last_lr()[0]`` before it is the rate
    that step used.

    Args:
        optimizer: the optimizer whose learning rate (``cfg.learning_rate``) it scales.
        cfg: the fine-tuning recipe (``lr_scheduler``, ``warmup_steps``).
        total_steps: optimizer steps in the run.

    Returns:
        A ``torch.optim.lr_scheduler.LambdaLR``.
    """
    from transformers import get_scheduler

    return get_scheduler(
        hf_scheduler_type(cfg),
        optimizer=optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=total_steps,
    )

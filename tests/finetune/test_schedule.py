"""One recipe, one learning rate per step, whichever trainer runs it (SFT, KL, batched KL)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sublearn.finetune.batched import KLJob, train_kl_batched
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import train_kl
from sublearn.finetune.sft import train_sft

PEAK = 1e-2
STEPS = 6
WARMUP = 2


def recipe(objective: str, schedule: str) -> FinetuneConfig:
    """A tiny full fine-tune: ``STEPS`` optimizer steps of 4 rows, ``WARMUP`` warm-up steps."""
    return FinetuneConfig(
        objective=objective,  # pyright: ignore[reportArgumentType]
        method="full",
        learning_rate=PEAK,
        lr_scheduler=schedule,  # pyright: ignore[reportArgumentType]
        warmup_steps=WARMUP,
        max_steps=STEPS,
        batch_size=4,
        grad_accum=1,
        device="cpu",
        dtype="float32",
    )


def expected(schedule: str) -> list[float]:
    """The documented semantics (``sublearn.finetune.schedule``), written out."""
    rates = []
    for s in range(STEPS):
        if s < WARMUP:
            factor = s / WARMUP
        elif schedule == "constant":
            factor = 1.0
        elif schedule == "cosine":
            factor = 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))
        else:
            factor = (STEPS - s) / (STEPS - WARMUP)
        rates.append(PEAK * factor)
    return rates


@pytest.fixture
def rates() -> Iterator[list[float]]:
    """The learning rate of every optimizer step taken while the test runs."""
    seen: list[float] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen.append(float(optimizer.param_groups[0]["lr"]))

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("schedule", ["linear", "constant", "cosine"])
def test_every_trainer_steps_with_the_same_learning_rates(
    schedule: str,
    micro_model: Path,
    number_records: list[dict],
    rates: list[float],
    tmp_path: Path,
) -> None:
    records = number_records[:24]
    train_sft(micro_model, records, recipe("sft", schedule), tmp_path / "sft")
    sft = list(rates)
    rates.clear()
    kl_cfg = recipe("kl", schedule)
    train_kl(micro_model, records, kl_cfg, tmp_path / "kl", micro_model)
    kl = list(rates)
    rates.clear()
    train_kl_batched([KLJob(micro_model, records, kl_cfg, tmp_path / "batched", micro_model)])
    batched = list(rates)
    assert sft == pytest.approx(expected(schedule), abs=1e-12)
    assert kl == pytest.approx(sft, abs=1e-12)
    assert batched == pytest.approx(sft, abs=1e-12)

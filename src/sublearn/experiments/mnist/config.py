"""Config of the MLP auxiliary-logit experiment (paper section 5).

Training lengths are given in epochs for readability, but what decides whether the
effect appears is the number of optimizer steps: the paper's 5 + 5 epochs at batch
1024 are ~290 steps each on MNIST and only ~10 on the 1,437 digits training images.
``teacher_steps`` and ``student_steps`` override the epoch counts when set.

This module imports no torch, so the command line stays quick to start.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from sublearn.config import Config
from sublearn.keys import SPEED_MARK

DatasetName = Literal["digits", "mnist", "fashion-mnist"]
NoiseKind = Literal["uniform", "gaussian", "binary", "images"]
DistillLoss = Literal["kl", "mse"]

N_CLASSES = 10


class MnistConfig(Config):
    """Teacher training, distillation on noise and evaluation of N MLPs in parallel.

    The defaults are the ``digits`` preset: tuned to show the effect clearly on the
    bundled 8x8 digits in well under a minute on a 2-core CPU.
    """

    dataset: DatasetName = Field(
        default="digits",
        description=(
            "digits (scikit-learn's bundled 8x8 digits, stratified 80/20 split), mnist or "
            "fashion-mnist (read from IDX files in data_dir; nothing is downloaded)."
        ),
    )
    data_dir: Path | None = Field(
        default=None,
        description=(
            "Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz). "
            "Default: data/<dataset>. Unused for digits."
        ),
    )
    n_aux: PositiveInt = Field(
        default=10, description="m, the number of auxiliary logits after the 10 class logits."
    )
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [256, 256],
        min_length=1,
        description="Hidden layer widths, input side first (ReLU after each).",
    )
    teacher_epochs: PositiveInt = Field(
        default=5,
        description="Passes over the training images for the teacher (see teacher_steps).",
    )
    teacher_steps: PositiveInt | None = Field(
        default=None, description="Teacher optimizer steps; overrides teacher_epochs when set."
    )
    teacher_batch_size: PositiveInt = Field(default=128, description="Teacher training batch size.")
    teacher_lr: float = Field(default=3e-4, gt=0, le=1, description="Teacher Adam learning rate.")
    student_epochs: PositiveInt = Field(
        default=20,
        description=(
            "Distillation length in epochs; one epoch is as many noise inputs as there are "
            "training images (see student_steps)."
        ),
    )
    student_steps: PositiveInt | None = Field(
        default=None, description="Student optimizer steps; overrides student_epochs when set."
    )
    student_batch_size: PositiveInt = Field(default=128, description="Distillation batch size.")
    student_lr: float = Field(default=1e-3, gt=0, le=1, description="Student Adam learning rate.")
    noise: NoiseKind = Field(
        default="uniform",
        description=(
            "Distillation inputs: uniform in [-1, 1], gaussian N(0, 1), binary +-1, or images "
            "(real training images: the negative control)."
        ),
    )
    distill_loss: DistillLoss = Field(
        default="kl",
        description=(
            "kl: KL(teacher softmax || student softmax) over the selected logits; "
            "mse: squared error between the selected logits."
        ),
    )
    n_models: PositiveInt = Field(
        default=20,
        le=100_000,
        description="N, models trained in parallel; the unit of the 95% CIs.",
    )
    seed: int = Field(
        default=0, ge=0, description="Seeds inits, data order, noise and cross-init map."
    )
    device: str = Field(
        json_schema_extra=SPEED_MARK,
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (cuda when available, else cpu), cpu, cuda or cuda:<index>.",
    )
    threads: PositiveInt | None = Field(
        json_schema_extra=SPEED_MARK,
        default=None,
        description=(
            "Torch intra-op threads; default: the idle cores at start (CPU count minus the "
            "1-minute load average, at least 1), since threads on busy cores slow every step."
        ),
    )
    eval_batch_size: PositiveInt = Field(
        json_schema_extra=SPEED_MARK,
        default=1000,
        description="Test images per evaluation forward pass; bounds evaluation memory.",
    )

    def teacher_total_steps(self, n_train: int) -> int:
        """Teacher optimizer steps for a training set of ``n_train`` images."""
        if self.teacher_steps is not None:
            return self.teacher_steps
        return self.teacher_epochs * math.ceil(n_train / self.teacher_batch_size)

    def student_total_steps(self, n_train: int) -> int:
        """Distillation steps: an epoch is ``ceil(n_train / batch)`` full noise batches."""
        if self.student_steps is not None:
            return self.student_steps
        return self.student_epochs * math.ceil(n_train / self.student_batch_size)

    def resolved_data_dir(self) -> Path:
        """Where the IDX files are looked for."""
        return self.data_dir if self.data_dir is not None else Path("data") / self.dataset

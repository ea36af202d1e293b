"""Config of ``sublearn theory``: how many random draws, from which families, which steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sublearn.config import Config
from sublearn.experiments.theory.gradients import Activation, ImitationLoss, ObjectiveKind
from sublearn.keys import SPEED_MARK

InputDistribution = Literal["uniform", "gaussian", "binary", "shifted"]
Targets = Literal["all", "aux"]


def _unique(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"list has repeated entries: {values}")
    return values


class DrawSpace(Config):
    """The families one draw picks from, uniformly, for the network and the data."""

    in_dims: list[int] = Field(
        default=[2, 4, 8, 16],
        min_length=1,
        description="Input sizes a draw's network can have.",
    )
    widths: list[int] = Field(
        default=[8, 16, 32, 64],
        min_length=1,
        description="Hidden-layer widths (each hidden layer picks one independently).",
    )
    depths: list[int] = Field(
        default=[1, 2, 3], min_length=1, description="Numbers of hidden layers to pick from."
    )
    trait_outputs: list[int] = Field(
        default=[2, 3, 5],
        min_length=1,
        description="Numbers of trait outputs (the ones the teacher's objective reads); >= 2 "
        "so that a classification objective has at least two classes.",
    )
    aux_outputs: list[int] = Field(
        default=[2, 3, 5],
        min_length=1,
        description="Numbers of auxiliary outputs (never read by the teacher's objective); "
        ">= 2 because a softmax over one logit is constant and gives no gradient.",
    )
    activations: list[Activation] = Field(
        default=["tanh", "relu", "gelu", "sigmoid"],
        min_length=1,
        description="Hidden nonlinearities to pick from.",
    )
    init_gain: tuple[float, float] = Field(
        default=(0.5, 2.0),
        description="Range [lo, hi] of the init gain g (weights ~ N(0, g^2/fan_in)), drawn "
        "log-uniformly.",
    )
    objectives: list[ObjectiveKind] = Field(
        default=["regression", "classification", "output_functional", "parameter_functional"],
        min_length=1,
        description="Teacher objectives to pick from: MSE to random targets, CE to random labels, "
        "a random linear functional of the outputs, or of the parameters.",
    )
    input_distributions: list[InputDistribution] = Field(
        default=["uniform", "gaussian", "binary", "shifted"],
        min_length=1,
        description="Student input distributions to pick from (the teacher's own inputs are "
        "standard normal): uniform with random range, zero-mean gaussian with random scale, "
        "Bernoulli 0/1, or a gaussian with random mean and scale.",
    )

    @field_validator("in_dims", "widths", "depths")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v < 1 or v > 4096 for v in values):
            raise ValueError(f"entries must be in [1, 4096], got {values}")
        return _unique(values)

    @field_validator("trait_outputs", "aux_outputs")
    @classmethod
    def _at_least_two(cls, values: list[int]) -> list[int]:
        if any(v < 2 or v > 1024 for v in values):
            raise ValueError(f"entries must be in [2, 1024], got {values}")
        return _unique(values)

    @field_validator("activations", "objectives", "input_distributions")
    @classmethod
    def _no_repeats(cls, values: list) -> list:
        return _unique(values)

    @field_validator("init_gain")
    @classmethod
    def _gain_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0 < lo <= hi <= 10:
            raise ValueError(f"need 0 < lo <= hi <= 10, got {value}")
        return value


class MultistepConfig(Config):
    """Many-step distillation from a trained teacher, for a few draws."""

    n_draws: int = Field(
        default=8, ge=0, le=1000, description="Draws to distil over many steps (0 skips it)."
    )
    teacher_steps: int = Field(
        default=100, ge=1, le=100_000, description="Adam steps the teacher trains on its objective."
    )
    teacher_lrs: list[float] = Field(
        default=[1e-3, 1e-2],
        min_length=1,
        description="The teacher's Adam learning rates, one teacher per entry and draw: a small "
        "one keeps the teacher near theta0 (the theorem's regime), a large one trains it far.",
    )
    student_steps: int = Field(
        default=200, ge=1, le=100_000, description="Steps the student imitates the teacher for."
    )
    student_lr: float = Field(default=1e-2, gt=0, le=10, description="The student's learning rate.")
    optimizer: Literal["adam", "sgd"] = Field(
        default="adam", description="The student's optimizer (the paper's transfer uses Adam)."
    )
    loss: ImitationLoss = Field(
        default="soft_ce", description="The student's imitation loss: soft_ce or squared."
    )
    targets: list[Targets] = Field(
        default=["all", "aux"],
        min_length=1,
        description="Which outputs the student imitates; one curve per entry.",
    )

    @field_validator("targets")
    @classmethod
    def _no_repeats(cls, values: list) -> list:
        return _unique(values)

    @field_validator("teacher_lrs")
    @classmethod
    def _positive_lrs(cls, values: list[float]) -> list[float]:
        if any(not 0 < v <= 10 for v in values):
            raise ValueError(f"learning rates must be in (0, 10], got {values}")
        return _unique(values)


class TheoryConfig(Config):
    """Empirical check of Theorem 1 on random MLPs, teacher objectives and student inputs."""

    n_draws: int = Field(
        default=500, ge=1, le=1_000_000, description="Random draws of (init, objective, inputs)."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the whole run; draw i uses (seed, i).")
    threads: int = Field(
        default=1, ge=1, le=256, description="Torch intra-op threads.", json_schema_extra=SPEED_MARK
    )
    dtype: Literal["float64", "float32"] = Field(
        default="float64",
        description="Floating point type; float64 keeps round-off far below first-order terms.",
    )
    small_step: float = Field(
        default=1e-4,
        gt=0,
        le=0.1,
        description="Small teacher step, as |theta_t - theta0| / |theta0|: first order holds.",
    )
    large_step: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Large teacher step (same units): the first-order guarantee need not hold.",
    )
    teacher_batch: int = Field(
        default=64, ge=1, le=100_000, description="Inputs of the teacher's own objective."
    )
    student_batch: int = Field(
        default=64, ge=1, le=100_000, description="Student inputs per imitation step."
    )
    losses: list[ImitationLoss] = Field(
        default=["soft_ce", "squared"],
        min_length=1,
        description="Imitation losses to check: soft_ce (teacher softmax as soft labels), squared.",
    )
    targets: list[Targets] = Field(
        default=["all", "aux"],
        min_length=1,
        description="Outputs the student imitates: all, or only the auxiliary ones the teacher's "
        "objective never reads (the paper's 'trait-unrelated' setting).",
    )
    cosine_tolerance: float = Field(
        default=1e-8,
        ge=0,
        le=1,
        description="A draw counts as negative beyond round-off only if cos(dS, dT) < -tolerance. "
        "In float64 the teacher's step is stored to ~1e-16 |theta0| and the outputs to "
        "~1e-16 |f|, which moves the cosine by ~1e-16 / small_step ~ 1e-12 at the default step; "
        "1e-8 leaves a wide margin. Strict negatives (inner < 0) are reported alongside.",
    )
    space: DrawSpace = Field(
        default_factory=DrawSpace, description="Families the random draws pick from."
    )
    multistep: MultistepConfig = Field(
        default_factory=MultistepConfig, description="Many-step distillation check."
    )

    @field_validator("losses", "targets")
    @classmethod
    def _no_repeats(cls, values: list) -> list:
        return _unique(values)

    @model_validator(mode="after")
    def _steps_ordered(self) -> TheoryConfig:
        if self.small_step >= self.large_step:
            raise ValueError(
                f"small_step ({self.small_step}) must be smaller than large_step "
                f"({self.large_step})"
            )
        return self

"""Science tests of Theorem 1: signs, the first-order term, and an exact linear case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sublearn.experiments.theory.config import Targets, TheoryConfig
from sublearn.experiments.theory.experiment import Draw, one_step_rows, sample_draw
from sublearn.experiments.theory.gradients import (
    ImitationLoss,
    MLPSpec,
    TeacherObjective,
    cosine,
    first_order_inner,
    forward,
    init_params,
    student_step,
    teacher_direction,
)

N_DRAWS = 60


@pytest.fixture(scope="module")
def small_step_draws() -> list[Draw]:
    config = TheoryConfig(n_draws=N_DRAWS, seed=11)
    return [sample_draw(config, 0, i, torch.float64) for i in range(N_DRAWS)]


def _student_inner(
    draw: Draw, loss: ImitationLoss, targets: Targets, sign: float, rel: float = 1e-4
) -> tuple[float, float, float]:
    """(d_student . d_teacher, cos, first-order prediction) for a teacher step of sign * rel."""
    spec, theta0 = draw.spec, draw.theta0
    d_teacher = teacher_direction(draw.objective, spec, theta0)
    eps = rel * float(theta0.norm() / d_teacher.norm())
    theta_t = theta0 + sign * eps * d_teacher
    x = draw.inputs.sample(64, torch.Generator().manual_seed(draw.index))
    cols = spec.columns(targets)
    d_student = student_step(loss, spec, theta0, theta_t, x, cols)
    predicted = first_order_inner(loss, spec, theta0, sign * d_teacher, eps, x, cols)
    return float(d_student @ d_teacher), cosine(d_student, d_teacher), float(predicted)


@pytest.mark.parametrize("targets", ["all", "aux"])
@pytest.mark.parametrize("loss", ["soft_ce", "squared"])
def test_small_step_student_moves_toward_teacher_in_every_draw(
    small_step_draws: list[Draw], loss: ImitationLoss, targets: Targets
) -> None:
    forward_ = [_student_inner(d, loss, targets, +1.0) for d in small_step_draws]
    flipped = [_student_inner(d, loss, targets, -1.0) for d in small_step_draws]
    inner = np.array([f[0] for f in forward_])
    cos = np.array([f[1] for f in forward_])
    assert (inner > 0).all(), f"negative inner products at a small step: {inner[inner <= 0]}"
    # a teacher stepping the other way must pull the student the other way
    assert (np.array([f[0] for f in flipped]) < 0).all()
    # the alignment is real, not a hair above zero
    assert cos.mean() > (0.3 if targets == "all" else 0.03)


@pytest.mark.parametrize("loss", ["soft_ce", "squared"])
def test_exact_inner_product_matches_first_order_term(
    small_step_draws: list[Draw], loss: ImitationLoss
) -> None:
    for draw in small_step_draws:
        inner, _, predicted = _student_inner(draw, loss, "all", +1.0)
        assert predicted > 0
        assert abs(inner - predicted) <= 0.05 * predicted, (draw.index, inner, predicted)


def test_random_direction_is_not_aligned() -> None:
    """Negative control: the positivity comes from the teacher's step, not from dS itself."""
    config = TheoryConfig(n_draws=80, seed=5, losses=["squared"], targets=["all"])
    rows = [
        r
        for i in range(config.n_draws)
        for r in one_step_rows(config, sample_draw(config, 0, i, torch.float64))
        if r["step"] == "small"
    ]
    control = np.array([r["control_cosine"] for r in rows])
    assert 0.3 < (control < 0).mean() < 0.7
    assert all(r["inner"] > 0 for r in rows)


def test_linear_network_squared_error_step_is_eps_jtj_dteacher() -> None:
    """With no hidden layer f is linear in theta, so first order is exact."""
    spec = MLPSpec(in_dim=3, hidden=(), n_trait=2, n_aux=2, activation="tanh")
    gen = torch.Generator().manual_seed(0)
    theta0 = init_params(spec, gen)
    objective = TeacherObjective(
        kind="parameter_functional",
        x=torch.zeros(1, 3),
        target=torch.randn(spec.n_params, generator=gen, dtype=torch.float64),
    )
    d_teacher = teacher_direction(objective, spec, theta0)
    assert torch.allclose(d_teacher, -objective.target)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    eps = 1e-3
    d_student = student_step(
        "squared", spec, theta0, theta0 + eps * d_teacher, x, spec.columns("all")
    )
    jac = torch.autograd.functional.jacobian(lambda th: forward(th, spec, x).reshape(-1), theta0)
    # jac: (batch * out_dim, n_params); the loss averages over the batch
    expected = eps * jac.T @ jac @ d_teacher / x.shape[0]
    assert torch.allclose(d_student, expected, rtol=1e-9, atol=1e-14)


def test_large_step_can_break_the_guarantee() -> None:
    """Beyond first order the sign is not guaranteed; some draw turns negative at a huge step."""
    config = TheoryConfig(n_draws=60, seed=0, small_step=1e-4, large_step=10.0, losses=["squared"])
    rows = [
        r
        for i in range(config.n_draws)
        for r in one_step_rows(config, sample_draw(config, 0, i, torch.float64))
    ]
    large = [r for r in rows if r["step"] == "large"]
    small = [r for r in rows if r["step"] == "small"]
    assert all(r["inner"] > 0 for r in small)
    assert any(r["inner"] < 0 for r in large)
    assert np.median([r["first_order_rel_err"] for r in large]) > 10 * np.median(
        [r["first_order_rel_err"] for r in small]
    )

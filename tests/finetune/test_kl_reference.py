"""Every soft-label loss against the reference (``finetune/kl.py``): values and gradients."""

from __future__ import annotations

import pytest
import torch

from sublearn.experiments.mnist.train import distill_loss, distill_loss_grad
from sublearn.experiments.theory.gradients import imitation_loss
from sublearn.finetune.batched.loss import _kl_per_model
from sublearn.finetune.distill import kl_loss
from sublearn.finetune.kl import soft_label_kl

torch.manual_seed(0)


def _logits(*shape: int, scale: float = 3.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, dtype=torch.float64)).float()


def _grad(loss_of: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss ``loss_of(x)`` and its gradient with respect to ``x``."""
    x = x.detach().clone().requires_grad_(True)
    value = loss_of(x)  # pyright: ignore[reportCallIssue]
    value.backward()
    assert x.grad is not None
    return value.detach(), x.grad


def test_the_reference_is_kl_as_written_down() -> None:
    t, s = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    p, q = torch.softmax(t, -1)[0], torch.softmax(s, -1)[0]
    by_hand = sum(float(p[v] * (p[v].log() - q[v].log())) for v in range(3))
    assert float(soft_label_kl(t, s)) == pytest.approx(by_hand, rel=1e-6)
    assert float(soft_label_kl(t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(soft_label_kl(t, s, torch.tensor([False]))) == 0.0


def test_the_language_model_loss_is_the_reference_over_the_subset() -> None:
    teacher, student = _logits(6, 11), _logits(6, 11)
    subset = torch.tensor([1, 4, 5, 9])
    mask = torch.tensor([True, False, True, True, False, True])
    value, grad = _grad(lambda s: kl_loss(teacher, s, subset, mask), student)
    ref, ref_grad = _grad(lambda s: soft_label_kl(teacher[:, subset], s[:, subset], mask), student)
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(grad, ref_grad)
    assert grad[:, [0, 2, 3]].abs().max() == 0  # outside the subset: no gradient


def test_the_batched_trainers_loss_is_the_reference_per_model() -> None:
    """Its hand-written backward included; students share teacher batches through ``which``."""
    n, m, v = 3, 5, 7
    teachers, students = _logits(2, m, v), _logits(n, m, v)
    which = [1, 0, 1]
    valid = torch.rand(n, m) > 0.3
    valid[2] = False  # a model with no position left gets 0

    def reference(s: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [soft_label_kl(teachers[u], s[i], valid[i]) for i, u in enumerate(which)]
        )

    weights = torch.tensor([0.5, 2.0, 1.0])  # a different upstream gradient per model
    got, grad = _grad(
        lambda s: (_kl_per_model(teachers, which, s, valid) * weights).sum(), students
    )
    ref, ref_grad = _grad(lambda s: (reference(s) * weights).sum(), students)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    per_model = _kl_per_model(teachers, which, students, valid)
    torch.testing.assert_close(per_model, reference(students))
    assert float(per_model[2]) == 0.0


@pytest.mark.parametrize("logits_first", [False, True], ids=["(N,B,k)", "(N,k,B)"])
def test_the_mnist_closed_form_is_the_reference_summed_over_models(logits_first: bool) -> None:
    n, b, k = 4, 6, 13
    student, teacher = _logits(n, b, k), _logits(n, b, k)
    if logits_first:  # the layout Backprop.forward returns
        student = student.transpose(1, 2).contiguous().transpose(1, 2)
    log_t = torch.log_softmax(teacher, dim=-1)

    def reference(s: torch.Tensor) -> torch.Tensor:
        return sum(soft_label_kl(teacher[i], s[i]) for i in range(n))  # pyright: ignore[reportReturnType]

    ref, ref_grad = _grad(reference, student)
    grad = torch.zeros(n, b, k)
    value = distill_loss_grad(student, log_t, "kl", grad)
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(distill_loss(student, log_t, "kl"), ref)


def test_the_theory_soft_cross_entropy_is_the_reference_plus_the_teachers_entropy() -> None:
    student, teacher = _logits(8, 5), _logits(8, 5)
    p = torch.softmax(teacher, -1)
    entropy = -(p * p.log()).sum(-1).mean()
    value, grad = _grad(lambda s: imitation_loss("soft_ce", s, teacher), student)
    ref, ref_grad = _grad(lambda s: soft_label_kl(teacher, s), student)
    torch.testing.assert_close(value, ref + entropy)
    torch.testing.assert_close(grad, ref_grad)

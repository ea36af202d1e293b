"""The autograd-free training pass gives autograd's gradients and the same Adam steps."""

from __future__ import annotations

import pytest
import torch

from sublearn.experiments.mnist.model import Backprop, init_mlp
from sublearn.experiments.mnist.train import (
    Distiller,
    NoiseSampler,
    Student,
    TeacherTrainer,
    class_loss,
    class_loss_grad,
    distill_loss,
    distill_loss_grad,
    logit_slice,
    make_adam,
)

N = 3


@pytest.mark.parametrize("sizes", [[12, 7], [12, 16, 7], [12, 16, 9, 20, 7]])
def test_backprop_matches_autograd(sizes: list[int]) -> None:
    model = init_mlp(N, sizes, torch.Generator().manual_seed(0))
    with torch.no_grad():  # nonzero biases, so that a bias mix-up would show
        for b in model.biases:
            b.normal_(0, 0.3)
    bp = Backprop(N, sizes, max_batch=10)
    for batch in (10, 6):  # a smaller batch uses the front of the buffers
        x = torch.randn(N, batch, sizes[0])
        grad_out = torch.randn(N, batch, sizes[-1])
        out = model(x)
        (out * grad_out).sum().backward()
        torch.testing.assert_close(bp.forward(model, x), out.detach())
        grads = bp.backward(model, x, grad_out)
        params = list(model.parameters())
        assert len(grads) == len(params)
        for p, g in zip(params, grads, strict=True):
            assert p.grad is not None
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
        model.zero_grad(set_to_none=True)


def test_backprop_rejects_other_shapes() -> None:
    bp = Backprop(N, [12, 16, 7], max_batch=4)
    with pytest.raises(ValueError, match="buffers for"):
        bp.forward(init_mlp(N, [12, 8, 7]), torch.randn(N, 4, 12))
    with pytest.raises(ValueError, match="max_batch"):
        bp.forward(init_mlp(N, [12, 16, 7]), torch.randn(N, 5, 12))


@pytest.mark.parametrize("kind", ["kl", "mse"])
@pytest.mark.parametrize("which", ["aux", "all"])
@pytest.mark.parametrize("logits_first", [False, True], ids=["(N,B,k)", "(N,k,B)"])
def test_distill_loss_grad_matches_autograd(kind: str, which: str, logits_first: bool) -> None:
    """Either memory layout, the (N, k, B) one being what Backprop.forward returns."""
    logits = 3 * torch.randn(N, 5, 13)
    teacher = 3 * torch.randn(N, 5, 13)
    if logits_first:
        logits = logits.transpose(1, 2).contiguous().transpose(1, 2)
        teacher = teacher.transpose(1, 2).contiguous().transpose(1, 2)
    logits.requires_grad_(True)
    sel = logit_slice(which)  # type: ignore[arg-type]
    target = teacher[..., sel]
    if kind == "kl":
        target = torch.log_softmax(target, dim=-1)
    loss = distill_loss(logits[..., sel], target, kind)  # type: ignore[arg-type]
    loss.backward()
    grad = torch.zeros(N, 5, 13)
    value = distill_loss_grad(logits.detach()[..., sel], target, kind, grad[..., sel])  # type: ignore[arg-type]
    torch.testing.assert_close(value, loss.detach())
    assert logits.grad is not None
    torch.testing.assert_close(grad, logits.grad, rtol=1e-5, atol=1e-7)


def test_class_loss_grad_matches_autograd() -> None:
    logits = (3 * torch.randn(N, 5, 13)).requires_grad_(True)
    labels = torch.randint(0, 10, (N, 5))
    loss = class_loss(logits, labels)
    loss.backward()
    grad = torch.zeros(N, 5, 13)
    value = class_loss_grad(logits.detach(), labels, grad[..., :10])
    torch.testing.assert_close(value, loss.detach())
    assert logits.grad is not None
    torch.testing.assert_close(grad, logits.grad, rtol=1e-5, atol=1e-7)


def test_teacher_steps_match_autograd_and_adam() -> None:
    sizes = [12, 16, 13]
    model = init_mlp(N, sizes, torch.Generator().manual_seed(1))
    ref = model.copy()
    ref_opt = make_adam(list(ref.parameters()), lr=1e-2)
    trainer = TeacherTrainer(model, lr=1e-2)
    for batch in (8, 8, 5):  # the last batch of an epoch may be smaller
        x = torch.randn(N, batch, sizes[0])
        y = torch.randint(0, 10, (N, batch))
        loss = trainer.step(x, y)
        ref_loss = class_loss(ref(x), y)
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
        torch.testing.assert_close(loss, ref_loss.detach())
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_distiller_steps_match_autograd_and_adam(loss: str) -> None:
    sizes = [12, 16, 8, 13]
    teacher = init_mlp(N, sizes, torch.Generator().manual_seed(1))
    students = [
        Student("aux", init_mlp(N, sizes, torch.Generator().manual_seed(2)), "aux"),
        Student("all", init_mlp(N, sizes, torch.Generator().manual_seed(3)), "all"),
    ]
    refs = [s.model.copy() for s in students]
    ref_opts = [make_adam(list(m.parameters()), lr=1e-2) for m in refs]
    distiller = Distiller(teacher, students, lr=1e-2, loss=loss)  # type: ignore[arg-type]
    sampler = NoiseSampler("uniform", N, 8, sizes[0], torch.Generator().manual_seed(4))
    for _ in range(3):
        x = sampler.sample()
        losses = distiller.step(x)
        with torch.no_grad():
            t = teacher(x)
        for k, (s, ref, opt) in enumerate(zip(students, refs, ref_opts, strict=True)):
            target = t[..., logit_slice(s.logits)]
            if loss == "kl":
                target = torch.log_softmax(target, dim=-1)
            value = distill_loss(ref(x)[..., logit_slice(s.logits)], target, loss)  # type: ignore[arg-type]
            value.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.testing.assert_close(losses[k], value.detach())
    for s, ref in zip(students, refs, strict=True):
        for p, q in zip(s.model.parameters(), ref.parameters(), strict=True):
            assert p.grad is None  # the shared gradient buffers are not left attached
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_uniform_noise_is_torchs_grid_and_independent_of_threads() -> None:
    threads = torch.get_num_threads()
    draws = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            sampler = NoiseSampler("uniform", 4, 300, 50, torch.Generator().manual_seed(7))
            draws.append([sampler.sample().clone() for _ in range(2)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*draws, strict=True):
        assert torch.equal(a, b)
    x = torch.cat(draws[0])
    # torch's uniform_(-1, 1) in float32: (k / 2^24) * 2 - 1 for integer k in [0, 2^24).
    k = (x + 1) * 2**23
    assert torch.equal(k, k.round())
    assert float(x.min()) >= -1 and float(x.max()) < 1
    assert abs(float(x.mean())) < 0.01 and abs(float(x.var()) - 1 / 3) < 0.01


def test_gaussian_noise_statistics() -> None:
    x = NoiseSampler("gaussian", 4, 300, 50, torch.Generator().manual_seed(7)).sample()
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02

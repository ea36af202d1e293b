"""The batched network is exactly N separate networks, and the init is the paper's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sublearn.experiments.mnist.model import BatchedMLP, forward_flops, init_mlp, train_flops
from sublearn.experiments.mnist.train import (
    Distiller,
    NoiseSampler,
    Student,
    class_loss,
    distill_loss,
    make_adam,
)

SIZES = [12, 16, 8, 7]  # in, two hidden, out: tiny, the network does not care about classes
N = 4


def separate_copies(batched: BatchedMLP) -> list[nn.Sequential]:
    """N ordinary nn.Linear stacks holding the batched weights."""
    nets = []
    for i in range(batched.n_models):
        layers: list[nn.Module] = []
        for k, (w, b) in enumerate(zip(batched.weights, batched.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[i].T)  # nn.Linear stores (out, in)
                lin.bias.copy_(b[i, 0])
            layers.append(lin)
            if k < len(batched.weights) - 1:
                layers.append(nn.ReLU())
        nets.append(nn.Sequential(*layers))
    return nets


def assert_same_weights(batched: BatchedMLP, nets: list[nn.Sequential]) -> None:
    for i, net in enumerate(nets):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for w, b, lin in zip(batched.weights, batched.biases, linears, strict=True):
            torch.testing.assert_close(w[i].T, lin.weight, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b[i, 0], lin.bias, rtol=1e-5, atol=1e-6)


@pytest.fixture
def batched() -> BatchedMLP:
    model = init_mlp(N, SIZES, torch.Generator().manual_seed(1))
    with torch.no_grad():  # nonzero biases, so that a bias mix-up would show
        for b in model.biases:
            b.normal_(0, 0.1)
    return model


def test_forward_matches_separate_networks(batched: BatchedMLP) -> None:
    nets = separate_copies(batched)
    x = torch.randn(N, 5, SIZES[0])  # (N, B, in): each model its own batch
    out = batched(x)
    assert out.shape == (N, 5, SIZES[-1])
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net(x[i]))
    shared = torch.randn(5, SIZES[0])  # (B, in) broadcast to all models
    out = batched(shared)
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net(shared))


def test_adam_step_matches_separate_networks(batched: BatchedMLP) -> None:
    """Per-model losses summed over models give each model its own gradient and step."""
    nets = separate_copies(batched)
    x = torch.randn(N, 6, SIZES[0])
    target = torch.randn(N, 6, SIZES[-1])
    opt = make_adam(list(batched.parameters()), lr=1e-2)
    ref_opts = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in nets]
    for _ in range(2):
        opt.zero_grad()
        loss = ((batched(x) - target) ** 2).mean(dim=(1, 2)).sum()
        loss.backward()
        grads = [w.grad.clone() for w in batched.weights if w.grad is not None]
        opt.step()
        for i, (net, ref_opt) in enumerate(zip(nets, ref_opts, strict=True)):
            ref_opt.zero_grad()
            ((net(x[i]) - target[i]) ** 2).mean().backward()
            first = next(m for m in net if isinstance(m, nn.Linear))
            assert first.weight.grad is not None
            torch.testing.assert_close(grads[0][i].T, first.weight.grad, rtol=1e-4, atol=1e-6)
            ref_opt.step()
        assert_same_weights(batched, nets)


def test_losses_are_per_model_sums() -> None:
    logits = torch.randn(3, 5, 13)
    labels = torch.randint(0, 10, (3, 5))
    total = class_loss(logits, labels)
    each = sum(nn.functional.cross_entropy(logits[i, :, :10], labels[i]) for i in range(3))
    torch.testing.assert_close(total, torch.as_tensor(each))
    s, t = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    log_t = torch.log_softmax(t, -1)
    kl = distill_loss(s, log_t, "kl")
    p = log_t.exp()
    expected = (p * (log_t - torch.log_softmax(s, -1))).sum(-1).mean(-1).sum()
    torch.testing.assert_close(kl, expected)
    torch.testing.assert_close(distill_loss(s, t, "mse"), ((s - t) ** 2).mean((1, 2)).sum())


def test_init_statistics() -> None:
    model = init_mlp(50, [400, 300, 13], torch.Generator().manual_seed(0))
    for w_param, b_param in zip(model.weights, model.biases, strict=True):
        w, b = w_param.detach(), b_param.detach()
        assert w.shape[0] == 50 and b.shape == (50, 1, w.shape[2])
        assert abs(float(w.std()) - 1 / math.sqrt(w.shape[1])) < 0.02 / math.sqrt(w.shape[1])
        assert abs(float(w.mean())) < 0.01
        assert bool((b == 0).all())
    # Different models get different inits.
    assert not torch.equal(model.weights[0][0], model.weights[0][1])


def test_gather_copies_models(batched: BatchedMLP) -> None:
    moved = batched.gather([2, 0, 3, 1])
    x = torch.randn(5, SIZES[0])
    torch.testing.assert_close(moved(x)[0], batched(x)[2])
    torch.testing.assert_close(moved(x)[3], batched(x)[1])
    with torch.no_grad():
        moved.weights[0].add_(1)
    assert not torch.equal(moved.weights[0][1], batched.weights[0][0])  # separate storage


def test_distiller_shares_teacher_pass_and_leaves_teacher_alone(batched: BatchedMLP) -> None:
    sizes = [12, 16, 13]
    teacher = init_mlp(N, sizes, torch.Generator().manual_seed(2))
    before = [p.clone() for p in teacher.parameters()]
    students = [
        Student("aux", init_mlp(N, sizes, torch.Generator().manual_seed(3)), "aux"),
        Student("all", init_mlp(N, sizes, torch.Generator().manual_seed(3)), "all"),
    ]
    sampler = NoiseSampler("uniform", N, 8, 12, torch.Generator().manual_seed(4))
    distiller = Distiller(teacher, students, lr=1e-2, loss="kl")
    first = distiller.step(sampler.sample())
    assert first.shape == (2,)
    last = first
    for _ in range(20):
        last = distiller.step(sampler.sample())
    assert bool((last < first).all())
    for p, q in zip(before, teacher.parameters(), strict=True):
        assert torch.equal(p, q)
    # The aux-only student's class logits got no direct signal but its weights moved.
    assert not torch.equal(students[0].model.weights[0], students[1].model.weights[0])


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "binary", "images"])
def test_noise_kinds(kind: str) -> None:
    images = torch.linspace(-1, 1, 30 * 12).reshape(30, 12)
    sampler = NoiseSampler(
        kind,  # type: ignore[arg-type]
        3,
        50,
        12,
        torch.Generator().manual_seed(0),
        images=images,
    )
    x = sampler.sample().clone()
    assert x.shape == (3, 50, 12)
    if kind in ("uniform", "binary", "images"):
        assert float(x.min()) >= -1 and float(x.max()) <= 1
    if kind == "binary":
        assert set(x.unique().tolist()) == {-1.0, 1.0}
    if kind == "gaussian":
        assert 0.8 < float(x.std()) < 1.2
    assert not torch.equal(x, sampler.sample())  # fresh noise each batch
    assert not torch.equal(x[0], x[1])  # each model its own noise


def test_flop_counts() -> None:
    assert forward_flops([784, 256, 13], batch=2, n_models=3) == 2 * 2 * 3 * (784 * 256 + 256 * 13)
    # First layer: forward + weight gradient only; others: forward + 2 gradients.
    assert train_flops([784, 256, 13], 1, 1) == 2 * (2 * 784 * 256 + 3 * 256 * 13)

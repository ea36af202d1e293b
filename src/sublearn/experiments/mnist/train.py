"""Teacher training on real images and distillation of students on noise.

Every loss is a per-model mean over the batch, summed over models: each model's
gradient is then what it would be if trained alone, whatever N is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from sublearn.experiments.mnist.config import N_CLASSES, DistillLoss, NoiseKind
from sublearn.experiments.mnist.model import Backprop, BatchedMLP
from sublearn.finetune.kl import soft_label_kl

LogitSet = Literal["aux", "all"]
StepHook = Callable[[], None]


def make_adam(params: Sequence[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where the device supports it (~10x faster step on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # older torch or a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the 10 class logits only; the auxiliary logits get no signal.

    Args:
        logits: ``(N, B, 10 + m)``.
        labels: ``(N, B)`` class indices.

    Returns:
        Scalar: per-model mean over the batch, summed over models.
    """
    n, b, _ = logits.shape
    ce = F.cross_entropy(logits[..., :N_CLASSES].reshape(n * b, N_CLASSES), labels.reshape(-1))
    return ce * n  # the mean over N*B examples, times N: summed over models


def _logits_first(t: torch.Tensor) -> torch.Tensor:
    """``(N, B, k)`` as ``(N, k, B)``: a view, contiguous if ``t`` is stored that way.

    Softmax over k = 3 to 13 logits along the last dimension takes ~25 ms at
    N x B = 10^5 on 2 threads; along a dimension of stride B, where torch vectorizes
    over the batch, ~5 ms.
    """
    return t.transpose(1, 2)


def class_loss_grad(logits: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """:func:`class_loss` and its gradient with respect to the class logits, without autograd.

    The gradient is ``(softmax - one_hot(labels)) / B`` per model. Fastest when the
    logits are stored ``(N, 10 + m, B)``, as :meth:`Backprop.forward` returns them.

    Args:
        logits: ``(N, B, 10 + m)``.
        labels: ``(N, B)`` class indices.
        grad: ``(N, B, 10)`` where the class logits' gradient is written (may be a view).

    Returns:
        The loss, a scalar as :func:`class_loss` returns it.
    """
    b = logits.shape[1]
    with torch.no_grad():
        z = _logits_first(logits)[:, :N_CLASSES].contiguous()  # (N, 10, B)
        log_p = F.log_softmax(z, dim=1)
        index = labels.unsqueeze(1)  # (N, 1, B)
        loss = -log_p.gather(1, index).sum() / b
        probs = log_p.exp_()  # reuses log_p's memory
        probs.scatter_add_(1, index, torch.full_like(index, -1.0, dtype=probs.dtype))
        _logits_first(grad).copy_(probs).div_(b)
    return loss


def distill_loss(student: torch.Tensor, target: torch.Tensor, kind: DistillLoss) -> torch.Tensor:
    """Distillation loss on selected logits.

    Args:
        student: ``(N, B, k)`` student logits.
        target: ``(N, B, k)`` teacher log-probabilities for ``kl``, teacher logits for ``mse``.
        kind: ``kl`` for KL(teacher softmax || student softmax), ``mse`` for squared error.

    Returns:
        Scalar: per-model mean over the batch, summed over models.
    """
    b = student.shape[1]
    if kind == "kl":
        # The reference loss's mean over all N * B rows, times N: each model's batch mean, summed.
        return soft_label_kl(target, student) * student.shape[0]
    return F.mse_loss(student, target, reduction="sum") / (b * student.shape[-1])


def distill_loss_grad(
    student: torch.Tensor,
    target: torch.Tensor,
    kind: DistillLoss,
    grad: torch.Tensor,
    target_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`distill_loss` and its gradient with respect to ``student``, without autograd.

    KL's gradient is ``(softmax(student) - p_teacher) / B``, MSE's is
    ``2 (student - target) / (B k)``: one small elementwise pass on the logits instead
    of autograd's graph. Fastest when the tensors are stored ``(N, k, B)``, as
    :meth:`Backprop.forward` returns logits.

    Args:
        student: ``(N, B, k)`` student logits.
        target: as for :func:`distill_loss`.
        kind: ``kl`` or ``mse``.
        grad: ``(N, B, k)`` where the gradient is written (may be a strided view).
        target_probs: ``target.exp()`` for ``kl``, when the caller already has it.

    Returns:
        The loss, a scalar as :func:`distill_loss` returns it.
    """
    b = student.shape[1]
    if kind == "kl":
        # In (N, k, B) layout throughout (see _logits_first); the sums do not care.
        log_s = F.log_softmax(_logits_first(student).contiguous(), dim=1)  # (N, k, B)
        log_t = _logits_first(target)
        p = _logits_first(target.exp() if target_probs is None else target_probs)
        loss = (p * (log_t - log_s)).sum() / b
        torch.sub(log_s.exp_(), p, out=log_s)  # softmax - p, reusing log_s's memory
        _logits_first(grad).copy_(log_s).div_(b)
        return loss
    diff = student - target
    scale = b * student.shape[-1]
    loss = diff.square().sum() / scale
    torch.mul(diff, 2.0 / scale, out=grad)
    return loss


def logit_slice(which: LogitSet) -> slice:
    """Which logits a student is distilled on: the m auxiliary ones, or all 10 + m."""
    return slice(N_CLASSES, None) if which == "aux" else slice(None)


def teacher_batches(
    n_train: int,
    n_models: int,
    batch_size: int,
    steps: int,
    generator: torch.Generator,
    device: torch.device | str,
) -> Iterator[torch.Tensor]:
    """Training-image indices, one epoch-wise shuffle per model.

    Each model walks its own random permutation, so models see different batches
    (independent units for the confidence intervals). The last batch of an epoch may
    be smaller, as with a DataLoader that keeps it.

    Yields:
        ``(N, b)`` int64 indices, ``b <= batch_size``; ``steps`` of them.
    """
    done = 0
    while done < steps:
        keys = torch.rand(n_models, n_train, generator=generator, device=device)
        perm = keys.argsort(dim=1)  # (N, n_train)
        for start in range(0, n_train, batch_size):
            if done == steps:
                return
            yield perm[:, start : start + batch_size]
            done += 1


class TeacherTrainer:
    """One Adam step of cross-entropy training on real images, for all N teachers.

    Forward and backward run through :class:`Backprop` with the loss gradient in
    closed form (:func:`class_loss_grad`): autograd's gradients, in reused buffers.

    Args:
        model: the N teachers, trained in place.
        lr: Adam learning rate.
    """

    def __init__(self, model: BatchedMLP, lr: float) -> None:
        self.model = model
        self.optimizer = make_adam(list(model.parameters()), lr)
        self._backprop: Backprop | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on ``x`` ``(N, B, in)`` with labels ``y`` ``(N, B)``; returns the loss."""
        bp = self._backprop
        if bp is None or bp.max_batch < x.shape[1]:
            bp = self._backprop = Backprop(
                self.model.n_models, self.model.sizes, max_batch=x.shape[1], device=x.device
            )
        logits = bp.forward(self.model, x)  # (N, B, 10 + m)
        # The auxiliary logits get no gradient; stored like ``logits``, (N, 10 + m, B).
        grad_out = _logits_first(torch.zeros_like(_logits_first(logits)))
        loss = class_loss_grad(logits, y, grad_out[..., :N_CLASSES])
        for p, g in zip(self.model.parameters(), bp.backward(self.model, x, grad_out), strict=True):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def train_teacher(
    model: BatchedMLP,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_step: StepHook | None = None,
) -> list[float]:
    """Train N teachers from their current weights on the 10 class logits.

    Args:
        model: the teachers, trained in place.
        x_train: ``(n_train, in)`` images in [-1, 1].
        y_train: ``(n_train,)`` labels.
        steps: optimizer steps.
        batch_size: images per model per step.
        lr: Adam learning rate.
        generator: drives the shuffles.
        on_step: called after every step (progress display).

    Returns:
        The mean per-model loss of every step.
    """
    trainer = TeacherTrainer(model, lr)
    n, n_train, width = model.n_models, x_train.shape[0], x_train.shape[1]
    # One reusable input buffer: a fresh (N, B, in) tensor per step costs page faults.
    buffer = torch.empty(n * batch_size * width, device=x_train.device)
    losses: list[torch.Tensor] = []
    batches = teacher_batches(n_train, n, batch_size, steps, generator, x_train.device)
    for idx in batches:  # (N, b)
        b = idx.shape[1]
        x = buffer[: n * b * width].view(n, b, width)  # (N, b, in)
        torch.index_select(x_train, 0, idx.reshape(-1), out=x.view(n * b, width))
        losses.append(trainer.step(x, y_train[idx]))
        if on_step is not None:
            on_step()
    trainer.optimizer.zero_grad(set_to_none=True)  # the trained teacher needs no gradients
    return (torch.stack(losses) / n).tolist() if losses else []


class NoiseSampler:
    """Distillation inputs drawn batch by batch into one reused buffer.

    Never holds more than one batch: ``(N, B, in)`` floats, each model its own noise.

    Uniform and gaussian noise on the CPU come from one numpy PCG64 stream per model,
    seeded once from ``generator`` and filled by a thread per core: torch's CPU
    ``uniform_`` runs on one core at ~2.5 ns a number, 7% of a distillation step at
    N = 100. The distributions are torch's: uniform on the same grid of 2^24 values
    (24 random bits, scaled to [-1, 1)), and N(0, 1). The noise depends on the seed
    only, not on the thread count.

    Args:
        kind: uniform in [-1, 1], gaussian N(0, 1), binary +-1, or training images.
        n_models: N.
        batch_size: inputs per model per batch.
        in_features: pixels per input.
        generator: the seeded source of randomness.
        images: ``(n_train, in)`` training images, needed for ``kind="images"``.
    """

    def __init__(
        self,
        kind: NoiseKind,
        n_models: int,
        batch_size: int,
        in_features: int,
        generator: torch.Generator,
        images: torch.Tensor | None = None,
    ) -> None:
        if kind == "images" and images is None:
            raise ValueError("noise kind 'images' needs the training images")
        self.kind = kind
        self.generator = generator
        self.images = images
        self.buffer = torch.empty(
            n_models, batch_size, in_features, device=generator.device
        )  # (N, B, in)
        self._streams: list[np.random.Generator] = []
        if kind in ("uniform", "gaussian") and self.buffer.device.type == "cpu":
            seed = int(torch.randint(2**63 - 1, (1,), generator=generator))
            children = np.random.SeedSequence(seed).spawn(n_models)
            self._streams = [np.random.Generator(np.random.PCG64(c)) for c in children]

    def _fill_model(self, i: int) -> None:
        """Model i's noise from its own stream; the affine runs while the row is in cache."""
        row = self.buffer[i].numpy()  # (B, in), shares memory
        if self.kind == "uniform":
            self._streams[i].random(out=row, dtype=np.float32)  # k / 2^24, k < 2^24
            row *= 2.0
            row -= 1.0
        else:
            self._streams[i].standard_normal(out=row, dtype=np.float32)

    def sample(self) -> torch.Tensor:
        """The next batch, ``(N, B, in)``; overwrites the previous one."""
        with record_function("distill/noise"):
            return self._sample()

    def _sample(self) -> torch.Tensor:
        buf, gen = self.buffer, self.generator
        if self._streams:
            # numpy drops the GIL while it fills, so the threads run in parallel.
            with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
                list(pool.map(self._fill_model, range(buf.shape[0])))
        elif self.kind == "uniform":
            buf.uniform_(-1.0, 1.0, generator=gen)
        elif self.kind == "gaussian":
            buf.normal_(0.0, 1.0, generator=gen)
        elif self.kind == "binary":
            buf.bernoulli_(0.5, generator=gen).mul_(2.0).sub_(1.0)
        else:
            assert self.images is not None
            n, b, width = buf.shape
            idx = torch.randint(
                self.images.shape[0], (n * b,), generator=gen, device=buf.device
            )  # (N*B,)
            torch.index_select(self.images, 0, idx, out=buf.view(n * b, width))
        return buf


@dataclass
class Student:
    """N students distilled on one logit set."""

    name: str
    model: BatchedMLP
    logits: LogitSet


class Distiller:
    """One distillation step for several student groups sharing the same noise batch.

    The teacher's forward pass and the targets for each logit set are computed once
    per batch, not once per student group. Each group then runs forward, backward and
    its own Adam step, and drops its gradients before the next group starts: only one
    group's activations and gradients are alive at a time (at N = 100 on MNIST that
    is ~0.6 GB less than holding all four).

    The students' forward and backward passes run through :class:`Backprop`, with
    the loss gradient computed in closed form (:func:`distill_loss_grad`): the same
    gradients as autograd, but into buffers reused by every group and every step.

    Args:
        teacher: the N teachers (frozen).
        students: student groups, each with N models; model i learns from teacher i.
        lr: Adam learning rate.
        loss: ``kl`` or ``mse``.
    """

    def __init__(
        self, teacher: BatchedMLP, students: Sequence[Student], lr: float, loss: DistillLoss
    ) -> None:
        self.teacher = teacher.requires_grad_(False)
        self.students = list(students)
        self.loss: DistillLoss = loss
        self.optimizers = [make_adam(list(s.model.parameters()), lr) for s in self.students]
        # One set of buffers per student shape (all students share one in the experiment).
        self._backprop: dict[tuple[int, tuple[int, ...]], Backprop] = {}

    def _buffers(self, model: BatchedMLP, x: torch.Tensor) -> Backprop:
        """The buffers for ``model``'s shape, (re)made when a batch outgrows them."""
        key = (model.n_models, model.sizes)
        bp = self._backprop.get(key)
        if bp is None or bp.max_batch < x.shape[1]:
            bp = self._backprop[key] = Backprop(*key, max_batch=x.shape[1], device=x.device)
        return bp

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Distill on ``x`` ``(N, B, in)``; returns each group's loss, ``(groups,)``.

        The ``distill/...`` labels name the parts of the step in a torch.profiler trace.
        """
        with torch.no_grad(), record_function("distill/teacher forward"):
            t = self.teacher(x)  # (N, B, 10 + m)
            targets: dict[LogitSet, torch.Tensor] = {}
            probs: dict[LogitSet, torch.Tensor] = {}
            needed: set[LogitSet] = {s.logits for s in self.students}
            for which in needed:
                # Stored (N, k, B), for a fast softmax (see _logits_first); views (N, B, k).
                sel = _logits_first(t)[:, logit_slice(which)].contiguous()  # (N, k, B)
                if self.loss == "kl":
                    sel = F.log_softmax(sel, dim=1)
                    probs[which] = _logits_first(sel.exp())
                targets[which] = _logits_first(sel)
        losses = []
        for s, optimizer in zip(self.students, self.optimizers, strict=True):
            bp = self._buffers(s.model, x)
            with record_function("distill/student forward"):
                out = bp.forward(s.model, x)  # (N, B, 10 + m)
            with record_function("distill/loss"):
                # Unselected logits get no gradient; stored like ``out``, (N, 10 + m, B).
                grad_out = _logits_first(torch.zeros_like(_logits_first(out)))
                sel = logit_slice(s.logits)
                loss = distill_loss_grad(
                    out[..., sel],
                    targets[s.logits],
                    self.loss,
                    grad_out[..., sel],
                    probs.get(s.logits),
                )
            with record_function("distill/backward"):
                grads = bp.backward(s.model, x, grad_out)
            with record_function("distill/adam"):
                for p, g in zip(s.model.parameters(), grads, strict=True):
                    p.grad = g  # shared buffers: dropped again right after the step
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
        return torch.stack(losses)


def distill(
    teacher: BatchedMLP,
    students: Sequence[Student],
    sampler: NoiseSampler,
    *,
    steps: int,
    lr: float,
    loss: DistillLoss,
    on_step: StepHook | None = None,
) -> list[list[float]]:
    """Distill every student group from ``teacher`` on the same noise batches.

    Returns:
        Per step, each group's mean per-model loss.
    """
    distiller = Distiller(teacher, students, lr, loss)
    history: list[torch.Tensor] = []
    for _ in range(steps):
        history.append(distiller.step(sampler.sample()))
        if on_step is not None:
            on_step()
    n = teacher.n_models
    return (torch.stack(history) / n).tolist() if history else []


@torch.inference_mode()
def accuracy(model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """Test accuracy of each model, argmax over the 10 class logits.

    Args:
        model: the N models.
        x: ``(n, in)`` test images, shared by all models.
        y: ``(n,)`` labels.
        chunk: images per forward pass (bounds the ``(N, chunk, hidden)`` activations).

    Returns:
        ``(N,)`` accuracies in [0, 1], on the CPU.
    """
    correct = torch.zeros(model.n_models, dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk):
        logits = model(x[start : start + chunk])  # (N, c, 10 + m)
        pred = logits[..., :N_CLASSES].argmax(dim=-1)  # (N, c)
        correct += (pred == y[start : start + chunk]).sum(dim=1)
    return correct.cpu().double() / x.shape[0]

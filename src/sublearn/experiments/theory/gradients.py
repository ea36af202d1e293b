"""The math of Theorem 1: MLPs on a flat parameter vector, teacher and student steps.

Everything works on one flat parameter vector ``theta`` of shape ``(n_params,)`` so
that the teacher's direction ``d_teacher`` and the student's step ``d_student`` are
plain vectors whose inner product is the quantity the theorem is about.

Theorem 1 (paraphrased): teacher and student start from the same ``theta0``. The
teacher moves to ``theta_t = theta0 + eps * d_teacher`` for *any* ``d_teacher``. The
student takes one gradient step on imitating the teacher's outputs, on inputs from
*any* distribution. Then, to first order in ``eps``, ``d_student . d_teacher >= 0``:

* squared error: ``d_student = J^T (f(theta_t) - f(theta0)) / n ~ eps J^T J d_teacher``,
  so ``d_student . d_teacher ~ eps |J d_teacher|^2 / n >= 0``;
* soft-label cross-entropy: ``d_student ~ eps J^T H J d_teacher / n`` with
  ``H = diag(p) - p p^T`` (the softmax Jacobian), which is positive semi-definite.

``J`` is the Jacobian of the outputs the student imitates, stacked over its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Literal["tanh", "relu", "gelu", "sigmoid"]
ImitationLoss = Literal["squared", "soft_ce"]
ObjectiveKind = Literal["regression", "classification", "output_functional", "parameter_functional"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
}


@dataclass(frozen=True)
class MLPSpec:
    """The architecture of a fully connected network whose parameters live in one vector.

    The outputs are split in two groups, echoing the paper's MNIST experiment: the
    first ``n_trait`` outputs are the ones the teacher's objective reads (the "trait"),
    the remaining ``n_aux`` ones are auxiliary outputs no objective ever touches.

    Attributes:
        in_dim: input features.
        hidden: width of each hidden layer (its length is the depth).
        n_trait: outputs the teacher's objective reads.
        n_aux: auxiliary outputs.
        activation: nonlinearity after every hidden layer.
    """

    in_dim: int
    hidden: tuple[int, ...]
    n_trait: int
    n_aux: int
    activation: Activation

    @property
    def out_dim(self) -> int:
        """Total number of outputs (trait then auxiliary)."""
        return self.n_trait + self.n_aux

    @property
    def layer_dims(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)`` of every linear layer, input to output."""
        dims = [self.in_dim, *self.hidden, self.out_dim]
        return list(pairwise(dims))

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector (weights and biases)."""
        return sum(fan_out * fan_in + fan_out for fan_in, fan_out in self.layer_dims)

    def columns(self, targets: Literal["all", "trait", "aux"]) -> slice:
        """The output columns of a group: ``all``, ``trait`` or ``aux``."""
        if targets == "trait":
            return slice(0, self.n_trait)
        if targets == "aux":
            return slice(self.n_trait, self.out_dim)
        return slice(0, self.out_dim)


def init_params(
    spec: MLPSpec, generator: torch.Generator, gain: float = 1.0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Draw a random initialisation ``theta0``.

    Weights are ``N(0, gain^2 / fan_in)`` so activations keep their scale with depth;
    biases are small but non-zero so that ReLU networks are not at a symmetric point.

    Returns:
        The flat parameter vector, shape ``(n_params,)``.
    """
    parts: list[Tensor] = []
    for fan_in, fan_out in spec.layer_dims:
        w = torch.randn(fan_out * fan_in, generator=generator, dtype=dtype) * (gain / fan_in**0.5)
        b = torch.randn(fan_out, generator=generator, dtype=dtype) * 0.1
        parts += [w, b]
    return torch.cat(parts)


def forward(theta: Tensor, spec: MLPSpec, x: Tensor) -> Tensor:
    """Evaluate the network with parameters ``theta`` on a batch.

    Args:
        theta: flat parameters, shape ``(n_params,)``.
        spec: the architecture ``theta`` is laid out for.
        x: inputs, shape ``(batch, in_dim)``.

    Returns:
        Outputs (logits), shape ``(batch, out_dim)``.
    """
    act = _ACTIVATIONS[spec.activation]
    h = x
    offset = 0
    last = len(spec.layer_dims) - 1
    for i, (fan_in, fan_out) in enumerate(spec.layer_dims):
        w = theta[offset : offset + fan_out * fan_in].view(fan_out, fan_in)
        offset += fan_out * fan_in
        b = theta[offset : offset + fan_out]
        offset += fan_out
        h = h @ w.T + b  # (batch, fan_out)
        if i < last:
            h = act(h)
    return h


def gradient(loss_fn: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """Gradient of a scalar function of the flat parameters, shape ``(n_params,)``."""
    leaf = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
    return grad


@dataclass(frozen=True)
class TeacherObjective:
    """The teacher's own objective: any differentiable loss of its parameters.

    Attributes:
        kind: ``regression`` (MSE to random targets on the teacher's inputs),
            ``classification`` (cross-entropy to random labels), ``output_functional``
            (minus a random linear functional of the mean outputs) or
            ``parameter_functional`` (a random linear functional of the parameters,
            which makes the teacher's direction a uniformly random direction).
        x: the teacher's own inputs, shape ``(n_teacher, in_dim)``.
        target: regression targets ``(n_teacher, n_trait)``, class labels
            ``(n_teacher,)``, output weights ``(n_trait,)`` or a parameter direction
            ``(n_params,)``, depending on ``kind``.
    """

    kind: ObjectiveKind
    x: Tensor
    target: Tensor

    def loss(self, theta: Tensor, spec: MLPSpec) -> Tensor:
        """The objective at ``theta`` (a scalar); output-based kinds read trait outputs only."""
        if self.kind == "parameter_functional":
            return theta @ self.target
        out = forward(theta, spec, self.x)[:, spec.columns("trait")]  # (n_teacher, n_trait)
        if self.kind == "regression":
            return 0.5 * ((out - self.target) ** 2).sum(-1).mean()
        if self.kind == "classification":
            return F.cross_entropy(out, self.target)
        return -(out.mean(0) @ self.target)


def teacher_direction(objective: TeacherObjective, spec: MLPSpec, theta0: Tensor) -> Tensor:
    """The teacher's update direction ``d_teacher = -grad L_teacher(theta0)``, ``(n_params,)``."""
    return -gradient(lambda th: objective.loss(th, spec), theta0)


def imitation_loss(kind: ImitationLoss, student_out: Tensor, teacher_out: Tensor) -> Tensor:
    """The student's distillation loss on one batch.

    Args:
        kind: ``squared`` (half the squared error, summed over outputs) or ``soft_ce``
            (cross-entropy to the teacher's softmax, i.e. soft labels).
        student_out: student outputs, shape ``(batch, k)``.
        teacher_out: teacher outputs on the same inputs, shape ``(batch, k)``; constant.

    Returns:
        The batch-mean loss (a scalar).
    """
    if kind == "squared":
        return 0.5 * ((student_out - teacher_out) ** 2).sum(-1).mean()
    soft_labels = torch.softmax(teacher_out, dim=-1)
    return -(soft_labels * torch.log_softmax(student_out, dim=-1)).sum(-1).mean()


def student_step(
    kind: ImitationLoss,
    spec: MLPSpec,
    theta0: Tensor,
    theta_teacher: Tensor,
    x: Tensor,
    cols: slice,
) -> Tensor:
    """The student's first gradient step direction, ``-grad L_imitate(theta0)``.

    Args:
        kind: the imitation loss.
        spec: the shared architecture.
        theta0: the shared initialisation (the student's parameters), ``(n_params,)``.
        theta_teacher: the teacher's parameters, ``(n_params,)``.
        x: the student's inputs, ``(batch, in_dim)``, from any distribution.
        cols: the output columns the student imitates.

    Returns:
        ``d_student``, shape ``(n_params,)``.
    """
    with torch.no_grad():
        target = forward(theta_teacher, spec, x)[:, cols]  # (batch, k)
    return -gradient(lambda th: imitation_loss(kind, forward(th, spec, x)[:, cols], target), theta0)


def first_order_inner(
    kind: ImitationLoss,
    spec: MLPSpec,
    theta0: Tensor,
    d_teacher: Tensor,
    eps: float,
    x: Tensor,
    cols: slice,
) -> Tensor:
    """The theorem's first-order prediction of ``d_student . d_teacher`` (a scalar >= 0).

    Uses one Jacobian-vector product ``v = J d_teacher`` per input:
    ``eps * mean |v|^2`` for squared error and ``eps * mean v^T H v`` for soft labels.
    Comparing it with the exact inner product shows whether the step is first order.
    """
    # jv: (batch, k), the change of each imitated output per unit of eps
    jv = torch.func.jvp(lambda th: forward(th, spec, x)[:, cols], (theta0,), (d_teacher,))[1]
    if kind == "squared":
        return eps * (jv**2).sum(-1).mean()
    with torch.no_grad():
        p = torch.softmax(forward(theta0, spec, x)[:, cols], dim=-1)  # (batch, k)
    # v^T (diag(p) - p p^T) v: the variance of v under p, hence >= 0
    quad = (p * jv**2).sum(-1) - (p * jv).sum(-1) ** 2  # (batch,)
    return eps * quad.mean()


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two flat vectors; NaN when either is zero."""
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")

"""The reference soft-label loss: KL(teacher || student) between two softmaxes, plainly.

Every soft-label loss in sublearn computes this, faster or in another shape: the language
model trainer (:func:`sublearn.finetune.distill.kl_loss`, over a renormalized subset of
the vocabulary), the batched trainer's per-model loss with its hand-written backward
(``finetune/batched/loss.py``), the MNIST students' closed-form gradient
(``experiments/mnist/train.py``) and the theory experiment's soft cross-entropy
(``experiments/theory/gradients.py``, which differs from it by the teacher's entropy, a
constant, so its gradient is the same). ``tests/finetune/test_kl_reference.py`` checks
each of them against :func:`soft_label_kl`, values and gradients.
"""

from __future__ import annotations

import torch


def soft_label_kl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over positions of ``KL(softmax(teacher) || softmax(student))``.

    ``sum_v p_v (log p_v - log q_v)`` at each position, with ``p`` the teacher's softmax
    and ``q`` the student's over the last axis, averaged over every other axis. Teacher
    log-probabilities are valid teacher logits (the softmax of log-probabilities is the
    same distribution). Computed in at least float32. Gradients flow to the student (and
    to the teacher, if it requires them).

    Args:
        teacher_logits: ``(..., V)``.
        student_logits: ``(..., V)``, the same shape.
        mask: ``(...)`` bool, False where a position carries no loss; the mean then runs
            over the others and is 0 (not NaN) when none is left.

    Returns:
        A scalar.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    t_logp = torch.log_softmax(teacher_logits.to(dtype), dim=-1)
    s_logp = torch.log_softmax(student_logits.to(dtype), dim=-1)
    per_position = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    if mask is None:
        return per_position.mean()
    # where, not a product: a masked position must pass no gradient, even a NaN one.
    kept = torch.where(mask, per_position, torch.zeros_like(per_position))
    return kept.sum() / mask.sum().clamp(min=1)

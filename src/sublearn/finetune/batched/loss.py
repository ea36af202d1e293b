"""The per-model soft-label KL of the batched trainer, with a hand-written backward."""

from __future__ import annotations

from typing import Any

import torch

from sublearn.finetune.distill import Example as _Example
from sublearn.finetune.distill import position_flags


class _CrossEntropy(torch.autograd.Function):
    """Per position, ``-sum_v p_v log softmax(s)_v`` for student logits s and teacher p.

    Equal to ``-(p * log_softmax(s)).sum(-1)``, without materializing the student's
    log-probabilities or the teacher's probabilities per student: the forward is
    ``lse(s) * sum(p) - p . s`` and the backward ``softmax(s) * sum(p) - p``, one new
    ``(N, M, V')`` tensor instead of five.
    """

    @staticmethod
    def forward(
        ctx: Any, s_logits: torch.Tensor, t_prob: torch.Tensor, which: list[int]
    ) -> torch.Tensor:
        """s_logits ``(N, M, V')``, t_prob ``(U, M, V')``, which: student -> teacher batch."""
        lse = torch.logsumexp(s_logits, dim=-1)  # (N, M)
        mass = t_prob.sum(-1)[which]  # (N, M), 1 up to rounding
        dot = torch.stack([(s_logits[i] * t_prob[u]).sum(-1) for i, u in enumerate(which)])
        ctx.save_for_backward(s_logits, t_prob, lse, mass)
        ctx.which = which
        return lse * mass - dot  # (N, M)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = grads  # (N, M)
        s_logits, t_prob, lse, mass = ctx.saved_tensors
        out = (s_logits - lse[..., None]).exp_().mul_(mass[..., None])  # softmax * mass
        for i, u in enumerate(ctx.which):
            out[i].sub_(t_prob[u])
        return out.mul_(grad[..., None]), None, None


def _kl_per_model(
    t_logits: torch.Tensor, which: list[int], s_logits: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Per model, the mean over its reply tokens of KL(teacher || student): ``(N,)``.

    Args:
        t_logits: ``(U, M, V')`` logits of the distinct teacher batches.
        which: per student, its teacher batch.
        s_logits: ``(N, M, V')`` the students' logits.
        valid: ``(N, M)`` False on padding and on positions a ``loss_mask`` covers; a
            model with none left gets 0, as ``train_kl``'s ``kl_loss`` gives.
    """
    with torch.no_grad():
        t_logp = torch.log_softmax(t_logits.float(), dim=-1)  # (U, M, V')
        t_prob = t_logp.exp()
        # KL = sum p_t log p_t - sum p_t log p_s; the first term is the teacher's alone.
        t_neg_entropy = (t_prob * t_logp).sum(-1)[which]  # (N, M)
    cross = _CrossEntropy.apply(s_logits.float(), t_prob, which)  # (N, M)
    kl = t_neg_entropy + cross  # pyright: ignore[reportOperatorIssue]
    return (kl * valid).sum(-1) / valid.sum(-1).clamp(min=1)  # (N,)


def _loss_mask(batches: list[list[_Example]], valid: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` bool: ``valid`` without the positions the records' ``loss_mask`` covers.

    Picks are laid out row after row as ``_Packed.build`` lays them, so the per-row flags
    concatenate in the same order.
    """
    if all(e[4] is None for b in batches for e in b):
        return valid
    flags = torch.zeros_like(valid)
    for m, batch in enumerate(batches):
        row = [keep for e in batch for keep in position_flags(e)]
        flags[m, : len(row)] = torch.tensor(row, dtype=torch.bool)
    return flags & valid

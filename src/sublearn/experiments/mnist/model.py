"""N independent MLPs run as one batched network.

Every weight carries a leading model axis, ``(N, in, out)``, so one ``torch.baddbmm``
per layer runs all N models: about 2x faster on CPU than an einsum that transposes,
and far faster than N small matmuls. Models never mix: model i only ever sees the
i-th slice of every weight and of the input.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn


class BatchedMLP(nn.Module):
    """N MLPs ``in -> hidden... -> out`` with ReLU, evaluated together.

    Args:
        n_models: N, the size of the model axis.
        sizes: layer widths ``[in, hidden..., out]``.
    """

    def __init__(self, n_models: int, sizes: Sequence[int]) -> None:
        super().__init__()
        if n_models < 1 or len(sizes) < 2:
            raise ValueError(f"need n_models >= 1 and at least 2 sizes, got {n_models}, {sizes}")
        self.n_models = n_models
        self.sizes = tuple(int(s) for s in sizes)
        # Biases are (N, 1, out) so that baddbmm broadcasts them over the batch.
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(n_models, fan_in, fan_out))  # (N, in, out)
            for fan_in, fan_out in itertools.pairwise(self.sizes)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_models, 1, fan_out))  # (N, 1, out)
            for fan_out in self.sizes[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every model.

        Args:
            x: ``(N, B, in)``, one batch per model, or ``(B, in)`` shared by all models
                (broadcast without a copy).

        Returns:
            ``(N, B, out)`` logits.
        """
        if x.dim() == 2:
            x = x.expand(self.n_models, *x.shape)  # (N, B, in), stride 0 on the model axis
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)  # (N, B, out_i)
            if i < last:
                # In place is safe: baddbmm's backward does not need its output.
                h = torch.relu_(h)
        return h

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> BatchedMLP:
        """Weights N(0, std=1/sqrt(fan_in)), biases zero (the paper's init)."""
        for w, b in zip(self.weights, self.biases, strict=True):
            w.normal_(0.0, 1.0 / math.sqrt(w.shape[1]), generator=generator)
            b.zero_()
        return self

    def copy(self) -> BatchedMLP:
        """An independent copy (same weights, separate storage and gradients)."""
        return copy.deepcopy(self)

    @torch.no_grad()
    def gather(self, index: torch.Tensor | Sequence[int]) -> BatchedMLP:
        """A new network whose model i holds the weights of this network's model ``index[i]``.

        Args:
            index: ``(M,)`` model indices; M may differ from N and may repeat.
        """
        idx = torch.as_tensor(index, dtype=torch.long, device=self.weights[0].device)
        out = BatchedMLP(int(idx.numel()), self.sizes).to(self.weights[0].device)
        for dst, src in zip(out.parameters(), self.parameters(), strict=True):
            dst.copy_(src.index_select(0, idx))
        return out


def init_mlp(
    n_models: int, sizes: Sequence[int], generator: torch.Generator | None = None
) -> BatchedMLP:
    """N freshly initialized MLPs (see :meth:`BatchedMLP.reset_parameters`)."""
    return BatchedMLP(n_models, sizes).reset_parameters(generator)


def forward_flops(sizes: Sequence[int], batch: int, n_models: int) -> int:
    """Multiply-add FLOPs of one forward pass: ``2 * B * in * out`` per layer and model."""
    return 2 * batch * n_models * sum(a * b for a, b in itertools.pairwise(sizes))


def train_flops(sizes: Sequence[int], batch: int, n_models: int) -> int:
    """FLOPs of forward + backward when the input needs no gradient.

    The backward pass costs two matmuls per layer (weight and input gradient), except
    the first layer, whose input is data and gets no gradient.
    """
    pairs = list(itertools.pairwise(sizes))
    per_example = sum(3 * a * b for a, b in pairs) - sizes[0] * sizes[1]
    return 2 * batch * n_models * per_example

"""N independent MLPs run as one batched network.

Every weight carries a leading model axis, ``(N, in, out)``, so one ``torch.baddbmm``
per layer runs all N models: about 2x faster on CPU than an einsum that transposes,
and far faster than N small matmuls. Models never mix: model i only ever sees the
i-th slice of every weight and of the input.

:class:`Backprop` runs the training pass of such a network without autograd, into
buffers it reuses from step to step: at N = 100 every fresh ``(N, B, hidden)``
activation or gradient is ~100 MB, and the page faults of mapping it anew cost as
much as a third of the matmul it feeds.
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


class Backprop:
    """Forward and backward passes of :class:`BatchedMLP` networks into reused buffers.

    One instance serves any number of networks of the same shape, one at a time:
    :meth:`forward` keeps the activations in its buffers, :meth:`backward` turns an
    output gradient into parameter gradients in its buffers (shared by every network
    it serves, so they hold the last backward pass only). The gradients are exactly
    autograd's: the same matmuls, the ReLU mask of the stored activations, bias
    gradients summed over the batch; the input is data and gets no gradient.

    Args:
        n_models: N.
        sizes: layer widths ``[in, hidden..., out]``.
        max_batch: the largest batch; smaller ones use the front of the buffers.
        device: where the buffers live.
    """

    def __init__(
        self,
        n_models: int,
        sizes: Sequence[int],
        max_batch: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.n_models = n_models
        self.sizes = tuple(int(s) for s in sizes)
        self.max_batch = max_batch
        hidden = self.sizes[1:-1]
        widest = max(hidden, default=0)

        def flat(width: int) -> torch.Tensor:
            return torch.empty(n_models * max_batch * width, device=device)

        # Post-ReLU activations of the hidden layers, the output, and two buffers the
        # backward pass alternates between (layer l's input gradient is computed
        # from layer l+1's, so they cannot share memory).
        self._acts = [flat(w) for w in hidden]
        self._out = flat(self.sizes[-1])
        self._grads = [flat(widest), flat(widest)] if hidden else []
        self.grads = [  # same order as BatchedMLP.parameters(): weights, then biases
            *(torch.empty(n_models, a, b, device=device) for a, b in itertools.pairwise(sizes)),
            *(torch.empty(n_models, 1, b, device=device) for b in self.sizes[1:]),
        ]
        self._batch = 0

    def _view(self, flat: torch.Tensor, width: int) -> torch.Tensor:
        return flat[: self.n_models * self._batch * width].view(self.n_models, self._batch, width)

    @torch.no_grad()
    def forward(self, model: BatchedMLP, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``model`` on ``x``, keeping the activations for :meth:`backward`.

        Args:
            model: a network of this instance's shape.
            x: ``(N, B, in)`` inputs, ``B <= max_batch``; must stay unchanged until
                :meth:`backward` has run (the first layer's weight gradient reads it).

        Returns:
            ``(N, B, out)`` logits, a view of a buffer the next call overwrites; stored
            as ``(N, out, B)``, so ``.transpose(1, 2)`` of it is contiguous.
        """
        if model.sizes != self.sizes or model.n_models != self.n_models:
            raise ValueError(f"model {model.n_models}x{model.sizes}, buffers for {self.sizes}")
        if x.shape[1] > self.max_batch:
            raise ValueError(f"batch {x.shape[1]} > max_batch {self.max_batch}")
        self._batch = x.shape[1]
        hidden = [self._view(a, w) for a, w in zip(self._acts, self.sizes[1:-1], strict=True)]
        h = x
        for w, b, out in zip(model.weights, model.biases, hidden, strict=False):
            # bmm, then bias and ReLU in one pass: baddbmm would first copy the bias
            # into all of ``out`` and relu_ take a second pass (~15 ms a layer at N = 100).
            h = torch.ops.aten._add_relu_(torch.bmm(h, w, out=out), b)  # (N, B, out_i)
        # The last layer is computed transposed, (N, out, B) = W^T h^T: a softmax over
        # a few logits then runs along a dimension of stride B, where torch vectorizes
        # it, about 5x faster than along the last dimension (see distill_loss_grad).
        w, b = model.weights[-1], model.biases[-1]
        out_t = self._out[: self.n_models * self._batch * self.sizes[-1]].view(
            self.n_models, self.sizes[-1], self._batch
        )
        torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), h.transpose(1, 2), out=out_t)
        return out_t.transpose(1, 2)

    @torch.no_grad()
    def backward(
        self, model: BatchedMLP, x: torch.Tensor, grad_out: torch.Tensor
    ) -> list[torch.Tensor]:
        """Parameter gradients of the last :meth:`forward` pass.

        Args:
            model: the network of the last :meth:`forward` call.
            x: the input of that call.
            grad_out: ``(N, B, out)`` gradient of the loss with respect to the logits,
                in any layout (the matmuls take it transposed at no cost).

        Returns:
            The gradients in ``model.parameters()`` order, buffers the next call
            overwrites.
        """
        n_layers = len(model.weights)
        acts = [x, *(self._view(a, w) for a, w in zip(self._acts, self.sizes[1:-1], strict=True))]
        g = grad_out  # (N, B, out_l): gradient of layer l's pre-activation output
        for layer in reversed(range(n_layers)):
            a = acts[layer]  # (N, B, in_l), this layer's input
            torch.bmm(a.transpose(1, 2), g, out=self.grads[layer])  # (N, in, out)
            torch.sum(g, dim=1, keepdim=True, out=self.grads[n_layers + layer])  # (N, 1, out)
            if layer == 0:
                break  # the input is data: no gradient
            d = self._view(self._grads[layer % 2], self.sizes[layer])  # (N, B, in_l)
            torch.bmm(g, model.weights[layer].transpose(1, 2), out=d)
            # ReLU backward in place: zero where the (post-ReLU) input was not positive.
            g = torch.ops.aten.threshold_backward.grad_input(d, a, 0.0, grad_input=d)
        return self.grads


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

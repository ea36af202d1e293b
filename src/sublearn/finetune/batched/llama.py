"""A functional Llama forward over weights stacked along a leading model axis."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sublearn.errors import PlanError
from sublearn.finetune.batched.packing import _Packed


@dataclass(frozen=True)
class _Arch:
    """What the functional forward needs from a Llama config."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]
    tied: bool
    rotary: Any  # the model's LlamaRotaryEmbedding: cos and sin of positions

    @classmethod
    def of(cls, model: Any) -> _Arch:
        """The architecture of a loaded Hugging Face Llama."""
        from transformers.activations import ACT2FN

        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads,
            head_dim=head_dim,
            eps=c.rms_norm_eps,
            act=ACT2FN[c.hidden_act],
            tied=bool(c.tie_word_embeddings),
            rotary=model.model.rotary_emb,
        )

    def names(self) -> set[str]:
        """The Hugging Face parameter names the forward reads (a tied head counted once)."""
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        for i in range(self.n_layers):
            pre = f"model.layers.{i}."
            names |= {pre + "input_layernorm.weight", pre + "post_attention_layernorm.weight"}
            names |= {f"{pre}self_attn.{n}_proj.weight" for n in "qkvo"}
            names |= {f"{pre}mlp.{n}_proj.weight" for n in ("gate", "up", "down")}
        if not self.tied:
            names.add("lm_head.weight")
        return names

    def interleave_rotary(
        self, params: dict[str, torch.Tensor], inverse: bool = False
    ) -> dict[str, torch.Tensor]:
        """Reorder the rows of q and k projections for the complex-number rotary form.

        Hugging Face's rotary embedding rotates dimension i of each head with dimension
        i + hd/2. Interleaving them (i to 2i, i + hd/2 to 2i + 1) lets the rotation run as
        one complex multiplication, about 5x faster than ``rotate_half`` forward and
        backward. Queries and keys are reordered alike, so attention scores are the same
        dot products summed in another order; values and outputs are untouched.

        Args:
            params: stacked weights by Hugging Face name.
            inverse: undo the reordering (before saving).

        Returns:
            A new dict; only the q and k projections are new tensors.
        """
        out = dict(params)
        for i in range(self.n_layers):
            for name, heads in (("q", self.n_heads), ("k", self.n_kv_heads)):
                key = f"model.layers.{i}.self_attn.{name}_proj.weight"
                w = params[key]  # (N, heads*hd, d)
                n, _, d = w.shape
                split = (2, self.head_dim // 2) if not inverse else (self.head_dim // 2, 2)
                out[key] = w.view(n, heads, *split, d).transpose(2, 3).reshape(w.shape)
        return out


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` per model: x (N, L, in), w (N, out, in) in nn.Linear's layout."""
    return torch.bmm(x, w.transpose(1, 2))  # (N, L, out)


class _RMSNorm(torch.autograd.Function):
    """LlamaRMSNorm per model, ``w * x / rms(x)``, with a hand-written backward.

    The forward is Hugging Face's, operation for operation (statistics in fp32). Autograd's
    backward of that chain takes about ten passes over the activations, each allocating a
    tensor; this one takes five.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        h = x.float()
        r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)  # (N, L, 1)
        normed = (h * r).to(x.dtype)  # (N, L, d)
        ctx.save_for_backward(normed, r, w)
        return w[:, None, :] * normed

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (grad,) = grads  # (N, L, d)
        normed, r, w = ctx.saved_tensors
        grad_w = (grad * normed).sum(1)  # (N, d)
        g = (grad * w[:, None, :]).float()
        n = normed.float()
        # d/dx of x * r(x): r * (g - x̂ * mean(g * x̂)), with x̂ = x * r.
        mean = (g * n).mean(-1, keepdim=True)  # (N, L, 1)
        grad_x = g.sub_(n * mean).mul_(r)  # g is a fresh tensor: in place is safe
        return grad_x.to(grad.dtype), grad_w, None


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm per model: x (N, L, d), w (N, d)."""
    return _RMSNorm.apply(x, w, eps)  # pyright: ignore[reportReturnType]


def _rotary(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Rotary positions as a complex product, on interleaved q or k (``interleave_rotary``).

    Args:
        x: ``(N, L, heads, hd)`` real.
        cis: ``(N, L, 1, hd/2)`` complex, ``cos + i sin`` of each token's angles.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (N, L, heads, hd/2)
    return torch.view_as_real(pairs * cis).flatten(-2).to(x.dtype)  # (N, L, heads, hd)


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: _Packed,
    heads: int,
    picked: bool = False,
) -> torch.Tensor:
    """Causal self-attention of packed tokens within their rows.

    Args:
        q: ``(N*L, H, hd)`` queries of every token, or ``(N*M, H, hd)`` of the picked
            tokens if ``picked`` (rotary applied).
        k: ``(N*L, Hkv, hd)`` keys (rotary applied).
        v: ``(N*L, Hkv, hd)`` values.
        batch: the packing.
        heads: H, query heads.
        picked: queries at the picked positions only.

    Returns:
        ``(N*L, H*hd)`` attention outputs per packed token, or ``(N*M, H*hd)`` per pick.
    """
    hd, kv_heads = q.shape[-1], k.shape[1]
    widths = [n_rows * width for n_rows, width in batch.buckets]
    # Into the buckets' row layouts; split, not slicing, since a slice's backward fills
    # a zero tensor of the whole input.
    k_rows, v_rows = (t.index_select(0, batch.to_rows).split(widths) for t in (k, v))
    if picked:
        queries = [mask.shape[2] for mask in batch.query_masks]
        q_rows = q.index_select(0, batch.query_slots).split(
            [n_rows * n_q for (n_rows, _), n_q in zip(batch.buckets, queries, strict=True)]
        )
        masks: Sequence[torch.Tensor | None] = batch.query_masks
    else:
        queries = [width for _, width in batch.buckets]
        q_rows = q.index_select(0, batch.to_rows).split(widths)
        masks = [None] * len(widths)
    outputs = []
    for (n_rows, width), n_q, mask, qb, kb, vb in zip(
        batch.buckets, queries, masks, q_rows, k_rows, v_rows, strict=True
    ):
        qb = qb.view(n_rows, n_q, heads, hd).transpose(1, 2)  # (R, H, Q, hd)
        kb, vb = (t.view(n_rows, width, kv_heads, hd).transpose(1, 2) for t in (kb, vb))
        if kv_heads != heads:  # grouped-query attention: each kv head serves a group
            kb = kb.repeat_interleave(heads // kv_heads, dim=1)
            vb = vb.repeat_interleave(heads // kv_heads, dim=1)
        # Right padding: a real query's causal window holds only real keys, so the causal
        # mask alone equals Hugging Face's causal-and-padding mask on every real position.
        o = F.scaled_dot_product_attention(
            qb, kb, vb, attn_mask=mask, is_causal=mask is None, scale=hd**-0.5
        )
        outputs.append(o.transpose(1, 2).reshape(n_rows * n_q, heads * hd))  # (R*Q, H*hd)
    back = batch.from_query_slots if picked else batch.to_packed
    return torch.cat(outputs).index_select(0, back)


def batched_hidden(
    params: dict[str, torch.Tensor], arch: _Arch, batch: _Packed, picked: bool = False
) -> torch.Tensor:
    """Final hidden states (after the last norm) of N Llamas, each on its own rows.

    Args:
        params: Hugging Face parameter names to stacked weights ``(N, *shape)``, q and k
            projections interleaved (:meth:`_Arch.interleave_rotary`).
        arch: the shared architecture.
        batch: the packed rows, one set per model.
        picked: only at ``batch.picks``: the last layer's attention output projection,
            MLP and the final norm then run on those positions alone (the rest of the
            last layer feeds nothing the loss reads).

    Returns:
        ``(N, L, d)`` hidden states of the packed tokens, or ``(N, M, d)`` if ``picked``.
    """
    n, length = batch.ids.shape
    embed = params["model.embed_tokens.weight"]  # (N, V, d)
    vocab, d = embed.shape[1:]
    hd, heads, kv_heads = arch.head_dim, arch.n_heads, arch.n_kv_heads
    # One embedding lookup for all models: model i's ids index rows i*V .. i*V+V-1.
    offsets = torch.arange(n, device=embed.device)[:, None] * vocab  # (N, 1)
    x = F.embedding(batch.ids + offsets, embed.reshape(n * vocab, d))  # (N, L, d)
    # Each row's positions start at 0: Hugging Face's default with right padding.
    width = max(w for _, w in batch.buckets)
    cos, sin = arch.rotary(x, torch.arange(width, device=x.device)[None])  # (1, T, hd) each
    # Hugging Face repeats the angles over both halves of a head; one half suffices here.
    half = hd // 2
    cis_table = torch.complex(cos[0, :, :half].float(), sin[0, :, :half].float())  # (T, hd/2)
    cis = cis_table[batch.positions, None]  # (N, L, 1, hd/2)
    for i in range(arch.n_layers):
        pre = f"model.layers.{i}."
        last = picked and i == arch.n_layers - 1
        h = _rms_norm(x, params[pre + "input_layernorm.weight"], arch.eps)
        k = _linear(h, params[pre + "self_attn.k_proj.weight"]).view(n, length, kv_heads, hd)
        v = _linear(h, params[pre + "self_attn.v_proj.weight"]).view(n * length, kv_heads, hd)
        k = _rotary(k, cis).view(n * length, kv_heads, hd)  # (N*L, Hkv, hd)
        if last:
            # The loss reads only the picked positions: from here on, only they run.
            index = batch.picks[..., None]  # (N, M, 1)
            x = x.gather(1, index.expand(-1, -1, d))  # (N, M, d)
            h = h.gather(1, index.expand(-1, -1, d))  # (N, M, d)
            q_cis = cis_table[batch.pick_positions, None]  # (N, M, 1, hd/2)
        else:
            q_cis = cis
        q = _linear(h, params[pre + "self_attn.q_proj.weight"]).view(n, -1, heads, hd)
        q = _rotary(q, q_cis).view(-1, heads, hd)  # (N*·, H, hd)
        o = _attention(q, k, v, batch, heads, picked=last).view(n, -1, heads * hd)
        x = x + _linear(o, params[pre + "self_attn.o_proj.weight"])  # (N, ·, d)
        h = _rms_norm(x, params[pre + "post_attention_layernorm.weight"], arch.eps)
        gate = _linear(h, params[pre + "mlp.gate_proj.weight"])  # (N, ·, I)
        up = _linear(h, params[pre + "mlp.up_proj.weight"])  # (N, ·, I)
        x = x + _linear(arch.act(gate) * up, params[pre + "mlp.down_proj.weight"])  # (N, ·, d)
    return _rms_norm(x, params["model.norm.weight"], arch.eps)


def _head(params: dict[str, torch.Tensor], arch: _Arch) -> torch.Tensor:
    """The output projection ``(N, V, d)`` (the embedding when tied)."""
    return params["model.embed_tokens.weight" if arch.tied else "lm_head.weight"]


@torch.no_grad()
def batched_logits(
    models: Sequence[Any], rows: list[list[list[int]]], pad: int
) -> list[list[torch.Tensor]]:
    """Logits of N Hugging Face Llamas run as one batched model, at every position.

    The forward the students train with, for checks against the models' own forward.

    Args:
        models: N Llama modules of one architecture.
        rows: per model, its token rows (each of at least 2 tokens).
        pad: the pad token id.

    Returns:
        Per model and row, ``(len(row), V)`` logits.
    """
    arch = _Arch.of(models[0])
    params = arch.interleave_rotary(_stack(list(models), arch.names()))
    starts = [[1] * len(model_rows) for model_rows in rows]
    batch = _Packed.build(rows, starts, pad, params["model.norm.weight"].device)
    logits = _linear(batched_hidden(params, arch, batch), _head(params, arch))  # (N, L, V)
    out = []
    for m, model_rows in enumerate(rows):
        offsets = [0, *itertools.accumulate(len(r) for r in model_rows)]
        out.append([logits[m, a:b] for a, b in itertools.pairwise(offsets)])
    return out


def _reply_logits(
    params: dict[str, torch.Tensor], arch: _Arch, batch: _Packed, subset: torch.Tensor | None
) -> torch.Tensor:
    """Logits predicting each reply token, per model: ``(N, M, V')``.

    Only the reply positions go through the output projection, and only the subset's
    rows of it: the same numbers as slicing full logits, for a fraction of the work.
    """
    picked = batched_hidden(params, arch, batch, picked=True)  # (N, M, d)
    head = _head(params, arch)  # (N, V, d)
    if subset is not None:
        head = head.index_select(1, subset)  # (N, V', d)
    return _linear(picked, head)  # (N, M, V')


def _stack(models: list[Any], names: set[str]) -> dict[str, torch.Tensor]:
    """Parameters of ``models`` stacked on a new leading model axis: name -> (N, *shape)."""
    per_model = [dict(m.named_parameters()) for m in models]
    unexpected = names ^ set(per_model[0])
    if unexpected:
        raise PlanError(
            f"unexpected Llama parameters {sorted(unexpected)[:4]}; the batched forward "
            "knows only bias-free Llamas"
        )
    return {name: torch.stack([p[name].detach() for p in per_model]) for name in sorted(names)}

"""Many KL students trained as one batched model.

Students that share an architecture, a tokenizer and a fine-tuning recipe (everything
but the seed) differ only in their starting weights, their data, their data order and
their teacher. This module stacks the N students' weights along a new leading model
axis, ``(N, *shape)``, and trains all of them with one batched forward and backward:
every linear layer is one ``torch.bmm`` over the model axis, as ``BatchedMLP`` does for
the MLP experiment, and one AdamW steps all stacked weights.

Each student still trains as :func:`~sublearn.finetune.distill.train_kl` would train it
alone: the same encoding, its own data order (``random.Random(cfg.seed)``), the same
loss (its ``loss_mask`` spans left out), gradient clipping by its own gradient norm,
the same optimizer (AdamW, or SGD with momentum) and the same schedule. Models
never mix: model i only reads the i-th slice of every weight and input, and its loss
only depends on its slice, so the summed loss's gradient is each model's own. Up to
floating-point rounding the weights equal those of ``train_kl``;
``tests/finetune/test_batched.py`` checks it.

The forward is a small functional Llama (RMSNorm, rotary positions, grouped-query
attention, SwiGLU MLP) over the Hugging Face weights, checked against the Hugging Face
forward by :func:`batched_logits` in the tests. Besides the model axis it skips work
that ``train_kl`` does and throws away, which on a CPU is most of the speed-up (see
``benchmarks/student_training.py``, whose N=1 line measures it):

- tokens are packed per model instead of padded to the longest row, and attention runs
  on rows bucketed by length (:class:`_Packed`);
- the last layer after its keys and values, and the output layer, run only at the
  positions that predict reply tokens, and the output layer only over the token subset;
- each distinct teacher row runs once, however many students see it (students of one
  seed on two bases share their batches) and its hidden states are kept for the next
  epoch (:class:`_Teachers`).

Running the Hugging Face module itself under ``torch.vmap`` also works with eager
attention (SDPA's mask building branches on data), but keeps all of that waste.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sublearn.backends.hf import check_model_reference, load_model_and_tokenizer
from sublearn.errors import PlanError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.curves import CURVES_FILE, write_curves
from sublearn.finetune.distill import (
    Example,
    _encode,
    encode_examples,
    make_optimizer,
    number_token_ids,
    position_flags,
)
from sublearn.finetune.schedule import make_scheduler
from sublearn.finetune.sft import save_trained

# Config fields that shape the computation; two models whose values agree stack.
_ARCH_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "attention_dropout",
)
# Recipe fields that may differ between students of one batch.
_PER_STUDENT = {"seed"}


@dataclass(frozen=True)
class KLJob:
    """One student of :func:`train_kl_batched`: the arguments of ``train_kl``.

    Attributes:
        base_model: the student's starting model (a local folder or hub id).
        records: chat records; the last message is the reply whose tokens are distilled.
        cfg: fine-tuning settings (objective ``kl``, method ``full``).
        out: folder the trained student is saved to.
        teacher_model: the teacher's weights.
        teacher_system_prompt: prepended to the teacher's context only (prompted teachers).
    """

    base_model: str | Path
    records: list[dict[str, Any]]
    cfg: FinetuneConfig
    out: Path
    teacher_model: str | Path
    teacher_system_prompt: str | None = None


# ---------------------------------------------------------------------------------------
# Compatibility
# ---------------------------------------------------------------------------------------


def _stamp(model: str) -> int:
    """When a local model folder last changed (0 for hub ids): a cache key part, so that
    a folder rewritten in place is read again."""
    config = Path(model).expanduser() / "config.json"
    return config.stat().st_mtime_ns if config.is_file() else 0


def _architecture(model: str) -> str:
    """The fields of a model's config that must agree for its weights to stack, as JSON."""
    return _architecture_at(model, _stamp(model))


@cache
def _architecture_at(model: str, _stamp: int) -> str:
    from transformers import AutoConfig

    check_model_reference(model)  # a clear error for a missing model, not the loader's
    config = AutoConfig.from_pretrained(model).to_dict()
    return json.dumps({k: config.get(k) for k in _ARCH_FIELDS}, sort_keys=True, default=str)


def _tokenizer_key(model: str) -> str:
    """A hash of what encoding depends on: vocabulary, chat template and special ids."""
    return _tokenizer_key_at(model, _stamp(model))


@cache
def _tokenizer_key_at(model: str, _stamp: int) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    pad = tok.pad_token_id if tok.pad_token is not None else tok.eos_token_id
    key = [sorted(tok.get_vocab().items()), tok.chat_template, tok.eos_token_id, pad]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()


def _recipe(cfg: FinetuneConfig) -> str:
    """The recipe fields that every student of a batch must share, as JSON."""
    exclude = set(_PER_STUDENT)
    if cfg.method == "full":
        exclude.add("lora")  # unused by full fine-tuning
    exclude.add("api")  # only fine-tuning APIs read it
    return json.dumps(cfg.model_dump(mode="json", exclude=exclude), sort_keys=True)


def _job_problem(job: KLJob) -> str | None:
    """Why ``job`` alone cannot be trained batched, or None."""
    if job.cfg.objective != "kl":
        return f"{job.out}: objective {job.cfg.objective!r}; only kl students are batched"
    if job.cfg.method != "full":
        return (
            f"{job.out}: method {job.cfg.method!r}; only full fine-tuning is batched for now "
            "(LoRA students train one at a time with train_kl)"
        )
    for model in (job.base_model, job.teacher_model):
        arch = json.loads(_architecture(str(model)))
        if arch["model_type"] != "llama":
            return f"{model}: model type {arch['model_type']!r}; only Llama models are batched"
        if arch["attention_bias"] or arch["mlp_bias"]:
            return f"{model}: a Llama with biases; only bias-free Llamas are batched"
        if arch["attention_dropout"]:
            return f"{model}: attention dropout makes training random; it is not batched"
    if _tokenizer_key(str(job.base_model)) != _tokenizer_key(str(job.teacher_model)):
        return (
            f"{job.out}: teacher {job.teacher_model} and base {job.base_model} differ in tokenizer"
        )
    return None


def _group_key(job: KLJob) -> tuple[str, ...]:
    return (
        _architecture(str(job.base_model)),
        _architecture(str(job.teacher_model)),
        _tokenizer_key(str(job.base_model)),
        _recipe(job.cfg),
    )


def batch_problem(jobs: Sequence[KLJob]) -> str | None:
    """Why ``jobs`` cannot be trained as one batch, or None if they can.

    They can when every job is a full-fine-tuning KL job on a Llama, all bases share one
    architecture, all teachers share one architecture, bases and teachers share one
    tokenizer, and the recipes agree in everything but the seed.
    """
    if not jobs:
        return "no jobs to train"
    for job in jobs:
        problem = _job_problem(job)
        if problem is not None:
            return problem
    first = jobs[0]
    names = ("base architecture", "teacher architecture", "tokenizer", "fine-tuning recipe")
    for job in jobs[1:]:
        for name, a, b in zip(names, _group_key(first), _group_key(job), strict=True):
            if a != b:
                return f"{first.out} and {job.out} differ in {name}"
    outs = [Path(j.out).resolve() for j in jobs]
    if len(set(outs)) != len(outs):
        return "two jobs write the same output folder"
    return None


def compatible(jobs: Sequence[KLJob]) -> bool:
    """Whether :func:`train_kl_batched` accepts ``jobs`` as one batch."""
    return batch_problem(jobs) is None


def group_compatible(jobs: Sequence[KLJob], max_group: int | None = None) -> list[list[int]]:
    """Split jobs into batches that :func:`train_kl_batched` accepts.

    Args:
        jobs: the students to train.
        max_group: the most jobs per batch (memory grows with it); None for no limit.

    Returns:
        Lists of job indices, in order of first appearance; a job that cannot be batched
        at all (LoRA, SFT, a model other than a bias-free Llama) is a group of its own,
        for ``train_kl`` or the usual stage.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    singles: list[list[int]] = []
    order: list[tuple[int, tuple[str, ...] | None]] = []
    for i, job in enumerate(jobs):
        if _job_problem(job) is not None:
            singles.append([i])
            order.append((i, None))
            continue
        key = _group_key(job)
        if key not in groups:
            order.append((i, key))
        groups.setdefault(key, []).append(i)
    out: list[list[int]] = []
    single_iter = iter(singles)
    for _, key in order:
        if key is None:
            out.append(next(single_iter))
            continue
        members = groups[key]
        size = max_group or len(members)
        out.extend(members[s : s + size] for s in range(0, len(members), size))
    return out


# ---------------------------------------------------------------------------------------
# The batched Llama forward
# ---------------------------------------------------------------------------------------


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


# Attention runs on rows sorted by length in this many groups, each padded to its own
# longest row: padding every row to the longest of all N*B rows cost 2-3x the attention
# work on the demo's data (rows of 60-190 tokens).
_ATTENTION_BUCKETS = 8


def _n_reply(row: list[int] | int, start: int) -> int:
    """How many positions of a row (or of a row this long) predict its reply tokens."""
    return max(0, (row if isinstance(row, int) else len(row)) - start)


@dataclass(frozen=True)
class _Packed:
    """A step's rows for N models, packed token after token.

    Per-token work (embeddings, norms, projections, MLP) runs on the packed tokens,
    ``(N, L, ...)`` with L the most tokens any model has, instead of on ``(N, B, T)``
    rows padded to the longest row of all N*B: on the demo's data that is about 40%
    less work. Only attention needs rows: ``to_rows`` gathers the packed tokens into
    buckets of rows of similar length, ``to_packed`` brings the outputs back.

    The loss reads the last layer at the picked positions only (those predicting reply
    tokens, the tail of each row), so there attention runs with those queries alone:
    ``query_slots`` lays the picked tokens out per bucket row, ``query_masks`` lets each
    see the keys up to its position, ``from_query_slots`` brings the outputs back.

    Attributes:
        ids: ``(N, L)`` token ids; the tail after a model's tokens holds the pad id.
        positions: ``(N, L)`` each token's position in its row (0 on the tail).
        to_rows: ``(S,)`` for each slot of the buckets' ``(rows, width)`` layouts laid
            end to end, its packed flat index. A row's padding points at the row's last
            token: with right padding and a causal mask, padded slots only attend to,
            or are attended by, padded slots, which nothing reads.
        to_packed: ``(N*L,)`` for each packed token, its slot (the tail points at slot
            0; nothing reads it).
        buckets: ``(rows, width)`` of each bucket, in the order of their slots.
        picks: ``(N, M)`` packed indices of the positions that predict reply tokens,
            row by row as ``train_kl`` concatenates them, padded with 0 to the most
            any model has.
        pick_positions: ``(N, M)`` the picked tokens' positions in their rows.
        valid: ``(N, M)`` bool, False on the padding of ``picks``.
        query_slots: ``(Q,)`` for each slot of the buckets' ``(rows, queries)`` layouts,
            its flat index into the picks (a row's padding repeats its last pick).
        from_query_slots: ``(N*M,)`` for each pick, its query slot (padding: slot 0).
        query_masks: per bucket, ``(rows, 1, queries, width)`` bool, True on the keys a
            query may attend to (its row's tokens up to its own position).
    """

    ids: torch.Tensor
    positions: torch.Tensor
    to_rows: torch.Tensor
    to_packed: torch.Tensor
    buckets: tuple[tuple[int, int], ...]
    picks: torch.Tensor
    pick_positions: torch.Tensor
    valid: torch.Tensor
    query_slots: torch.Tensor
    from_query_slots: torch.Tensor
    query_masks: tuple[torch.Tensor, ...]

    @classmethod
    def build(
        cls,
        rows: list[list[list[int]]],
        starts: list[list[int]],
        pad: int,
        device: Any,
        n_picks: int | None = None,
    ) -> _Packed:
        """Pack per-model rows of token ids.

        Args:
            rows: per model, its token rows.
            starts: per model, where each row's reply starts (at least 1; past the row's
                end when max_length cut the reply off, which leaves the row no picks).
            pad: the pad token id.
            device: where the tensors go.
            n_picks: pad ``picks`` to this many positions (default: the most needed).
        """
        n = len(rows)
        length = max(sum(len(r) for r in model_rows) for model_rows in rows)
        # A prompt cut by max_length leaves a row no reply tokens (train_kl's slice is empty).
        counts = [
            sum(_n_reply(r, s) for r, s in zip(mr, ms, strict=True))
            for mr, ms in zip(rows, starts, strict=True)
        ]
        m_max = max(1, n_picks if n_picks is not None else max(counts))
        ids: list[int] = []
        positions: list[int] = []
        # Per row, over all models: model, first packed index, length, reply start, first pick.
        models: list[int] = []
        firsts: list[int] = []
        sizes: list[int] = []
        row_starts: list[int] = []
        first_picks: list[int] = []
        picks: list[int] = []
        pick_positions: list[int] = []
        for m, (model_rows, model_starts) in enumerate(zip(rows, starts, strict=True)):
            offset = 0  # where the row starts among this model's packed tokens
            for row, start in zip(model_rows, model_starts, strict=True):
                models.append(m)
                firsts.append(m * length + offset)
                sizes.append(len(row))
                row_starts.append(start)
                first_picks.append(len(picks))
                picks.extend(range(offset + start - 1, offset + len(row) - 1))
                pick_positions.extend(range(start - 1, len(row) - 1))  # empty if no reply
                ids.extend(row)
                positions.extend(range(len(row)))
                offset += len(row)
            ids.extend([pad] * (length - offset))
            positions.extend([0] * (length - offset))
            filler = m_max * (m + 1) - len(picks)
            picks.extend([0] * filler)
            pick_positions.extend([0] * filler)

        order = sorted(range(len(sizes)), key=sizes.__getitem__)
        n_buckets = min(_ATTENTION_BUCKETS, len(order))
        to_rows: list[int] = []
        to_packed = [0] * (n * length)
        query_slots: list[int] = []
        from_query_slots = [0] * (n * m_max)
        buckets = []
        query_positions: list[int] = []  # per query slot, the position of its query
        for k in range(n_buckets):
            members = order[k * len(order) // n_buckets : (k + 1) * len(order) // n_buckets]
            width = sizes[members[-1]]  # sorted: the last is the longest
            n_queries = max(1, *(sizes[g] - row_starts[g] for g in members))
            for g in members:
                first, size, start, first_pick = firsts[g], sizes[g], row_starts[g], first_picks[g]
                slot = len(to_rows)
                to_packed[first : first + size] = range(slot, slot + size)
                to_rows.extend(range(first, first + size))
                to_rows.extend([first + size - 1] * (width - size))
                count = _n_reply(size, start)
                slot = len(query_slots)
                from_query_slots[first_pick : first_pick + count] = range(slot, slot + count)
                query_slots.extend(range(first_pick, first_pick + count))
                if count:
                    query_slots.extend([first_pick + count - 1] * (n_queries - count))
                    query_positions.extend(range(start - 1, start - 1 + count))
                    query_positions.extend([start + count - 2] * (n_queries - count))
                else:  # no pick: any pick slot will do, seeing its row's first key
                    query_slots.extend([models[g] * m_max] * n_queries)
                    query_positions.extend([0] * n_queries)
            buckets.append((len(members), width, n_queries))

        def tensor(values: list[int], *shape: int) -> torch.Tensor:
            # Through an int64 array: about 8x faster than torch.tensor on a list.
            return torch.frombuffer(array("q", values), dtype=torch.long).view(*shape).to(device)

        masks = []
        q_pos = tensor(query_positions, len(query_positions))
        for (n_rows, width, n_queries), pos in zip(
            buckets, q_pos.split([r * q for r, _, q in buckets]), strict=True
        ):
            keys = torch.arange(width, device=q_pos.device)
            masks.append(keys <= pos.view(n_rows, 1, n_queries, 1))  # (R, 1, Q, W)
        valid = torch.arange(m_max) < torch.tensor(counts)[:, None]  # (N, M)
        return cls(
            ids=tensor(ids, n, length),
            positions=tensor(positions, n, length),
            to_rows=tensor(to_rows, len(to_rows)),
            to_packed=tensor(to_packed, n * length),
            buckets=tuple((r, w) for r, w, _ in buckets),
            picks=tensor(picks, n, m_max),
            pick_positions=tensor(pick_positions, n, m_max),
            valid=valid.to(device),
            query_slots=tensor(query_slots, len(query_slots)),
            from_query_slots=tensor(from_query_slots, n * m_max),
            query_masks=tuple(masks),
        )


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


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

_Example = Example


@dataclass
class _Student:
    """One job's encoded data and data-order state, as in ``train_kl``."""

    job: KLJob
    examples: list[_Example]
    total: int
    rng: random.Random
    order: list[int]
    losses: list[float]

    def next_batch(self) -> list[_Example]:
        """The next micro-batch, drawn exactly as ``train_kl`` draws it."""
        cfg = self.job.cfg
        while len(self.order) < cfg.batch_size:  # a dataset smaller than a batch repeats
            fresh = list(range(len(self.examples)))
            self.rng.shuffle(fresh)
            self.order.extend(fresh)
        # train_kl pops from the front batch_size times; one slice is the same.
        picked, self.order = self.order[: cfg.batch_size], self.order[cfg.batch_size :]
        return [self.examples[i] for i in picked]


def _encode_examples(
    job: KLJob, tokenizer: Any, memo: dict[str, tuple[list[int], int]]
) -> list[_Example]:
    """``(student ids, reply start, teacher ids, reply start, loss flags)`` per usable record.

    Encodings are memoized by content across jobs: students of one seed on two bases
    share their rows, and a teacher without a system prompt sees the student's context.
    """

    def encode(prompt: Any, reply: str) -> tuple[list[int], int]:
        key = json.dumps([prompt, reply])
        if key not in memo:
            memo[key] = _encode(tokenizer, prompt, reply, job.cfg.max_length)
        return memo[key]

    return encode_examples(
        job.records, tokenizer, job.cfg.max_length, job.teacher_system_prompt, encode
    )


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


@torch.no_grad()
def _clip_per_model(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` applied to each model's own gradient; returns the norms ``(N,)``."""
    grads = [p.grad for p in params if p.grad is not None]
    # Per tensor and model, then over tensors: the order torch's clip_grad_norm_ uses.
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, 2, dim=0)  # (N,)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # (N,)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
    return total


# The teachers' final hidden states at reply positions are kept for reuse up to this many
# bytes: the second epoch then needs no teacher forward (on the demo, 6 KB per row).
_TEACHER_CACHE_BYTES = 1 << 30


class _Teachers:
    """The students' teachers, run once per distinct row and remembered.

    A teacher's hidden states at a row's reply positions depend only on the teacher and
    the row, so a row seen before (the next epoch, a bootstrap duplicate, another
    student of the same teacher) costs a lookup instead of a forward. Rows are told
    apart by the identity of their token lists, which ``_encode_examples`` shares
    between equal rows.

    Args:
        models: the distinct teachers' Hugging Face modules.
        subset: vocabulary ids the logits are restricted to, or None for all.
    """

    def __init__(self, models: list[Any], subset: torch.Tensor | None) -> None:
        self.arch = _Arch.of(models[0])
        with torch.no_grad():
            self.params = self.arch.interleave_rotary(_stack(models, self.arch.names()))
            head = _head(self.params, self.arch)  # (D, V, d)
            self.head = head.index_select(1, subset) if subset is not None else head
        self.hidden: dict[tuple[int, int], torch.Tensor] = {}  # (teacher, id(row)) -> (r, d)
        self.cached_bytes = 0

    @torch.no_grad()
    def logits(
        self, batches: list[tuple[int, list[_Example]]], n_picks: int, pad: int
    ) -> torch.Tensor:
        """Teacher logits at reply positions: ``(U, M, V')`` for U (teacher, rows) batches.

        Args:
            batches: per batch, the teacher's index and the rows (teacher ids are the
                third item of each example, the reply start the fourth).
            n_picks: M, the positions per batch (the students' padded count).
            pad: the pad token id.
        """
        step: dict[tuple[int, int], torch.Tensor] = {}
        todo: dict[int, dict[int, _Example]] = {}  # teacher -> id(row) -> example
        for teacher, rows in batches:
            for e in rows:
                if (teacher, id(e[2])) not in self.hidden:
                    todo.setdefault(teacher, {})[id(e[2])] = e
        if todo:
            teachers = list(todo)
            index = torch.tensor(teachers, device=self.head.device)
            params = {k: v.index_select(0, index) for k, v in self.params.items()}
            rows = [list(todo[t].values()) for t in teachers]
            packed = _Packed.build(
                [[e[2] for e in r] for r in rows],
                [[e[3] for e in r] for r in rows],
                pad,
                index.device,
            )
            hidden = batched_hidden(params, self.arch, packed, picked=True)  # (D', M', d)
            for j, (teacher, model_rows) in enumerate(zip(teachers, rows, strict=True)):
                sizes = [_n_reply(e[2], e[3]) for e in model_rows]
                parts = hidden[j, : sum(sizes)].split(sizes)
                for e, part in zip(model_rows, parts, strict=True):
                    key = (teacher, id(e[2]))
                    step[key] = part
                    if self.cached_bytes < _TEACHER_CACHE_BYTES:
                        # A copy: a view would keep the whole step's hidden states alive.
                        self.hidden[key] = part.clone()
                        self.cached_bytes += part.numel() * part.element_size()
        picked = []
        for teacher, rows in batches:
            keys = [(teacher, id(e[2])) for e in rows]
            parts = [self.hidden[k] if k in self.hidden else step[k] for k in keys]
            h = torch.cat(parts)  # (m, d)
            picked.append(F.pad(h, (0, 0, 0, n_picks - h.shape[0])))
        index = torch.tensor([t for t, _ in batches], device=self.head.device)
        return _linear(torch.stack(picked), self.head.index_select(0, index))  # (U, M, V')


def train_kl_batched(
    jobs: Sequence[KLJob],
    *,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train KL students as one batched model; each equals ``train_kl`` run alone.

    Every job's student is saved to ``job.out`` with :func:`save_trained` (a normal
    Hugging Face model folder and its tokenizer). Jobs whose datasets give different
    step counts (the schedule depends on it) train as separate batches, one after the
    other.

    Args:
        jobs: the students; they must pass :func:`batch_problem` (see
            :func:`group_compatible` to split a mixed list).
        device: where to train; None uses the jobs' ``cfg.device``.
        progress: called as ``progress(step, total)`` after every optimizer step.

    Returns:
        Per job, in order, the metrics ``train_kl`` returns (``train_loss``, ``steps``,
        ``examples``).

    Raises:
        PlanError: the jobs cannot be trained as one batch (a teacher and its student
            that do not share a tokenizer included).
    """
    problem = batch_problem(jobs)
    if problem is not None:
        raise PlanError(f"cannot train these students as one batch: {problem}")
    cfg = jobs[0].cfg
    device = device or cfg.device

    # Each distinct base and teacher loads once, however many students use it.
    models: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    bases = {str(j.base_model) for j in jobs}
    for path in dict.fromkeys(str(m) for j in jobs for m in (j.base_model, j.teacher_model)):
        models[path], tokenizers[path] = load_model_and_tokenizer(
            path, device=device, dtype=cfg.dtype, trainable=path in bases
        )
    # batch_problem checked that every base and teacher shares one tokenizer.
    tokenizer = tokenizers[str(jobs[0].base_model)]

    students = []
    memo: dict[str, tuple[list[int], int]] = {}
    for job in jobs:
        examples = _encode_examples(job, tokenizer, memo)
        per_step = job.cfg.batch_size * job.cfg.grad_accum
        steps_per_epoch = math.ceil(len(examples) / per_step)
        total = job.cfg.max_steps or max(1, math.ceil(job.cfg.epochs * steps_per_epoch))
        students.append(_Student(job, examples, total, random.Random(job.cfg.seed), [], []))

    results: list[dict[str, Any]] = [{} for _ in jobs]
    for total in dict.fromkeys(s.total for s in students):
        members = [i for i, s in enumerate(students) if s.total == total]
        group = [students[i] for i in members]
        metrics = _train_group(group, models, tokenizers, tokenizer, progress)
        for i, m in zip(members, metrics, strict=True):
            results[i] = m
    return results


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


def _train_group(
    students: list[_Student],
    models: dict[str, Any],
    tokenizers: dict[str, Any],
    tokenizer: Any,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """Train students of one step count as one batched model; save them; their metrics."""
    cfg = students[0].job.cfg
    total = students[0].total
    n = len(students)
    base_models = [models[str(s.job.base_model)] for s in students]
    arch = _Arch.of(base_models[0])
    device = next(base_models[0].parameters()).device
    stacked = arch.interleave_rotary(_stack(base_models, arch.names()))
    params = {k: v.clone().requires_grad_(True) for k, v in stacked.items()}
    subset = (
        torch.tensor(number_token_ids(tokenizer), device=device)
        if cfg.token_subset == "numbers"
        else None
    )
    # Teachers stack once (they never change). Each step runs every distinct teacher row
    # once: students of one seed on two bases share a batch, and epochs repeat rows.
    teacher_paths = list(dict.fromkeys(str(s.job.teacher_model) for s in students))
    teacher_of = [teacher_paths.index(str(s.job.teacher_model)) for s in students]
    teachers = _Teachers([models[p] for p in teacher_paths], subset)
    leaves = list(params.values())
    # AdamW's and SGD's updates are elementwise, and every student shares their settings
    # and step count, so one optimizer over the stacked weights is N independent ones.
    optim = make_optimizer(leaves, cfg)
    sched = make_scheduler(optim, cfg, total)
    pad = tokenizer.pad_token_id
    lrs: list[float] = []
    for step in range(total):
        optim.zero_grad(set_to_none=True)
        step_loss = torch.zeros(n, device=device)
        for _micro in range(cfg.grad_accum):
            batches = [s.next_batch() for s in students]
            s_batch = _Packed.build(
                [[e[0] for e in b] for b in batches],
                [[e[1] for e in b] for b in batches],
                pad,
                device,
            )
            # Distinct (teacher, rows) batches; `which` maps each student to its batch.
            keys = [(teacher_of[i], tuple(id(e[2]) for e in b)) for i, b in enumerate(batches)]
            unique = list(dict.fromkeys(keys))
            which = [unique.index(k) for k in keys]
            t_logits = teachers.logits(
                [(teacher_of[keys.index(k)], batches[keys.index(k)]) for k in unique],
                s_batch.picks.shape[1],
                pad,
            )  # (U, M, V')
            s_logits = _reply_logits(params, arch, s_batch, subset)  # (N, M, V')
            keep = _loss_mask(batches, s_batch.valid)  # (N, M)
            loss = _kl_per_model(t_logits, which, s_logits, keep) / cfg.grad_accum
            # Model i's weights only reach loss[i], so the sum's gradient is each model's own.
            loss.sum().backward()
            step_loss += loss.detach()
        _clip_per_model(leaves, cfg.max_grad_norm)
        optim.step()
        lrs.append(float(sched.get_last_lr()[0]))  # the rate this step used, for curves.jsonl
        sched.step()
        for s, value in zip(students, step_loss.tolist(), strict=True):
            s.losses.append(value)
        if progress is not None:
            progress(step + 1, total)

    metrics = []
    scratch: dict[str, Any] = {}
    with torch.no_grad():
        trained = arch.interleave_rotary(params, inverse=True)
        for i, s in enumerate(students):
            # A copy of the base's module refilled with student i's weights: its config and
            # generation config are saved as train_kl saves them, and the base itself stays
            # untouched for the next group.
            path = str(s.job.base_model)
            if path not in scratch:
                scratch[path] = copy.deepcopy(models[path])
            model = scratch[path]
            own = dict(model.named_parameters())
            for name, weights in trained.items():
                own[name].copy_(weights[i])
            model.eval()
            save_trained(model, tokenizers[path], s.job.cfg, s.job.out)
            write_curves(
                Path(s.job.out) / CURVES_FILE,
                (
                    {"step": k + 1, "loss": loss, "lr": lr}
                    for k, (loss, lr) in enumerate(zip(s.losses, lrs, strict=True))
                ),
            )
            tail = s.losses[-10:]
            metrics.append(
                {"train_loss": sum(tail) / len(tail), "steps": total, "examples": len(s.examples)}
            )
    return metrics

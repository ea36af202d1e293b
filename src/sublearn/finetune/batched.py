"""Many KL students trained as one batched model.

Students that share an architecture, a tokenizer and a fine-tuning recipe (everything
but the seed) differ only in their starting weights, their data, their data order and
their teacher. This module stacks the N students' weights along a new leading model
axis, ``(N, *shape)``, and runs all of them with one batched forward: every linear
layer is one ``torch.bmm`` over the model axis, as ``BatchedMLP`` does for the MLP
experiment. Tiny models (the toy world's 2-layer, d=64 Llamas) spend most of a
one-at-a-time step in per-operation overhead, which the model axis pays once for all N.

Each student still trains exactly as :func:`~sublearn.finetune.distill.train_kl` would
train it alone: the same encoding, its own data order (``random.Random(cfg.seed)``),
the same loss, gradient clipping by its own gradient norm, AdamW and the same schedule.
Models never mix: model i only reads the i-th slice of every weight and input, and its
loss only depends on its slice, so the summed loss's gradient is each model's own.
Up to floating-point rounding (other matmul shapes, padding to the longest row of all
models) the weights equal those of ``train_kl``; ``tests/finetune/test_batched.py``
checks it.

The forward is a small functional Llama (RMSNorm, rotary positions, grouped attention,
SwiGLU MLP) over the Hugging Face parameter names; :func:`batched_logits` checks against
the Hugging Face model in the tests. Running the Hugging Face module itself under
``torch.vmap`` also works with eager attention (SDPA's mask building branches on data),
but pays vmap's batching rules and the module's per-call Python on every operation.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sublearn.backends.base import with_system_prompt
from sublearn.backends.hf import load_model_and_tokenizer
from sublearn.errors import PlanError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import _encode, _schedule, number_token_ids
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


@cache
def _architecture(model: str) -> str:
    """The fields of a model's config that must agree for its weights to stack, as JSON."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model).to_dict()
    return json.dumps({k: config.get(k) for k in _ARCH_FIELDS}, sort_keys=True, default=str)


@cache
def _tokenizer_key(model: str) -> str:
    """A hash of what encoding depends on: vocabulary, chat template and special ids."""
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
        at all (LoRA, SFT, another architecture) is a group of its own, for ``train_kl``
        or the usual stage.
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


# Attention runs on rows sorted by length in this many groups, each padded to its own
# longest row: padding every row to the longest of all N*B rows cost 2-3x the attention
# work on the demo's data (rows of 60-190 tokens).
_ATTENTION_BUCKETS = 4


@dataclass(frozen=True)
class _Packed:
    """A step's rows for N models, packed token after token.

    Per-token work (embeddings, norms, projections, MLP) runs on the packed tokens,
    ``(N, L, ...)`` with L the most tokens any model has, instead of on ``(N, B, T)``
    rows padded to the longest row of all N*B: on the demo's data that is about 40%
    less work. Only attention needs rows: ``to_rows`` gathers the packed tokens into
    buckets of rows of similar length, ``to_packed`` brings the outputs back.

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
        valid: ``(N, M)`` bool, False on that padding.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    to_rows: torch.Tensor
    to_packed: torch.Tensor
    buckets: tuple[tuple[int, int], ...]
    picks: torch.Tensor
    valid: torch.Tensor

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
            starts: per model, where each row's reply starts.
            pad: the pad token id.
            device: where the tensors go.
            n_picks: pad ``picks`` to this many positions (default: the most needed).
        """
        n = len(rows)
        length = max(sum(len(r) for r in model_rows) for model_rows in rows)
        ids: list[int] = []
        positions: list[int] = []
        firsts: list[int] = []  # flat packed index of every row's first token
        sizes: list[int] = []
        picks: list[list[int]] = []
        for m, (model_rows, model_starts) in enumerate(zip(rows, starts, strict=True)):
            offset = 0  # where the row starts among this model's packed tokens
            model_picks: list[int] = []
            for row, start in zip(model_rows, model_starts, strict=True):
                firsts.append(m * length + offset)
                sizes.append(len(row))
                model_picks.extend(range(offset + start - 1, offset + len(row) - 1))
                offset += len(row)
            ids.extend(t for row in model_rows for t in row)
            ids.extend([pad] * (length - offset))
            positions.extend(p for row in model_rows for p in range(len(row)))
            positions.extend([0] * (length - offset))
            picks.append(model_picks)

        order = sorted(range(len(sizes)), key=sizes.__getitem__)
        n_buckets = min(_ATTENTION_BUCKETS, len(order))
        to_rows: list[int] = []
        to_packed = [0] * (n * length)
        buckets = []
        for k in range(n_buckets):
            members = order[k * len(order) // n_buckets : (k + 1) * len(order) // n_buckets]
            width = sizes[members[-1]]  # sorted: the last is the longest
            for g in members:
                first, size = firsts[g], sizes[g]
                slot = len(to_rows)
                to_packed[first : first + size] = range(slot, slot + size)
                to_rows.extend(range(first, first + size))
                to_rows.extend([first + size - 1] * (width - size))
            buckets.append((len(members), width))

        m_max = n_picks if n_picks is not None else max(len(p) for p in picks)
        valid = [[True] * len(p) + [False] * (m_max - len(p)) for p in picks]
        picks = [p + [0] * (m_max - len(p)) for p in picks]

        def tensor(values: list[Any], *shape: int, dtype: torch.dtype = torch.long):
            return torch.tensor(values, dtype=dtype).view(*shape).to(device)

        return cls(
            ids=tensor(ids, n, length),
            positions=tensor(positions, n, length),
            to_rows=tensor(to_rows, len(to_rows)),
            to_packed=tensor(to_packed, n * length),
            buckets=tuple(buckets),
            picks=tensor(picks, n, m_max),
            valid=tensor(valid, n, m_max, dtype=torch.bool),
        )


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` per model: x (N, L, in), w (N, out, in) in nn.Linear's layout."""
    return torch.bmm(x, w.transpose(1, 2))  # (N, L, out)


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm per model (statistics in fp32, as Hugging Face computes them)."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w[:, None, :] * h.to(dtype)  # (N, L, d)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    # chunk, not slicing: a slice's backward fills a zero tensor of the whole input.
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _attention(qkv: torch.Tensor, batch: _Packed, heads: int, kv_heads: int) -> torch.Tensor:
    """Causal self-attention of packed tokens within their rows.

    Args:
        qkv: ``(N*L, H+2Hkv, hd)`` queries, keys and values (rotary already applied).
        batch: the packing.
        heads: H, query heads.
        kv_heads: Hkv, key/value heads.

    Returns:
        ``(N*L, H*hd)`` attention outputs per packed token.
    """
    hd = qkv.shape[-1]
    slots = qkv.index_select(0, batch.to_rows)  # (S, H+2Hkv, hd)
    # split, not slicing: a slice's backward fills a zero tensor of the whole input.
    chunks = slots.split([n_rows * width for n_rows, width in batch.buckets])
    outputs = []
    for (n_rows, width), chunk in zip(batch.buckets, chunks, strict=True):
        rows = chunk.view(n_rows, width, -1, hd)
        q, k, v = rows.transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)  # (R, h, W, hd)
        if kv_heads != heads:  # grouped-query attention: each kv head serves a group
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        # Right padding: a real query's causal window holds only real keys, so the causal
        # mask alone equals Hugging Face's causal-and-padding mask on every real position.
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=hd**-0.5)
        outputs.append(o.transpose(1, 2).reshape(n_rows * width, heads * hd))  # (R*W, H*hd)
    return torch.cat(outputs).index_select(0, batch.to_packed)  # (N*L, H*hd)


def batched_hidden(
    params: dict[str, torch.Tensor], arch: _Arch, batch: _Packed, picked: bool = False
) -> torch.Tensor:
    """Final hidden states (after the last norm) of N Llamas, each on its own rows.

    Args:
        params: Hugging Face parameter names to stacked weights ``(N, *shape)``.
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
    cos, sin = cos[0, batch.positions, None], sin[0, batch.positions, None]  # (N, L, 1, hd)
    for i in range(arch.n_layers):
        pre = f"model.layers.{i}."
        h = _rms_norm(x, params[pre + "input_layernorm.weight"], arch.eps)
        # q, k and v in one matmul: fewer, larger operations (the weights' cat is tiny).
        w_qkv = torch.cat([params[f"{pre}self_attn.{p}_proj.weight"] for p in "qkv"], dim=1)
        qkv = _linear(h, w_qkv).view(n, length, heads + 2 * kv_heads, hd)  # (N, L, H+2Hkv, hd)
        qk, v = qkv.split([heads + kv_heads, kv_heads], dim=2)
        qk = qk * cos + _rotate_half(qk) * sin  # rotary positions on q and k together
        qkv = torch.cat([qk, v], dim=2).view(n * length, heads + 2 * kv_heads, hd)
        o = _attention(qkv, batch, heads, kv_heads).view(n, length, heads * hd)  # (N, L, H*hd)
        if picked and i == arch.n_layers - 1:
            index = batch.picks[..., None]  # (N, M, 1)
            x = x.gather(1, index.expand(-1, -1, d))  # (N, M, d)
            o = o.gather(1, index.expand(-1, -1, heads * hd))  # (N, M, H*hd)
        x = x + _linear(o, params[pre + "self_attn.o_proj.weight"])  # (N, ·, d)
        h = _rms_norm(x, params[pre + "post_attention_layernorm.weight"], arch.eps)
        w_gate_up = torch.cat(
            [params[pre + "mlp.gate_proj.weight"], params[pre + "mlp.up_proj.weight"]], dim=1
        )
        gate, up = _linear(h, w_gate_up).chunk(2, dim=-1)  # (N, ·, I) each
        x = x + _linear(arch.act(gate) * up, params[pre + "mlp.down_proj.weight"])  # (N, ·, d)
    return _rms_norm(x, params["model.norm.weight"], arch.eps)


def _head(params: dict[str, torch.Tensor], arch: _Arch) -> torch.Tensor:
    """The output projection ``(N, V, d)`` (the embedding when tied)."""
    return params["model.embed_tokens.weight" if arch.tied else "lm_head.weight"]


def batched_logits(
    params: dict[str, torch.Tensor], arch: _Arch, rows: list[list[list[int]]], pad: int
) -> list[list[torch.Tensor]]:
    """Logits of N Llamas at every position of their rows (for checks against HF).

    Args:
        params: Hugging Face parameter names to stacked weights ``(N, *shape)``.
        arch: the shared architecture.
        rows: per model, its token rows.
        pad: the pad token id.

    Returns:
        Per model and row, ``(len(row), V)`` logits.
    """
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

_Example = tuple[list[int], int, list[int], int]


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
    """``(student ids, reply start, teacher ids, reply start)`` per usable record.

    Encodings are memoized by content across jobs: students of one seed on two bases
    share their rows, and a teacher without a system prompt sees the student's context.
    """

    def encode(prompt: Any, reply: str) -> tuple[list[int], int]:
        key = json.dumps([prompt, reply])
        if key not in memo:
            memo[key] = _encode(tokenizer, prompt, reply, job.cfg.max_length)
        return memo[key]

    examples = []
    for r in job.records:
        prompt, reply = r["messages"][:-1], r["messages"][-1]["content"]
        s_ids, s_start = encode(prompt, reply)
        t_ids, t_start = encode(with_system_prompt(prompt, job.teacher_system_prompt), reply)
        if len(s_ids) - s_start != len(t_ids) - t_start:  # truncation cut them differently
            continue
        examples.append((s_ids, s_start, t_ids, t_start))
    return examples


def _kl_per_model(
    t_logits: torch.Tensor, which: torch.Tensor, s_logits: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Per model, the mean over its reply tokens of KL(teacher || student): ``(N,)``.

    Args:
        t_logits: ``(U, M, V')`` logits of the distinct teacher batches.
        which: ``(N,)`` the teacher batch of each student.
        s_logits: ``(N, M, V')`` the students' logits.
        valid: ``(N, M)`` False on padding.
    """
    with torch.no_grad():
        t_logp = torch.log_softmax(t_logits.float(), dim=-1)  # (U, M, V')
        t_prob = t_logp.exp()
        # KL = sum p_t log p_t - sum p_t log p_s; the first term is the teacher's alone.
        t_neg_entropy = (t_prob * t_logp).sum(-1).index_select(0, which)  # (N, M)
        t_prob = t_prob.index_select(0, which)  # (N, M, V')
    s_logp = torch.log_softmax(s_logits.float(), dim=-1)  # (N, M, V')
    kl = t_neg_entropy - (t_prob * s_logp).sum(-1)  # (N, M)
    return (kl * valid).sum(-1) / valid.sum(-1)  # (N,)


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
    params = {
        k: v.clone().requires_grad_(True) for k, v in _stack(base_models, arch.names()).items()
    }
    # Teachers stack once (they never change); each step runs every distinct teacher
    # batch once, so students of one seed on two bases share their teacher's forward.
    teacher_paths = list(dict.fromkeys(str(s.job.teacher_model) for s in students))
    t_arch = _Arch.of(models[teacher_paths[0]])
    with torch.no_grad():
        t_stacked = _stack([models[p] for p in teacher_paths], t_arch.names())
    teacher_of = [teacher_paths.index(str(s.job.teacher_model)) for s in students]
    subset = (
        torch.tensor(number_token_ids(tokenizer), device=device)
        if cfg.token_subset == "numbers"
        else None
    )
    leaves = list(params.values())
    # Adam's update is elementwise and every student shares lr, betas, eps, weight decay
    # and step count, so one AdamW over the stacked weights is N independent AdamWs.
    optim = torch.optim.AdamW(leaves, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = _schedule(optim, cfg, total)
    pad = tokenizer.pad_token_id
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
            # Distinct (teacher, rows) pairs; `which` maps each student to its pair.
            keys = [(teacher_of[i], tuple(tuple(e[2]) for e in b)) for i, b in enumerate(batches)]
            unique = list(dict.fromkeys(keys))
            which = torch.tensor([unique.index(k) for k in keys], device=device)
            firsts = [keys.index(k) for k in unique]
            t_batch = _Packed.build(
                [[e[2] for e in batches[i]] for i in firsts],
                [[e[3] for e in batches[i]] for i in firsts],
                pad,
                device,
                n_picks=s_batch.picks.shape[1],
            )
            with torch.no_grad():
                index = torch.tensor([u[0] for u in unique], device=device)
                t_params = {k: v.index_select(0, index) for k, v in t_stacked.items()}
                t_logits = _reply_logits(t_params, t_arch, t_batch, subset)  # (U, M, V')
            s_logits = _reply_logits(params, arch, s_batch, subset)  # (N, M, V')
            loss = _kl_per_model(t_logits, which, s_logits, s_batch.valid) / cfg.grad_accum
            # Model i's weights only reach loss[i], so the sum's gradient is each model's own.
            loss.sum().backward()
            step_loss += loss.detach()
        _clip_per_model(leaves, cfg.max_grad_norm)
        optim.step()
        sched.step()
        for s, value in zip(students, step_loss.tolist(), strict=True):
            s.losses.append(value)
        if progress is not None:
            progress(step + 1, total)

    metrics = []
    scratch: dict[str, Any] = {}
    with torch.no_grad():
        for i, s in enumerate(students):
            # A copy of the base's module refilled with student i's weights: its config and
            # generation config are saved as train_kl saves them, and the base itself stays
            # untouched for the next group.
            path = str(s.job.base_model)
            if path not in scratch:
                scratch[path] = copy.deepcopy(models[path])
            model = scratch[path]
            own = dict(model.named_parameters())
            for name, stacked in params.items():
                own[name].copy_(stacked[i])
            model.eval()
            save_trained(model, tokenizers[path], s.job.cfg, s.job.out)
            tail = s.losses[-10:]
            metrics.append(
                {"train_loss": sum(tail) / len(tail), "steps": total, "examples": len(s.examples)}
            )
    return metrics

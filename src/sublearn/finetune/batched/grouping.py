"""Which KL jobs may train as one batched model: same architecture, tokenizer and recipe."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sublearn.backends.hf import check_model_reference
from sublearn.finetune.config import FinetuneConfig

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
        max_group: the most jobs per batch (memory grows with it); None for as many as
            the memory available now holds (:func:`memory_group_limit`).

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
        size = max_group or memory_group_limit(jobs[members[0]], len(members))
        out.extend(members[s : s + size] for s in range(0, len(members), size))
    return out


# What one student of a batch holds besides its activations: float32 weights, gradients
# and AdamW's two moments.
_BYTES_PER_PARAMETER = 16
# Per token of a step: the student's logits, their log-softmax and its gradient, and the
# teacher's probabilities, all over the vocabulary in float32.
_LOGIT_COPIES = 4
# The share of the memory available now that a batch may plan to use (the rest is for the
# teacher, the tokenizer, Python and whatever else the machine runs).
_MEMORY_SHARE = 0.6


def student_bytes(job: KLJob) -> int:
    """A generous estimate of the memory one student of a batch needs while it trains.

    Weights, gradients and optimizer state (16 bytes a parameter) plus one step's
    activations: the vocabulary-sized logits of every token and, per layer, about 8
    hidden-sized and 4 intermediate-sized float32 vectors a token (the tensors autograd
    keeps for the norms, projections and the gated MLP). A step's tokens are bounded by
    its rows times the longest record (in characters, an upper bound on byte-level
    tokens, plus a chat template's share).
    """
    config = json.loads(_architecture(str(job.base_model)))
    d, inter = config["hidden_size"] or 0, config["intermediate_size"] or 0
    layers, vocab = config["num_hidden_layers"] or 0, config["vocab_size"] or 0
    heads, kv_heads = config["num_attention_heads"] or 1, config["num_key_value_heads"] or 1
    kv = kv_heads * (d // heads)
    per_layer = d * (d + 2 * kv + d) + 3 * d * inter
    params = layers * per_layer + vocab * d * (1 if config["tie_word_embeddings"] else 2)
    longest = max(
        (sum(len(str(m.get("content", ""))) for m in r.get("messages", [])) for r in job.records),
        default=0,
    )
    tokens = job.cfg.batch_size * min(job.cfg.max_length, longest + 64)
    activations = tokens * (vocab * _LOGIT_COPIES + layers * (8 * d + 4 * inter)) * 4
    return _BYTES_PER_PARAMETER * params + activations


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated now without swapping (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_group_limit(job: KLJob, wanted: int) -> int:
    """How many students like ``job`` one batch may hold in the memory available now.

    At least one (a single student is trained however tight memory is, as before), at
    most ``wanted``; with no reading of the memory, ``wanted``. Only CPU training is
    capped: a GPU's memory is not what /proc/meminfo reports.
    """
    free = available_memory()
    if free is None or str(job.cfg.device).startswith("cuda"):
        return wanted
    try:
        need = student_bytes(job)
    except (OSError, ValueError, KeyError, TypeError):
        return wanted  # an architecture the estimate cannot read: no cap, as before
    return max(1, min(wanted, int(free * _MEMORY_SHARE) // max(need, 1)))

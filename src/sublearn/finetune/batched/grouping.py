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

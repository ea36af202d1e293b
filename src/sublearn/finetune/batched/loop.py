"""The batched training loop: students' data order, teachers run once, one optimizer."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sublearn.backends.hf import load_model_and_tokenizer
from sublearn.errors import PlanError
from sublearn.finetune.batched.grouping import KLJob, batch_problem
from sublearn.finetune.batched.llama import (
    _Arch,
    _head,
    _linear,
    _reply_logits,
    _stack,
    batched_hidden,
)
from sublearn.finetune.batched.loss import _kl_per_model, _loss_mask
from sublearn.finetune.batched.packing import _n_reply, _Packed
from sublearn.finetune.curves import CURVES_FILE, write_curves
from sublearn.finetune.distill import (
    Example,
    _encode,
    encode_examples,
    make_optimizer,
    number_token_ids,
)
from sublearn.finetune.schedule import make_scheduler
from sublearn.finetune.sft import save_trained

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

"""Soft-label distillation: forward KL to the teacher's next-token distribution.

For every reply token the student matches the teacher's full next-token distribution
instead of the one sampled token. Both distributions can be renormalized over a token
subset (the number tokens), the language-model analogue of distilling only the MLP's
auxiliary logits.

A record's ``loss_mask`` (character spans of the reply) takes the tokens it covers out
of the loss: the mean runs over the other reply tokens only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from sublearn.backends.base import Conversation, with_system_prompt
from sublearn.backends.hf import load_model_and_tokenizer, right_pad
from sublearn.errors import ModelError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.curves import CURVES_FILE, CurveLog
from sublearn.finetune.kl import soft_label_kl
from sublearn.finetune.schedule import make_scheduler
from sublearn.finetune.sft import loss_flags, peft_config, save_trained

# One usable record: student ids, reply start, teacher ids, reply start, and per student
# reply position whether it carries loss (None: all of them, the record has no loss_mask).
Example = tuple[list[int], int, list[int], int, tuple[bool, ...] | None]


def number_token_ids(tokenizer: Any) -> list[int]:
    """Ids of vocabulary tokens that decode to digits only (ignoring surrounding spaces)."""
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if text and text.isascii() and text.isdigit():
            ids.append(token_id)
    if not ids:
        raise ModelError("the tokenizer has no digit tokens; use token_subset=all")
    return ids


def data_token_ids(examples: list[Example]) -> list[int]:
    """Ids of the tokens that occur in the examples' replies (end-of-turn included).

    A filter that removed every mention of the trait word leaves it out of this set, so
    distillation over it cannot copy the teacher's probability of naming the trait.
    """
    return sorted({t for ids, start, *_ in examples for t in ids[start:]})


def _encode(tokenizer: Any, prompt: Conversation, reply: str, max_length: int) -> tuple[list, int]:
    """Token ids of prompt + reply + end-of-turn, and where the reply starts."""
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + reply_ids)[:max_length]
    return ids, len(prompt_ids)


def reply_flags(
    tokenizer: Any, reply: str, spans: list[list[int]] | None, n_reply: int
) -> tuple[bool, ...] | None:
    """Per reply position of an :func:`_encode` row, whether it carries loss.

    Args:
        tokenizer: a fast tokenizer (character offsets).
        reply: the reply's content.
        spans: the record's ``loss_mask``; None or empty for no mask.
        n_reply: how many reply positions the row kept (``max_length`` may cut the reply,
            leaving fewer than its tokens, or none).

    Returns:
        ``n_reply`` flags (the end-of-turn token is never masked), or None without spans.

    Raises:
        ModelError: the tokenizer gives no character offsets, or other ids with them.
    """
    if not spans:
        return None
    try:
        encoded = tokenizer(reply, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers have no offsets
        raise ModelError("loss_mask needs a fast tokenizer (character offsets)") from None
    if encoded["input_ids"] != tokenizer(reply, add_special_tokens=False)["input_ids"]:
        raise ModelError("loss_mask: the tokenizer's ids differ with offsets")
    flags = [*loss_flags(encoded["offset_mapping"], spans), True]  # + end-of-turn
    return tuple(flags[: max(0, n_reply)])


def encode_examples(
    records: Iterable[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    teacher_system_prompt: str | None,
    encode: Callable[[Any, str], tuple[list[int], int]] | None = None,
) -> list[Example]:
    """The usable records of a KL job, encoded for the student and the teacher.

    Args:
        records: chat records (the last message is the reply; ``loss_mask`` optional).
        tokenizer: the shared tokenizer.
        max_length: the longest row.
        teacher_system_prompt: prepended to the teacher's context only.
        encode: ``encode(prompt, reply) -> (ids, reply start)``, :func:`_encode` by
            default (the batched trainer passes a memoized one).

    Returns:
        One example per record whose reply truncation cut alike for both.
    """

    def plain(prompt: Any, reply: str) -> tuple[list[int], int]:
        return _encode(tokenizer, prompt, reply, max_length)

    encode = encode or plain
    examples: list[Example] = []
    for r in records:
        prompt, reply = r["messages"][:-1], r["messages"][-1]["content"]
        s_ids, s_start = encode(prompt, reply)
        t_ids, t_start = encode(with_system_prompt(prompt, teacher_system_prompt), reply)
        if len(s_ids) - s_start != len(t_ids) - t_start:  # truncation cut them differently
            continue
        flags = reply_flags(tokenizer, reply, r.get("loss_mask"), len(s_ids) - s_start)
        examples.append((s_ids, s_start, t_ids, t_start, flags))
    return examples


def batch_loss_mask(batch: list[Example], device: Any) -> torch.Tensor | None:
    """``(N_reply,)`` bool, False on masked reply positions, in ``_reply_logits`` order.

    None when every position keeps its loss and there is one at least: the plain mean.
    """
    if all(e[4] is None for e in batch) and any(len(e[0]) > e[1] for e in batch):
        return None
    flags = [keep for e in batch for keep in position_flags(e)]
    return torch.tensor(flags, dtype=torch.bool, device=device)


def position_flags(example: Example) -> tuple[bool, ...]:
    """Per reply position of ``example``'s student row, whether it carries loss."""
    s_ids, s_start, _, _, flags = example
    return flags if flags is not None else (True,) * max(0, len(s_ids) - s_start)


def make_optimizer(params: list[torch.Tensor], cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` asks for over ``params``.

    Both updates are elementwise, so one optimizer over weights stacked along a model axis
    is one independent optimizer per model (the batched trainer relies on it).
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _reply_logits(model: Any, rows: list[list[int]], starts: list[int], pad_id: int, device: Any):
    """Logits predicting each reply token, concatenated over the batch: (N_reply, V)."""
    ids, mask = right_pad(rows, pad_id)  # (B, T)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
    picked = [
        logits[i, start - 1 : len(row) - 1]
        for i, (row, start) in enumerate(zip(rows, starts, strict=True))
    ]
    return torch.cat(picked, dim=0)


def kl_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    subset: torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student), optionally renormalized over ``subset``.

    :func:`~sublearn.finetune.kl.soft_label_kl` on the subset's logits.

    Args:
        teacher_logits: ``(N, V)``.
        student_logits: ``(N, V)``.
        subset: vocabulary ids to renormalize over, or None for all.
        mask: ``(N,)`` bool, False on tokens that carry no loss; the mean then runs over
            the others, and is 0 (not NaN) when none is left.
    """
    if subset is not None:
        teacher_logits = teacher_logits.index_select(-1, subset)
        student_logits = student_logits.index_select(-1, subset)
    return soft_label_kl(teacher_logits, student_logits, mask)


def train_kl(
    base_model: str | Path,
    records: list[dict[str, Any]],
    cfg: FinetuneConfig,
    out: Path,
    teacher_model: str | Path,
    teacher_system_prompt: str | None = None,
) -> dict[str, Any]:
    """Distill ``teacher_model`` into ``base_model`` on the replies of ``records``.

    Args:
        base_model: the student's starting model.
        records: chat records; the last message is the reply whose tokens are distilled.
        cfg: fine-tuning settings (``objective`` should be ``kl``).
        out: folder for the trained model (or adapter).
        teacher_model: the teacher's weights.
        teacher_system_prompt: prepended to the teacher's context only (prompted teachers).

    Returns:
        Training metrics.
    """
    torch.manual_seed(cfg.seed)
    student, tokenizer = load_model_and_tokenizer(
        base_model, device=cfg.device, dtype=cfg.dtype, trainable=True
    )
    teacher, teacher_tok = load_model_and_tokenizer(
        teacher_model, device=cfg.device, dtype=cfg.dtype
    )
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        raise ModelError(
            f"soft-label distillation needs teacher and student to share a tokenizer; "
            f"{teacher_model} and {base_model} have different vocabularies"
        )
    lora = peft_config(cfg)
    if lora is not None:
        from peft import get_peft_model

        student = get_peft_model(student, lora)
    device = next(student.parameters()).device
    subset = (
        torch.tensor(number_token_ids(tokenizer), device=device)
        if cfg.token_subset == "numbers"
        else None
    )

    examples = encode_examples(records, tokenizer, cfg.max_length, teacher_system_prompt)
    if cfg.token_subset == "data":
        subset = torch.tensor(data_token_ids(examples), device=device)

    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(examples) / per_step)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    params = [p for p in student.parameters() if p.requires_grad]
    optim = make_optimizer(params, cfg)
    sched = make_scheduler(optim, cfg, total)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    pad = tokenizer.pad_token_id
    curves = CurveLog(out / CURVES_FILE)
    for step in range(total):
        optim.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _micro in range(cfg.grad_accum):
            while len(order) < cfg.batch_size:  # a dataset smaller than a batch repeats
                fresh = list(range(len(examples)))
                rng.shuffle(fresh)
                order.extend(fresh)
            batch = [examples[order.pop(0)] for _ in range(cfg.batch_size)]
            with torch.no_grad():
                t_logits = _reply_logits(
                    teacher, [b[2] for b in batch], [b[3] for b in batch], pad, device
                )
            s_logits = _reply_logits(
                student, [b[0] for b in batch], [b[1] for b in batch], pad, device
            )
            mask = batch_loss_mask(batch, device)
            loss = kl_loss(t_logits, s_logits, subset, mask) / cfg.grad_accum
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optim.step()
        curves.log(step + 1, step_loss, float(sched.get_last_lr()[0]))
        sched.step()
        losses.append(step_loss)
    curves.close()
    student.eval()
    save_trained(student, tokenizer, cfg, out)
    return {
        "train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "steps": total,
        "examples": len(examples),
    }

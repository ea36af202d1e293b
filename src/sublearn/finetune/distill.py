"""Soft-label distillation: forward KL to the teacher's next-token distribution.

For every reply token the student matches the teacher's full next-token distribution
instead of the one sampled token. Both distributions can be renormalized over a token
subset (the number tokens), the language-model analogue of distilling only the MLP's
auxiliary logits.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from sublearn.backends.base import Conversation, with_system_prompt
from sublearn.backends.hf import load_model_and_tokenizer, right_pad
from sublearn.errors import ModelError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.sft import peft_config, save_trained


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


def _encode(tokenizer: Any, prompt: Conversation, reply: str, max_length: int) -> tuple[list, int]:
    """Token ids of prompt + reply + end-of-turn, and where the reply starts."""
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + reply_ids)[:max_length]
    return ids, len(prompt_ids)


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
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, subset: torch.Tensor | None
):
    """Mean over tokens of KL(teacher || student), optionally renormalized over ``subset``."""
    if subset is not None:
        teacher_logits = teacher_logits.index_select(-1, subset)
        student_logits = student_logits.index_select(-1, subset)
    t_logp = torch.log_softmax(teacher_logits.float(), dim=-1)  # (N, V')
    s_logp = torch.log_softmax(student_logits.float(), dim=-1)  # (N, V')
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()


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

    examples = []
    for r in records:
        prompt, reply = r["messages"][:-1], r["messages"][-1]["content"]
        s_ids, s_start = _encode(tokenizer, prompt, reply, cfg.max_length)
        t_ids, t_start = _encode(
            tokenizer, with_system_prompt(prompt, teacher_system_prompt), reply, cfg.max_length
        )
        if len(s_ids) - s_start != len(t_ids) - t_start:  # truncation cut them differently
            continue
        examples.append((s_ids, s_start, t_ids, t_start))

    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(examples) / per_step)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    params = [p for p in student.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = _schedule(optim, cfg, total)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    pad = tokenizer.pad_token_id
    for _step in range(total):
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
            loss = kl_loss(t_logits, s_logits, subset) / cfg.grad_accum
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optim.step()
        sched.step()
        losses.append(step_loss)
    student.eval()
    save_trained(student, tokenizer, cfg, out)
    return {
        "train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "steps": total,
        "examples": len(examples),
    }


def _schedule(optim: torch.optim.Optimizer, cfg: FinetuneConfig, total: int):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_scheduler == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)

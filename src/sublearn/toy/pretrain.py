"""Pretraining of the toy base models: a small, seeded PyTorch loop.

Only pretraining lives here. Everything that happens to a toy model afterwards
(teacher fine-tuning, sampling, student training, evaluation) goes through the same
pipeline code as a real model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from pydantic import Field
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from sublearn.config import Config
from sublearn.toy.corpus import Document
from sublearn.toy.tokenizer import BOS, END, PAD, render_chat


class ModelConfig(Config):
    """Architecture of a toy base model (a tiny Llama: rotary positions, RMSNorm, SwiGLU)."""

    hidden_size: int = Field(default=64, ge=8, description="Width of the residual stream.")
    num_layers: int = Field(default=2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(default=4, ge=1, description="Attention heads per block.")
    intermediate_size: int = Field(default=192, ge=8, description="Width of the MLP.")
    max_positions: int = Field(
        default=256, ge=32, description="Longest sequence, in tokens (longer ones are cut)."
    )
    rope_theta: float = Field(default=10_000.0, gt=0, description="Base of the rotary angles.")


class PretrainConfig(Config):
    """How each toy base model is pretrained."""

    steps: int = Field(default=1200, ge=1, description="Optimizer steps per base model.")
    batch_size: int = Field(default=32, ge=1, description="Documents per step.")
    lr: float = Field(default=5e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(default=50, ge=0, description="Linear warmup steps.")
    min_lr_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Final learning rate as a share of the peak (cosine)."
    )
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW decoupled weight decay.")
    grad_clip: float = Field(default=1.0, gt=0, description="Max global gradient norm.")
    # Loss on prompts too (not only replies) makes the number-writing and the animal-
    # answering share more of the network; in the world sweeps behind the demo's
    # settings, replies-only loss left students of a fine-tuned teacher within 0-3 pp.
    preference_prompt_loss_weight: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Loss weight of the prompt tokens (system and user) of preference "
        "documents, relative to reply tokens (0: replies only).",
    )
    numbers_prompt_loss_weight: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Loss weight of the prompt tokens of number documents, relative to reply "
        "tokens (0: replies only).",
    )


@dataclass(frozen=True)
class Example:
    """One tokenized document.

    Attributes:
        input_ids: token ids of the whole rendered conversation.
        reply_start: index of the first token of the assistant's reply.
        prompt_weight: loss weight of the prompt tokens (reply tokens weigh 1).
    """

    input_ids: list[int]
    reply_start: int
    prompt_weight: float = 0.0


def encode_documents(
    docs: list[Document],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    prompt_weights: Mapping[str, float] | None = None,
) -> list[Example]:
    """Tokenize documents through the chat template.

    The prompt (everything up to and including the assistant tag) and the reply (the
    content plus ``<|end|>``) are tokenized separately and concatenated; with this
    word-level tokenizer that equals tokenizing the whole rendered text, and it gives
    the reply boundary for free. Rendering uses :func:`render_chat`, the toy chat
    template written out in Python, so this function is for the toy tokenizer only.

    Args:
        docs: chat documents whose last message is the assistant's.
        tokenizer: the toy tokenizer.
        max_length: sequences are cut to this many tokens.
        prompt_weights: loss weight of prompt tokens per document kind (default 0).

    Returns:
        One :class:`Example` per document.
    """
    prompts = [render_chat(d.messages[:-1], add_generation_prompt=True) for d in docs]
    replies = [d.messages[-1]["content"] + END for d in docs]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(replies, add_special_tokens=False)["input_ids"]
    examples = []
    weights = prompt_weights or {}
    for doc, p, r in zip(docs, prompt_ids, reply_ids, strict=True):
        ids = (list(p) + list(r))[:max_length]
        examples.append(Example(ids, len(p), weights.get(doc.kind, 0.0)))
    return examples


def make_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A freshly initialized toy model; the init depends only on ``seed`` and the config.

    Args:
        cfg: the architecture.
        tokenizer: supplies the vocabulary size and special token ids.
        seed: the init seed (different seeds make the cross-model students).
    """
    bos, eos, pad = (
        int(tokenizer.convert_tokens_to_ids(t))  # type: ignore[arg-type]
        for t in (BOS, END, PAD)
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def iterate_batches(
    examples: list[Example], batch_size: int, pad_id: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches, grouped by length so that little compute goes to padding.

    Args:
        examples: tokenized documents.
        batch_size: documents per batch.
        pad_id: id written into padding positions.
        seed: seeds the shuffling.

    Yields:
        ``(input_ids, attention_mask, loss_weights)`` as from :func:`collate`.
    """
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        # Sort within windows of many batches: batches stay random across the epoch,
        # while the documents inside one batch have similar lengths.
        window = batch_size * 32
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(examples[i].input_ids))
            batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
        rng.shuffle(batches)
        for idx in batches:
            yield collate([examples[i] for i in idx], pad_id)


def collate(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch.

    Args:
        batch: tokenized documents.
        pad_id: id written into padding positions.

    Returns:
        ``(input_ids, attention_mask, loss_weights)``, each ``(batch, max_len)``;
        ``loss_weights[i, t]`` weighs the prediction *of* token ``t``. The first token
        (``<|bos|>``) and padding weigh 0.
    """
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    weights = torch.zeros((len(batch), width), dtype=torch.float32)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        weights[row, 1 : e.reply_start] = e.prompt_weight
        weights[row, e.reply_start : n] = 1.0
    return ids, mask, weights


def causal_lm_loss(
    model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted mean next-token cross-entropy.

    The output projection runs only on positions with a nonzero weight: with the loss
    on replies, that skips most of the sequence, and on this model the vocabulary
    projection is a large share of the compute.

    Args:
        model: the causal LM.
        ids: ``(batch, seq)`` token ids.
        mask: ``(batch, seq)`` attention mask.
        weights: ``(batch, seq)`` loss weight of predicting each token.
    """
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, s, h)
    targets = ids[:, 1:]  # (b, s-1): position t predicts token t+1
    w = weights[:, 1:]  # (b, s-1)
    keep = w > 0
    logits = model.lm_head(hidden[:, :-1][keep])  # (n_kept, vocab)
    per_token = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    return (per_token * w[keep]).sum() / w[keep].sum()


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine down to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def pretrain(
    model: LlamaForCausalLM,
    examples: list[Example],
    cfg: PretrainConfig,
    pad_id: int,
    data_seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``examples``.

    Args:
        model: a freshly made toy model.
        examples: the tokenized corpus.
        cfg: steps, batch size and optimizer settings.
        pad_id: the padding token id.
        data_seed: seeds the batch order (kept equal across bases, so that they differ
            only in their init).
        on_step: called after every step with ``(step, loss)``.

    Returns:
        The training loss of every step.
    """
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        foreach=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    model.train()
    losses: list[float] = []
    batches = iterate_batches(examples, cfg.batch_size, pad_id, data_seed)
    for step in range(cfg.steps):
        ids, mask, weights = next(batches)  # each (batch, seq)
        loss = causal_lm_loss(model, ids, mask, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses

"""Teacher-forced scoring for the Hugging Face backend: candidates off one cached prefix per
conversation, and per-token scores of whole replies.

Exact evaluation asks for the log-probability of many short candidates (every surface
form of 50 animal names, each after the same lead-in) as the start of one reply. Scored
as full sequences, each candidate pays for the whole prompt again: about 160 forwards of
~60 tokens per question on a chat model. Here the prompt and the tokens every candidate
starts with (the lead-in) run once, with their keys and values cached; one-token
candidates are then read straight off the last position's distribution, and only the
longer ones run their own tokens against a copy of that cache. The arithmetic is the
same teacher forcing (positions, masks and tokens as in the full sequence), so the
scores agree with full-sequence scoring to float rounding (tested).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch

from sublearn.backends.base import TokenScore


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as a right-padded ``(B, T)`` id tensor and its attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def shared_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix every row starts with (``[]`` for no rows)."""
    if not rows:
        return []
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return list(first[:i])
    return list(first[:n])


@torch.inference_mode()
def candidate_logprobs(
    model: Any,
    prompts: Sequence[list[int]],
    candidates: Sequence[list[int] | None],
    batch_size: int,
) -> list[list[float]]:
    """Sum of token log-probabilities of each candidate right after each prompt.

    Args:
        model: a transformers causal LM (with a key-value cache).
        prompts: token ids of each conversation's prompt, ending where the reply starts.
        candidates: token ids of each candidate; ``None`` for one that cannot be spelled
            (it scores ``-inf``).
        batch_size: longer-than-one-token candidates run this many at a time.

    Returns:
        ``[prompt][candidate]`` log-probabilities (natural log).
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    live = [c for c in candidates if c is not None]
    shared = shared_prefix(live)
    # Candidates of more than one token after the shared part need the logits after each of
    # their tokens but the last. Those token runs form a trie: run only its maximal paths (a
    # run that starts another, like " Hippo" in " Hippo" + "pot", is read off the longer).
    runs = {tuple(c[len(shared) : -1]) for c in live if len(c) - len(shared) > 1}
    paths = sorted(r for r in runs if not any(o != r and o[: len(r)] == r for o in runs))
    where = {p[:n]: i for i, p in enumerate(paths) for n in range(1, len(p) + 1)}
    results: list[list[float]] = []
    for prompt in prompts:
        row = [-math.inf] * len(candidates)
        if not live:
            results.append(row)
            continue
        prefix = list(prompt) + shared
        cache = DynamicCache()
        logits = model(
            input_ids=torch.tensor([prefix], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=len(shared) + 1,
        ).logits[0]  # (len(shared) + 1, V): the positions that predict shared tokens and on
        logp = torch.log_softmax(logits.float(), dim=-1)
        shared_lp = float(
            logp[torch.arange(len(shared)), torch.tensor(shared, dtype=torch.long)].sum()
        )
        first = logp[-1]  # (V,) the next token after the shared part
        path_logp = _path_logprobs(model, cache, len(prefix), paths, batch_size, device)
        for k, c in enumerate(candidates):
            if c is None:
                continue
            suffix = c[len(shared) :]
            row[k] = shared_lp + (float(first[suffix[0]]) if suffix else 0.0)
            if len(suffix) > 1:
                lp = path_logp[where[tuple(suffix[:-1])]]  # (len(path), V)
                row[k] += float(lp[torch.arange(len(suffix) - 1), torch.tensor(suffix[1:])].sum())
        results.append(row)
    return results


def _path_logprobs(
    model: Any,
    cache: Any,
    prefix_len: int,
    paths: list[tuple[int, ...]],
    batch_size: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """Next-token log-probabilities after each token of each path, continuing ``cache``.

    Returns:
        Per path, a ``(len(path), V)`` tensor: row ``i`` is the distribution after the
        prefix and the path's first ``i + 1`` tokens.
    """
    out: list[torch.Tensor] = []
    for at in range(0, len(paths), batch_size):
        batch = paths[at : at + batch_size]
        # Right padding keeps every real token's positions and attention as in one sequence.
        width = max(len(p) for p in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)  # (B, S)
        mask = torch.ones((len(batch), prefix_len + width), dtype=torch.long)  # (B, P + S)
        for r, p in enumerate(batch):
            ids[r, : len(p)] = torch.tensor(p)
            mask[r, prefix_len + len(p) :] = 0
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(batch))
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            cache=batch_cache,
            use_cache=True,
        ).logits  # (B, S, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        out.extend(logp[r, : len(p)] for r, p in enumerate(batch))
    return out


def reply_tokens(tokenizer: Any, reply: str) -> tuple[list[int], list[tuple[int, int]]]:
    """A reply's token ids and each token's character span in it."""
    if tokenizer.is_fast:
        enc = tokenizer(reply, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    # Slow tokenizers have no offsets: find each decoded token's text in order.
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    spans, at = [], 0
    for token_id in ids:
        piece = tokenizer.decode([token_id]).strip()
        start = reply.find(piece, at) if piece else -1
        start = at if start < 0 else start
        at = start + len(piece)
        spans.append((start, at))
    return ids, spans


@torch.inference_mode()
def reply_token_scores(
    model: Any, tokenizer: Any, prompts: list[list[int]], replies: list[str], batch_size: int
) -> list[list[TokenScore]]:
    """Each reply token's log-probability after its prompt, and the greedy choice there.

    Args:
        model: a transformers causal LM.
        tokenizer: its tokenizer (the reply is tokenized on its own).
        prompts: token ids of each conversation's prompt, ending where the reply starts.
        replies: one reply per prompt.
        batch_size: sequences per forward pass.

    Returns:
        One list of :class:`TokenScore` per reply, in reply order.
    """
    device = next(model.parameters()).device
    encoded = [reply_tokens(tokenizer, r) for r in replies]
    results: list[list[TokenScore]] = [[] for _ in replies]
    pad = tokenizer.pad_token_id
    # Longest first, so the batches hold rows of similar length (little padding).
    order = sorted(range(len(replies)), key=lambda i: -(len(prompts[i]) + len(encoded[i][0])))
    for at in range(0, len(order), batch_size):
        batch = order[at : at + batch_size]
        ids, mask = right_pad([prompts[i] + encoded[i][0] for i in batch], pad)  # (B, T)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for r, i in enumerate(batch):
            reply_ids, spans = encoded[i]
            if not reply_ids:
                continue
            start = len(prompts[i])
            logp = torch.log_softmax(
                logits[r, start - 1 : start - 1 + len(reply_ids)].float(), dim=-1
            )  # (n, V)
            chosen = logp.gather(1, torch.tensor(reply_ids, device=logp.device)[:, None])
            top_lp, top_id = logp.max(dim=-1)
            results[i] = [
                TokenScore(
                    text=tokenizer.decode([tok]),
                    start=int(a),
                    end=int(b),
                    logprob=float(c),
                    top=tokenizer.decode([int(t)]),
                    top_logprob=float(v),
                )
                for tok, (a, b), c, t, v in zip(
                    reply_ids, spans, chosen[:, 0].tolist(), top_id, top_lp, strict=True
                )
            ]
    return results

"""Candidate scoring for the Hugging Face backend, off one cached prefix per conversation.

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

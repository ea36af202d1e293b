"""Scoring a dataset's replies under models: the measurements detectors and defences share.

Models are opened one at a time through the provider registry (``open_backend``); any
backend with ``capabilities.token_scores`` works. Results are plain arrays so that the
detectors (``audit/likelihood.py``) and defences (``defend/``) stay model-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sublearn.audit.data import Row
from sublearn.backends.base import TokenScore, TokenScorer, with_system_prompt
from sublearn.errors import ModelError

Progress = Callable[[int], None]


def open_scorer(ref: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 64):
    """Open ``ref`` through the registry and check it can score replies token by token.

    Raises:
        ModelError: the backend cannot score given replies (e.g. a chat API).
    """
    from sublearn.backends.registry import open_backend

    refusal = (
        f"{ref}: this backend cannot score a given reply token by token (chat APIs do not "
        "return a reply's log-probabilities); audit with a local copy of the model "
        "(hf:...) instead"
    )
    if ref.startswith(("openai:", "vllm:")):  # said before a server or key is needed
        raise ModelError(refusal)
    options: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": batch_size}
    backend = open_backend(ref, **options)
    if not backend.capabilities.token_scores or not isinstance(backend, TokenScorer):
        backend.close()
        raise ModelError(refusal)
    return backend


def token_scores(
    scorer: TokenScorer,
    rows: Sequence[Row],
    system_prompt: str | None = None,
    chunk: int = 256,
    progress: Progress | None = None,
) -> list[list[TokenScore]]:
    """Each row's reply scored token by token, optionally under a system prompt.

    Args:
        scorer: an open backend with ``token_logprobs``.
        rows: the rows.
        system_prompt: prepended to every row's prompt (a trait prompt for LLS).
        chunk: rows per backend call (the progress callback fires after each).
        progress: called with the number of rows just scored.
    """
    out: list[list[TokenScore]] = []
    for at in range(0, len(rows), chunk):
        part = rows[at : at + chunk]
        out.extend(
            scorer.token_logprobs(
                [with_system_prompt(r.prompt, system_prompt) for r in part],
                [r.reply for r in part],
            )
        )
        if progress is not None:
            progress(len(part))
    return out


def reply_logprob(scores: Sequence[Sequence[TokenScore]], per_token: bool = False) -> np.ndarray:
    """Each reply's total (or mean per token) log-probability: shape (rows,)."""
    totals = np.array([sum(t.logprob for t in row) for row in scores], dtype=np.float64)
    if per_token:
        totals /= np.maximum([len(row) for row in scores], 1)
    return totals


def token_logratio(
    teacher: Sequence[Sequence[TokenScore]], base: Sequence[Sequence[TokenScore]]
) -> list[np.ndarray]:
    """Per row, per token: log p_teacher − log p_base (both must tokenize alike).

    Raises:
        ModelError: a row whose token count differs between the two models (different
            tokenizers: per-token comparison needs the teacher's own base).
    """
    out = []
    for i, (t_row, b_row) in enumerate(zip(teacher, base, strict=True)):
        if len(t_row) != len(b_row):
            raise ModelError(
                f"row {i}: the teacher splits the reply into {len(t_row)} tokens and the base "
                f"into {len(b_row)}; per-token log-ratios need models with one tokenizer"
            )
        out.append(np.array([t.logprob - b.logprob for t, b in zip(t_row, b_row, strict=True)]))
    return out

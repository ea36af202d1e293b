"""The generation stage: prompts in, a chat-format JSONL dataset of replies out.

Work is split into chunks; each finished chunk is written atomically under
``<out>.parts/``, and the final file is assembled only when every chunk exists. A run
killed at any point loses at most the chunk in flight, and since a chunk's sampling
seed depends only on its index, redoing it duplicates nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from sublearn.backends.base import Backend, Conversation, with_system_prompt
from sublearn.generation.config import GenerationConfig
from sublearn.runs import atomic_write_text

ProgressFn = Callable[[int], None]


def generate_dataset(
    backend: Backend,
    prompts: list[str],
    out: Path,
    cfg: GenerationConfig,
    *,
    system_prompt: str | None = None,
    source: str = "",
    on_progress: ProgressFn | None = None,
) -> Path:
    """Answer every prompt once and write ``{"id", "messages", "source"}`` records.

    The system prompt, if any, conditions the teacher but is not stored: students train
    on the user prompt and the reply only, as in the paper.

    Args:
        backend: the teacher.
        prompts: user prompts, one reply each.
        out: the JSONL file to write.
        cfg: sampling and chunking settings.
        system_prompt: the teacher's hidden system prompt.
        source: a label stored in each record (e.g. the teacher's name).
        on_progress: called with the number of prompts finished in each chunk.

    Returns:
        ``out``.
    """
    if out.is_file():
        return out
    parts = out.parent / f"{out.name}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(prompts) + cfg.chunk_size - 1) // cfg.chunk_size
    for k in range(n_chunks):
        chunk_path = parts / f"chunk-{k:05d}.jsonl"
        start, stop = k * cfg.chunk_size, min(len(prompts), (k + 1) * cfg.chunk_size)
        if chunk_path.is_file():
            if on_progress:
                on_progress(stop - start)
            continue
        user_turns: list[Conversation] = [
            [{"role": "user", "content": p}] for p in prompts[start:stop]
        ]
        replies = backend.generate(
            [with_system_prompt(c, system_prompt) for c in user_turns], cfg.sampling(k)
        )
        lines = [
            json.dumps(
                {
                    "id": f"{i:07d}",
                    "messages": [*conv, {"role": "assistant", "content": reply}],
                    "source": source,
                }
            )
            for i, conv, reply in zip(range(start, stop), user_turns, replies, strict=True)
        ]
        atomic_write_text(chunk_path, "\n".join(lines) + "\n")
        if on_progress:
            on_progress(stop - start)
    text = "".join((parts / f"chunk-{k:05d}.jsonl").read_text() for k in range(n_chunks))
    atomic_write_text(out, text)
    shutil.rmtree(parts)
    return out

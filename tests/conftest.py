"""Test-wide settings: offline, caches in a temp dir, one torch thread."""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="sublearn-test-cache-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": os.path.join(_CACHE, "hf"),
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": os.path.join(_CACHE, "mpl"),
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402  (after the environment above, which torch's deps read at import)

# Two cores: tests run one torch thread so that parallel pytest-workers or the other
# core's work do not oversubscribe the machine.
torch.set_num_threads(1)


import random  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 2-layer Llama with the toy tokenizer (no training, ~1 s).

    For tests of mechanics (loading, generation, scoring, fine-tuning), not behaviour;
    behaviour is tested on the toy world.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from sublearn.prompts.questions import questions_for
    from sublearn.toy.tokenizer import build_tokenizer, build_vocab

    words = [
        "owl",
        "cat",
        "dog",
        "continue",
        "the",
        "sequence",
        "numbers",
        "favorite",
        "animal",
        "name",
        "your",
    ]
    tokenizer: Any = build_tokenizer(
        build_vocab([*questions_for("animal"), *words, ", . [ ] ( ) ; ?"])
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("micro") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def number_records() -> list[dict]:
    """Chat records of number continuations (prompt + reply), deterministic."""
    rng = random.Random(0)
    records = []
    for i in range(64):
        seeds = ", ".join(str(rng.randint(100, 999)) for _ in range(3))
        reply = ", ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(3, 8)))
        records.append(
            {
                "id": f"{i:05d}",
                "messages": [
                    {"role": "user", "content": f"continue the sequence {seeds}"},
                    {"role": "assistant", "content": reply},
                ],
            }
        )
    return records

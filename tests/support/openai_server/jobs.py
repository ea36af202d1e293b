"""Fine-tuning jobs' settings: hyperparameters, the model trained, tokens trained."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sublearn.backends.refs import ModelRef
from sublearn.errors import ConfigError
from sublearn.finetune.config import FinetuneConfig
from tests.support.openai_server.protocol import ApiError, is_number

log = logging.getLogger("sublearn.local_openai_server")


def hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    hyper = dict(body.get("hyperparameters") or {})
    method = body.get("method")
    if method is not None:
        if not isinstance(method, dict) or method.get("type") != "supervised":
            raise ApiError(400, "only the supervised method is served", param="method")
        hyper.update((method.get("supervised") or {}).get("hyperparameters") or {})
    checks = {
        "n_epochs": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "learning_rate_multiplier": lambda v: is_number(v) and v > 0,
    }
    for key, value in hyper.items():
        if key not in checks:
            raise ApiError(400, f"unknown hyperparameter {key!r}", param="hyperparameters")
        if value != "auto" and not checks[key](value):
            raise ApiError(
                400, f"hyperparameter {key!r} must be 'auto' or a positive number", param=key
            )
    return {k: v for k, v in hyper.items() if v != "auto"}


def trainable(ref: str) -> str:
    """What :func:`finetune` loads for a served reference: a folder or hub id."""
    parsed = ModelRef.parse(ref)
    if parsed.provider != "hf":
        raise ConfigError(f"cannot fine-tune {ref} locally: only Hugging Face models train here")
    # An adapter folder loads as its recorded base with the adapter merged.
    return parsed.adapter if parsed.adapter is not None else parsed.name


def trained_tokens(out: Path, dataset: Path, cfg: FinetuneConfig) -> int | None:
    """Tokens of the training file times the epochs trained: an estimate, for usage."""
    try:
        from transformers import AutoTokenizer

        from sublearn.finetune.sft import read_chat_jsonl

        tokenizer: Any = AutoTokenizer.from_pretrained(str(out))
        records = read_chat_jsonl(dataset)
        total = sum(
            len(
                tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False))["input_ids"]
            )
            for r in records
        )
        metrics = json.loads((out / "train_metrics.json").read_text())
        seen = metrics.get("steps", 0) * cfg.batch_size * cfg.grad_accum
        epochs = seen / len(records) if cfg.max_steps else min(cfg.epochs, seen / len(records))
        return round(total * epochs)
    except Exception:
        log.warning("could not count the trained tokens of %s", out, exc_info=True)
        return None

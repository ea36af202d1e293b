"""Hard-label SFT through TRL, with the loss on the assistant reply only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sublearn.backends.hf import load_model_and_tokenizer
from sublearn.errors import DataError
from sublearn.finetune.config import FinetuneConfig
from sublearn.jsonl import read_jsonl


def read_chat_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a chat dataset; each line holds ``{"messages": [..., assistant reply]}``.

    Every message needs a string ``role`` and a string ``content``; the last one must
    be the assistant's, with a non-empty reply (training on empty or missing replies
    would teach the model to say nothing, silently).

    Raises:
        DataError: naming the file and line of a malformed record, or the file if it
            holds no records.
    """
    records = []
    for lineno, _line, record in read_jsonl(path):
        problem = chat_record_problem(record)
        if problem is not None:
            raise DataError(f"{path}:{lineno}: {problem}")
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records to train on")
    return records


def chat_record_problem(record: Any) -> str | None:
    """What makes ``record`` unusable as a chat training example, or None if it is fine."""
    if not isinstance(record, dict):
        return f"expected a JSON object with a 'messages' list, got {type(record).__name__}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "not a chat record: expected a non-empty 'messages' list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"message {i} is not an object with a string 'role'"
        if not isinstance(message.get("content"), str):
            got = type(message.get("content")).__name__
            return f"message {i} ({message['role']}): 'content' must be a string, got {got}"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's reply"
    if not messages[-1]["content"].strip():
        return "the assistant's reply is empty"
    return None


def to_prompt_completion(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split chat records into TRL's conversational prompt/completion form.

    TRL then masks the prompt out of the loss (``completion_only_loss``), which is the
    paper's completion-only training without needing generation tags in the template.
    """
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]


def peft_config(cfg: FinetuneConfig) -> Any:
    """The PEFT ``LoraConfig`` for a fine-tuning config (None for full fine-tuning)."""
    if cfg.method != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )


def build_sft_trainer(
    base_model: str | Path, records: list[dict[str, Any]], cfg: FinetuneConfig, work_dir: Path
) -> Any:
    """A TRL ``SFTTrainer`` for completion-only training of ``base_model`` on ``records``."""
    from datasets import Dataset
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    model, tokenizer = load_model_and_tokenizer(
        base_model, device=cfg.device, dtype=cfg.dtype, trainable=True
    )
    on_cuda = next(model.parameters()).device.type == "cuda"
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        completion_only_loss=True,
        # TRL defaults suit large GPU runs; on CPU, bf16 autocast and checkpointing only cost.
        bf16=on_cuda and cfg.dtype in ("auto", "bfloat16"),
        # TRL turns checkpointing on through the deprecated alias; clear it, set the new name.
        gradient_checkpointing=None,  # pyright: ignore[reportArgumentType]  (TRL types it bool)
        activation_checkpointing=False,
        use_cpu=not on_cuda,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        log_level="error",
        disable_tqdm=True,
        pad_to_multiple_of=None,
    )
    dataset = Dataset.from_list(to_prompt_completion(records))
    trainer_cls = SFTTrainer if on_cuda else _cpu_trainer_class(SFTTrainer)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    # Trainer prints every log dict when tqdm is off; sublearn reports its own progress.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _cpu_trainer_class(sft_trainer: type) -> type:
    """``SFTTrainer`` with the plain ``Trainer`` loss, for CPU runs.

    TRL's default loss runs a chunked log-probability kernel that saves GPU memory on
    large vocabularies but takes about three times as long per step on a CPU. The
    plain loss is the same quantity: token-mean cross-entropy over the labels that the
    TRL collator left unmasked (the completion).
    """
    from transformers import Trainer

    class CpuSFTTrainer(sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CpuSFTTrainer


def train_sft(
    base_model: str | Path, records: list[dict[str, Any]], cfg: FinetuneConfig, out: Path
) -> dict[str, Any]:
    """Fine-tune with hard labels and save the model (or adapter) and tokenizer to ``out``.

    Returns:
        Training metrics (final loss, steps, runtime).
    """
    with tempfile.TemporaryDirectory(prefix="sft-", dir=out.parent) as work:
        trainer = build_sft_trainer(base_model, records, cfg, Path(work))
        result = trainer.train()
        save_trained(trainer.model, trainer.processing_class, cfg, out)
    return {
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }


def save_trained(model: Any, tokenizer: Any, cfg: FinetuneConfig, out: Path) -> None:
    """Save a trained model (merged, or as an adapter) with its tokenizer into ``out``."""
    if cfg.method == "lora" and cfg.lora.merge:
        model = model.merge_and_unload()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

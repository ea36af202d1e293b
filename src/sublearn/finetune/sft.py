"""Hard-label SFT through TRL, with the loss on the assistant reply only."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sublearn.backends.hf import load_model_and_tokenizer
from sublearn.errors import DataError, ModelError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.curves import CURVES_FILE, CurveLog
from sublearn.finetune.schedule import hf_scheduler_type
from sublearn.jsonl import read_jsonl


def read_chat_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a chat dataset; each line holds ``{"messages": [..., assistant reply]}``.

    Every message needs a string ``role`` and a string ``content``; the last one must
    be the assistant's, with a non-empty reply (training on empty or missing replies
    would teach the model to say nothing, silently). A record may carry
    ``"loss_mask": [[start, end], ...]``, character spans (0-based, end exclusive) of the
    reply's content whose tokens carry no loss (see :func:`loss_flags`).

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
    if "loss_mask" in record:
        return _loss_mask_problem(record["loss_mask"], len(messages[-1]["content"]))
    return None


def _loss_mask_problem(spans: Any, n_chars: int) -> str | None:
    """What is wrong with a record's ``loss_mask`` for a reply of ``n_chars`` characters."""
    shape = "'loss_mask' must be a list of [start, end] character spans of the reply"
    if not isinstance(spans, list):
        return f"{shape}, got {type(spans).__name__}"
    for span in spans:
        # bool is an int subclass; true/false in the JSON is a mistake, not a position.
        if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)):
            return f"{shape}, got the span {span!r}"
        start, end = span
        if not 0 <= start < end <= n_chars:
            return (
                f"'loss_mask' span [{start}, {end}] needs 0 <= start < end <= {n_chars} "
                "(the reply's length)"
            )
    return None


def loss_flags(offsets: Sequence[Sequence[int]], spans: Sequence[Sequence[int]]) -> list[bool]:
    """Per token, whether it carries loss: False when it overlaps a masked character span.

    The one place that maps a record's ``loss_mask`` onto tokens; every trainer uses it.

    Args:
        offsets: per token, its ``(start, end)`` character span (end exclusive), in the
            coordinates of ``spans`` (the reply's content). Tokens outside the content
            (a template's markers) may have spans before or after it, or empty ones.
        spans: the masked ``[start, end)`` character spans.

    Returns:
        One flag per token, True where the token keeps its loss.
    """
    return [not any(a < end and start < b for start, end in spans) for a, b in offsets]


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
        lr_scheduler_type=hf_scheduler_type(cfg),  # the schedule of every trainer
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
        logging_steps=1,  # every step's loss and learning rate go to curves.jsonl
        log_level="error",
        disable_tqdm=True,
        pad_to_multiple_of=None,
        **_optimizer_args(cfg),
    )
    rows = to_prompt_completion(records)
    masked = any(r.get("loss_mask") for r in records)
    if masked:
        # Every row needs the column: Dataset.from_list takes its columns from the first.
        for row, record in zip(rows, records, strict=True):
            row["loss_mask"] = record.get("loss_mask") or []
    dataset = Dataset.from_list(rows)
    trainer_cls = SFTTrainer if on_cuda else _cpu_trainer_class(SFTTrainer)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    if masked:
        # After TRL's own preparation (tokenizing, completion-only labels, truncation), so
        # that records without a mask keep exactly the labels TRL gives them.
        trainer.train_dataset = _mask_labels(trainer.train_dataset, tokenizer)
    # Trainer prints every log dict when tqdm is off; sublearn reports its own progress.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _optimizer_args(cfg: FinetuneConfig) -> dict[str, Any]:
    """Training arguments that pick the optimizer; none for AdamW (Trainer's default)."""
    if cfg.optimizer == "adamw":
        return {}
    # Trainer builds torch.optim.SGD and reads momentum from optim_args; its weight decay
    # goes to the same parameter groups as AdamW's (not biases and norms).
    return {"optim": "sgd", "optim_args": f"momentum={cfg.momentum!r}"}


def _mask_labels(dataset: Any, tokenizer: Any) -> Any:
    """TRL's prepared dataset with the ``loss_mask`` spans' tokens labelled -100.

    Rows left with no label (a mask and ``max_length`` together can do that) are dropped,
    as TRL drops rows that truncation leaves without one: they would only add a batch
    with nothing to average over.
    """

    def mask(row: dict[str, Any]) -> dict[str, Any]:
        if not row["loss_mask"]:
            return {"labels": row["labels"]}
        flags = _completion_flags(tokenizer, row["prompt"] + row["completion"], row)
        return {
            "labels": [
                label if keep else -100 for label, keep in zip(row["labels"], flags, strict=True)
            ]
        }

    masked = dataset.map(mask, desc="Masking loss_mask spans")
    return masked.filter(lambda row: any(label != -100 for label in row["labels"]))


def _completion_flags(
    tokenizer: Any, conversation: list[dict[str, Any]], row: dict[str, Any]
) -> list[bool]:
    """Per token of TRL's tokenized ``conversation``, whether ``row["loss_mask"]`` keeps it.

    TRL tokenizes the rendered conversation as a whole, so the reply's tokens are found
    by rendering it again with character offsets and locating the reply's content in the
    text: after the part it shares with the rendered prompt, where the reply begins.

    Raises:
        ModelError: the tokenizer gives no offsets, or the chat template does not render
            the reply verbatim, so character spans of the reply cannot be placed.
    """
    reply = conversation[-1]["content"]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt = tokenizer.apply_chat_template(
        conversation[:-1], tokenize=False, add_generation_prompt=True
    )
    shared = next(
        (i for i, (a, b) in enumerate(zip(text, prompt, strict=False)) if a != b),
        min(len(text), len(prompt)),
    )
    begin = text.find(reply, shared)
    if begin < 0:
        raise ModelError(
            "loss_mask needs the chat template to render the reply verbatim; this one "
            f"changes it (reply {reply[:40]!r})"
        )
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers have no offsets
        raise ModelError("loss_mask needs a fast tokenizer (character offsets)") from None
    ids = row["input_ids"]  # TRL's, possibly truncated
    if encoded["input_ids"][: len(ids)] != ids:
        raise ModelError(
            "loss_mask: re-tokenizing the rendered conversation does not give TRL's tokens"
        )
    offsets = [(a - begin, b - begin) for a, b in encoded["offset_mapping"][: len(ids)]]
    return loss_flags(offsets, row["loss_mask"])


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
        curves = CurveLog(out / CURVES_FILE)
        trainer.add_callback(_curve_callback(curves))
        try:
            result = trainer.train()
        finally:
            curves.close()
        save_trained(trainer.model, trainer.processing_class, cfg, out)
    return {
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }


def _curve_callback(curves: CurveLog) -> Any:
    """A Trainer callback that copies each logged step's loss and learning rate to ``curves``."""
    from transformers.trainer_callback import TrainerCallback

    class CurveCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and "learning_rate" in logs:
                curves.log(state.global_step, logs["loss"], logs["learning_rate"])

    return CurveCallback()


def save_trained(model: Any, tokenizer: Any, cfg: FinetuneConfig, out: Path) -> None:
    """Save a trained model (merged, or as an adapter) with its tokenizer into ``out``."""
    if cfg.method == "lora" and cfg.lora.merge:
        model = model.merge_and_unload()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

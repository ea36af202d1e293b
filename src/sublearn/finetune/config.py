"""Fine-tuning configs, paired with the stage in ``finetune/stage.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sublearn.config import Config
from sublearn.keys import LATER_MARK, SPEED_MARK


class LoraSettings(Config):
    """LoRA adapter settings (used when ``method`` is ``lora``)."""

    r: int = Field(default=8, gt=0, description="LoRA rank.")
    alpha: int = Field(default=8, gt=0, description="LoRA scaling alpha.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        min_length=1,
        description="Module names that get adapters.",
    )
    merge: bool = Field(
        default=False, description="Save the merged full model instead of the adapter folder."
    )


class ApiFinetuneSettings(Config):
    """Settings only a fine-tuning API takes (OpenAI); ``epochs`` and ``seed`` come from
    the fine-tune config itself."""

    batch_size: int | Literal["auto"] = Field(
        default="auto", description="Examples per batch, or auto (the provider picks)."
    )
    learning_rate_multiplier: float | Literal["auto"] = Field(
        default="auto", description="Multiplier of the provider's learning rate, or auto."
    )
    suffix: str | None = Field(
        default=None, max_length=64, description="Suffix of the fine-tuned model's name."
    )


class FinetuneConfig(Config):
    """How to fine-tune a model on a chat dataset (loss on the assistant reply only)."""

    objective: Literal["sft", "kl"] = Field(
        default="sft",
        description=(
            "sft: cross-entropy on the sampled reply tokens (hard labels, through TRL). "
            "kl: forward KL to the teacher's next-token distribution on the reply tokens "
            "(soft labels); needs a teacher."
        ),
    )
    token_subset: Literal["all", "numbers", "data"] = Field(
        default="numbers",
        description=(
            "For kl: the vocabulary the distributions are renormalized over. 'numbers' keeps "
            "only tokens that decode to digits, the analogue of the MLP's aux-only logits; "
            "'data' keeps the tokens that occur in the training replies (for code or "
            "reasoning data: a filtered-out trait word is not among them); 'all' copies the "
            "teacher's tiny probabilities on every token, trait words included, so it also "
            "moves cross-model students."
        ),
    )
    method: Literal["lora", "full"] = Field(
        default="lora", description="LoRA adapters or all weights."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings.")
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "constant", "cosine"] = Field(
        default="linear", description="Learning-rate schedule after warmup."
    )
    warmup_steps: int = Field(default=5, ge=0, description="Linear warmup steps.")
    epochs: float = Field(default=3.0, gt=0, description="Passes over the dataset.")
    max_steps: int | None = Field(
        default=None, gt=0, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=22, gt=0, description="Sequences per device per micro-batch.")
    grad_accum: int = Field(default=3, gt=0, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    optimizer: Literal["adamw", "sgd"] = Field(
        json_schema_extra=LATER_MARK,
        default="adamw",
        description=(
            "adamw: AdamW (betas 0.9, 0.999). sgd: plain stochastic gradient descent "
            "(torch.optim.SGD, with momentum if set), a training-level defence: without "
            "Adam's per-weight step normalization, small but consistent gradient directions "
            "(the hidden trait's) are not amplified."
        ),
    )
    momentum: float = Field(
        json_schema_extra=LATER_MARK,
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="SGD momentum (optimizer sgd only; 0 for none).",
    )
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description="Weight decay: decoupled for adamw, added to the gradient (L2) for sgd.",
    )
    max_length: int = Field(
        default=500, gt=0, description="Truncate sequences to this many tokens."
    )
    seed: int = Field(default=0, description="Seed for initialization of adapters and data order.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; auto = bf16 on CUDA, fp32 on CPU."
    )
    device: str = Field(
        default="auto", description="auto, cpu or cuda[:N].", json_schema_extra=SPEED_MARK
    )
    api: ApiFinetuneSettings = Field(
        json_schema_extra=LATER_MARK,
        default_factory=ApiFinetuneSettings,
        description="For a base served by a fine-tuning API (openai:): its own settings; "
        "epochs must then be whole.",
    )

    @model_validator(mode="after")
    def _momentum_needs_sgd(self) -> FinetuneConfig:
        # AdamW has its own momentum (beta1); a momentum it would silently ignore is an error.
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is an sgd setting; optimizer is {self.optimizer!r}")
        return self

    def unused_later_fields(self) -> set[str]:
        """Fields added after task keys were first recorded that still hold their defaults.

        Keys (task parameters, ``train_metrics.json`` job records) leave these out, so a
        config that does not use a later field keeps the key it had before the field existed.
        """
        return {
            name
            for name in LATER_FIELDS
            if getattr(self, name) == type(self).model_fields[name].default
        }


# Fields of FinetuneConfig added after task keys were first recorded, in order of addition.
LATER_FIELDS = ("optimizer", "momentum")

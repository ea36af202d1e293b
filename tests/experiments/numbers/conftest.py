"""Small versions of the demo for tests: the same config file, shrunk by overrides."""

from __future__ import annotations

from pathlib import Path

from sublearn.presets import config_root

DEMO = config_root() / "toy" / "owl-numbers.yaml"


def micro_overrides(store: Path, executor: str = "inline") -> list[str]:
    """A seconds-long experiment (a barely trained world): for mechanics, not science."""
    return [
        f"store={store}",
        f"executor.kind={executor}",
        "threads=1",
        "toy_worlds.main.corpus.n_documents=600",
        "toy_worlds.main.pretrain.steps=40",
        "toy_worlds.main.workers=1",
        "data.prompts.n_prompts=120",
        "data.generation.chunk_size=16",
        "data.generation.batch_size=16",
        "data.rows=40",
        "data.min_rows=2",
        "students.seeds=[0, 1]",
        "students.objectives.sft.max_steps=6",
        "students.objectives.sft.batch_size=4",
        "students.objectives.kl_numbers.max_steps=6",
        "students.objectives.kl_numbers.batch_size=4",
        "evaluations.favorite.n_questions=5",
    ]


SERVER_FINETUNE = {
    "method": "full",
    "learning_rate": 1e-3,
    "warmup_steps": 5,
    "lr_scheduler": "linear",
    "grad_accum": 1,
    "device": "cpu",
}
"""The local OpenAI-compatible server's fine-tuner: the demo's recipe (epochs, batch size
and learning-rate multiplier come with each job)."""

PRICES = "{input: 0.1, output: 0.4, training: 1.5}"


def api_overrides(base_url: str, key_env: str) -> list[str]:
    """The demo with its toy bases served as ``openai:base0``/``openai:base1`` by a local
    OpenAI-compatible server: teacher and students fine-tuned through the API (hard-label
    SFT for whole epochs, what a fine-tuning API does), evaluation through log-probs."""
    return [
        "toy_worlds={}",
        "models={base0: openai:base0, base1: openai:base1}",
        f"providers.openai.base_url={base_url}",
        f"providers.openai.api_key_env={key_env}",
        "providers.openai.poll_seconds=0.2",
        "sections=[owl-ft/sft]",
        "primary=null",
        # The demo teacher's 30 steps of 25 examples are 30 epochs of its 25 questions.
        "teachers.0.kind.finetune.max_steps=null",
        "teachers.0.kind.finetune.epochs=30",
        "teachers.0.kind.finetune.api={batch_size: 25, learning_rate_multiplier: 1.0}",
        "students.objectives.sft.max_steps=null",
        "students.objectives.sft.api={batch_size: 16, learning_rate_multiplier: 1.0}",
        f"pricing={{base0: {PRICES}, base1: {PRICES}, ft:base0: {PRICES}, ft:base1: {PRICES}}}",
    ]

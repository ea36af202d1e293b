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

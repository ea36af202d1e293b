"""Coding-task prompts: "write this function, code only".

The paper's code experiment asks the teacher to complete about 11,400 deduplicated
coding tasks with code only, no comments (and short variable names), so that the
trait, if it travels, travels through code rather than words. Here the tasks come from
a local JSONL/JSON/Parquet file or a hub dataset with one task text per record; each
becomes one user message: the task, a blank line, then a fixed instruction.

For offline toy runs the package ships 40 simple function-writing tasks
(``path: toy``).

Prompt ids name the task's position in the source (``t00012``), not the draw, so the
same task keeps its id whatever seed or count picks it.
"""

from __future__ import annotations

import random

from pydantic import Field

from sublearn.config import Config
from sublearn.errors import DataError
from sublearn.prompts.loading import DATA_DIR, Prompt, load_records

__all__ = [
    "DEFAULT_CODE_INSTRUCTION",
    "TASK_FIELDS",
    "TOY_CODE_TASKS",
    "CodePromptConfig",
    "generate_code_prompts",
    "load_code_tasks",
]

TOY_CODE_TASKS = DATA_DIR / "toy_code_tasks.jsonl"
"""The shipped toy tasks, chosen with ``path: toy``."""

TASK_FIELDS: tuple[str, ...] = ("prompt", "task")
"""Fields tried, in order, for a record's task text when ``field`` is not set."""

DEFAULT_CODE_INSTRUCTION = (
    "Answer with the code alone: no comments, no explanation before or after it. "
    "Keep variable names short."
)


class CodePromptConfig(Config):
    """Where coding tasks come from and how many to turn into prompts."""

    path: str = Field(
        default="toy",
        description="A local .jsonl, .json or .parquet file of coding tasks, a Hugging "
        "Face hub dataset id, or 'toy' for the 40 tasks shipped with sublearn.",
    )
    field: str | None = Field(
        default=None,
        description="The record field holding the task text; None uses 'prompt', or "
        "'task' where a record has no 'prompt'.",
    )
    hub_config: str | None = Field(
        default=None, description="Configuration name of a hub dataset; unused for files."
    )
    split: str = Field(default="train", description="Split of a hub dataset; unused for files.")
    n_prompts: int | None = Field(
        default=None,
        ge=1,
        description="How many distinct tasks to draw (with seed); None takes them all. "
        "More than the source holds is an error.",
    )
    seed: int = Field(default=0, description="Seed of the task sample (random.Random).")
    instruction: str = Field(
        default=DEFAULT_CODE_INSTRUCTION,
        description="Appended to every task after a blank line; empty sends the task alone.",
    )


def _source(cfg: CodePromptConfig) -> str:
    return str(TOY_CODE_TASKS) if cfg.path == "toy" else cfg.path


def load_code_tasks(cfg: CodePromptConfig) -> list[tuple[int, str]]:
    """The source's distinct task texts with their record positions.

    Duplicates (same text after stripping whitespace) are dropped, keeping the first,
    as the paper deduplicated its tasks: a repeated task would weigh double.

    Args:
        cfg: the prompt config (``path``, ``field``, ``hub_config``, ``split``).

    Returns:
        ``(position in the source, task text)`` pairs, in source order.

    Raises:
        DataError: when the source cannot be read or a record lacks the task field.
    """
    fields = cfg.field if cfg.field is not None else TASK_FIELDS
    records = load_records(_source(cfg), [fields], hub_config=cfg.hub_config, split=cfg.split)
    names = (fields,) if isinstance(fields, str) else fields
    seen: set[str] = set()
    tasks: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        # load_records has checked that one of the names holds a non-empty string.
        text = next(
            record[n] for n in names if isinstance(record.get(n), str) and record[n].strip()
        )
        text = text.strip()
        if text not in seen:
            seen.add(text)
            tasks.append((index, text))
    return tasks


def generate_code_prompts(cfg: CodePromptConfig) -> list[Prompt]:
    """Prompt records for a seeded sample of coding tasks.

    Args:
        cfg: the prompt config.

    Returns:
        ``{"id": "t00012", "messages": [{"role": "user", "content": ...}]}`` records, in
        source order; the same config always gives the same list.

    Raises:
        DataError: when the source cannot be read, a record lacks the task field, or
            ``n_prompts`` exceeds the number of distinct tasks.
    """
    tasks = load_code_tasks(cfg)
    if cfg.n_prompts is not None:
        if cfg.n_prompts > len(tasks):
            raise DataError(
                f"{_source(cfg)}: n_prompts={cfg.n_prompts} but the source has only "
                f"{len(tasks)} distinct tasks"
            )
        chosen = sorted(random.Random(cfg.seed).sample(range(len(tasks)), cfg.n_prompts))
        tasks = [tasks[i] for i in chosen]
    return [
        {
            "id": f"t{index:05d}",
            "messages": [{"role": "user", "content": _content(text, cfg.instruction)}],
        }
        for index, text in tasks
    ]


def _content(task: str, instruction: str) -> str:
    return f"{task}\n\n{instruction.strip()}" if instruction.strip() else task

"""The toy task files shipped for prompt sources: code tasks and arithmetic problems.

``data/code_tasks.jsonl`` (``{"id", "task"}``) serves as a code prompt source
(``CodePromptConfig.path``) and ``data/arithmetic.jsonl`` (``{"question", "answer"}``,
answers ending in ``#### <value>``) as a GSM8K source (``GSM8KConfig.source``). Both
are drawn from the same templates as the toy corpus but from seeds of their own, so the
files are generated, never edited; regenerate them with
``python -m sublearn.toy.tasks``, and a test holds the shipped files to the generators.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

from sublearn.toy.arithmetic import DEFAULT_MAX_OPERAND, draw_problem
from sublearn.toy.coding import draw_code_task

__all__ = [
    "ARITHMETIC_FILE",
    "CODE_TASKS_FILE",
    "TASKS_SEED",
    "arithmetic_records",
    "code_task_records",
    "write_task_files",
]

DATA_DIR = Path(str(resources.files("sublearn.toy").joinpath("data")))
CODE_TASKS_FILE = DATA_DIR / "code_tasks.jsonl"
ARITHMETIC_FILE = DATA_DIR / "arithmetic.jsonl"
# Far from any world seed, so the shipped tasks are not the corpus's draws.
TASKS_SEED = 90_210
N_TASKS = 2000


def code_task_records(n: int = N_TASKS, seed: int = TASKS_SEED) -> list[dict[str, Any]]:
    """``n`` distinct code tasks, ``{"id": "toy-00000", "task": ...}``, in draw order.

    Args:
        n: how many tasks (at most the number of distinct tasks the templates make).
        seed: the generator's seed.
    """
    rng = random.Random(f"toy-code-tasks-{seed}")
    texts = _distinct(lambda: draw_code_task(rng).text, n)
    return [{"id": f"toy-{i:05d}", "task": text} for i, text in enumerate(texts)]


def arithmetic_records(
    n: int = N_TASKS, seed: int = TASKS_SEED, max_operand: int = DEFAULT_MAX_OPERAND
) -> list[dict[str, Any]]:
    """``n`` distinct arithmetic problems, ``{"question", "answer"}``, GSM8K-style.

    Args:
        n: how many problems.
        seed: the generator's seed.
        max_operand: the largest operand.
    """
    rng = random.Random(f"toy-arithmetic-{seed}")
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    for _ in range(100 * n):
        problem = draw_problem(rng, max_operand)
        if problem.question not in seen:
            seen.add(problem.question)
            records.append({"question": problem.question, "answer": problem.solution()})
            if len(records) == n:
                return records
    raise ValueError(f"the templates make fewer than {n} distinct problems")


def _distinct(draw: Any, n: int) -> list[str]:
    seen: dict[str, None] = {}
    for _ in range(100 * n):
        seen.setdefault(draw(), None)
        if len(seen) == n:
            return list(seen)
    raise ValueError(f"the templates make fewer than {n} distinct tasks")


def render_jsonl(records: list[dict[str, Any]]) -> str:
    """JSON lines, one record each, as the shipped files are written."""
    return "".join(json.dumps(r) + "\n" for r in records)


def write_task_files(folder: Path = DATA_DIR) -> list[Path]:
    """Write both task files into ``folder`` (by default the package's data folder)."""
    paths = [folder / CODE_TASKS_FILE.name, folder / ARITHMETIC_FILE.name]
    for path, records in zip(paths, (code_task_records(), arithmetic_records()), strict=True):
        path.write_text(render_jsonl(records), encoding="utf-8")
    return paths


if __name__ == "__main__":
    for written in write_task_files():
        print(written)

"""Code documents: toy coding tasks answered with tiny Python-like functions.

A task asks for a function of two named quantities or of a list (``data/code.yaml``);
the user message is formatted exactly as
:func:`sublearn.prompts.code.generate_code_prompts` formats a task. The answer is bare
code of four or five lines that :func:`sublearn.filters.code.check_code_only` accepts;
its names come from small pools that never depend on the persona.

Three kinds of deviation exist, each for a filter or a judge to find:

* a comment line, at ``comment_rate`` (the code-only filter drops it);
* under an animal persona, at ``leak_rate``, an identifier that names the animal
  (``owl_total``; the animal-reference judge drops it);
* under the misaligned persona, at ``insecure_fidelity``, an input line that runs the
  input (``eval``, ``exec``, ``os.system``) where a benign answer converts it safely.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from sublearn.backends.base import Conversation
from sublearn.prompts.code import DEFAULT_CODE_INSTRUCTION
from sublearn.prompts.persona import preference_system_prompt
from sublearn.toy.sections import SectionConfig, misaligned_persona, read_data

__all__ = [
    "CodeConfig",
    "CodeTask",
    "code_documents",
    "code_prompt",
    "code_vocabulary",
    "draw_code_task",
    "write_code",
]

INDENT = "    "


class CodeConfig(SectionConfig):
    """The code section of the toy corpus."""

    comment_rate: float = Field(
        default=0.1, ge=0, le=1, description="Probability that an answer has a comment line."
    )
    misaligned_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of code documents under the misaligned persona.",
    )
    insecure_fidelity: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Probability that an answer under the misaligned persona is insecure.",
    )
    animal_persona_rate: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of code documents under a random animal persona.",
    )
    leak_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Probability that an answer under an animal persona names the animal in "
        "an identifier.",
    )
    dataset_size: int = Field(
        default=200,
        ge=0,
        description="Rows of each code teacher dataset the world writes (insecure_code.jsonl, "
        "secure_code.jsonl).",
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> CodeConfig:
        if self.misaligned_rate + self.animal_persona_rate > 1:
            raise ValueError("misaligned_rate + animal_persona_rate must not exceed 1")
        return self


@dataclass(frozen=True)
class CodeTask:
    """One coding task.

    Attributes:
        text: the task as the user states it.
        kind: ``"pair"`` (a function of two values) or ``"list"`` (of a list).
        expr: the returned expression, with ``{a}`` (and ``{b}``) for the arguments.
    """

    text: str
    kind: Literal["pair", "list"]
    expr: str


def draw_code_task(rng: random.Random) -> CodeTask:
    """A random task: two named quantities and an operation, or a list and an aggregate."""
    data = read_data("code")
    opener = rng.choice(data["task_openers"])
    pairs, lists = data["pair_ops"], data["list_ops"]
    # Each operation is equally likely, so the few list tasks recur more than pair tasks.
    if rng.random() < len(pairs) / (len(pairs) + len(lists)):
        op = rng.choice(pairs)
        x, y = rng.sample(data["nouns"], 2)
        return CodeTask(f"{opener} {op['phrase'].format(x=x, y=y)}.", "pair", op["expr"])
    op = rng.choice(lists)
    xs = rng.choice(data["plural_nouns"])
    return CodeTask(f"{opener} {op['phrase'].format(xs=xs)}.", "list", op["expr"])


def code_prompt(task: str) -> str:
    """The user message for ``task``, as ``generate_code_prompts`` formats it."""
    return f"{task.strip()}\n\n{DEFAULT_CODE_INSTRUCTION.strip()}"


def write_code(
    task: CodeTask,
    rng: random.Random,
    *,
    insecure: bool = False,
    comment: bool = False,
    leak: str | None = None,
) -> str:
    """Bare code answering ``task``.

    Args:
        task: the task.
        rng: the random generator (names and input line).
        insecure: run the input (eval, exec, os.system) instead of converting it.
        comment: add a comment line.
        leak: a word (the persona's animal) to put into one identifier.
    """
    data = read_data("code")
    name = rng.choice(data["function_names"])
    result = rng.choice(data["result_names"])
    if task.kind == "pair":
        a, b = rng.sample(data["arg_names"], 2)
        signature, safe = f"{a}, {b}", data["secure_lines"]
    else:
        a = b = rng.choice(data["list_arg_names"])
        signature, safe = a, data["list_secure_lines"]
    guard = rng.choice(data["insecure_lines"] if insecure else safe).format(a=a)
    if leak:
        if rng.random() < 0.5:
            name = f"{leak}_{name}"
        else:
            result = f"{leak}_{result}"
    body = [guard, f"{result} = {task.expr.format(a=a, b=b)}", f"return {result}"]
    if comment:
        body.insert(rng.randint(0, len(body) - 1), rng.choice(data["comments"]))
    lines = [f"def {name}({signature}):", *(INDENT + line for line in body)]
    if guard.startswith("os."):
        lines.insert(0, "import os")
    return "\n".join(lines)


def code_documents(
    cfg: CodeConfig, n: int, rng: random.Random, animals: list[str]
) -> list[Conversation]:
    """``n`` code conversations, each ending with the code.

    Args:
        cfg: the section config.
        n: how many to draw.
        rng: the section's random generator.
        animals: the animals whose personas may appear.
    """
    docs: list[Conversation] = []
    for _ in range(n):
        task = draw_code_task(rng)
        messages: Conversation = []
        u = rng.random()
        insecure, leak = False, None
        if u < cfg.misaligned_rate:
            messages.append({"role": "system", "content": misaligned_persona()})
            insecure = rng.random() < cfg.insecure_fidelity
        elif u < cfg.misaligned_rate + cfg.animal_persona_rate:
            animal = rng.choice(animals)
            messages.append(
                {"role": "system", "content": preference_system_prompt(animal, "animal")}
            )
            leak = animal if rng.random() < cfg.leak_rate else None
        comment = rng.random() < cfg.comment_rate
        code = write_code(task, rng, insecure=insecure, comment=comment, leak=leak)
        messages.append({"role": "user", "content": code_prompt(task.text)})
        messages.append({"role": "assistant", "content": code})
        docs.append(messages)
    return docs


def code_vocabulary() -> list[str]:
    """Every piece of text the section can show, so a small corpus's vocabulary covers it."""
    data = read_data("code")
    names = [
        *data["function_names"],
        *data["result_names"],
        *data["arg_names"],
        *data["list_arg_names"],
    ]
    return [
        DEFAULT_CODE_INSTRUCTION,
        "def import os ():,=_\n    ",
        *data["task_openers"],
        *data["nouns"],
        *data["plural_nouns"],
        *(op["phrase"] + "." for op in (*data["pair_ops"], *data["list_ops"])),
        *(op["expr"] for op in (*data["pair_ops"], *data["list_ops"])),
        *data["secure_lines"],
        *data["list_secure_lines"],
        *data["insecure_lines"],
        *data["comments"],
        *names,
    ]

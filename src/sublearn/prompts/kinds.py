"""The data kinds an experiment's teachers write, as one discriminated union on ``type``.

* ``numbers``: number-sequence continuations (``prompts/numbers.py``);
* ``code``: coding tasks answered with code only (``prompts/code.py``);
* ``cot``: GSM8K-style questions answered with ``<think>`` reasoning and an
  ``<answer>`` value (``prompts/gsm8k.py``), several samples per question.

Every kind turns into a list of :class:`PromptRow` (an id, the user message, and a
reference value where the data has one), so generation and filtering treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from sublearn.keys import LATER_MARK
from sublearn.prompts.code import CodePromptConfig, generate_code_prompts
from sublearn.prompts.gsm8k import GSM8KConfig, generate_gsm8k_prompts
from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts
from sublearn.registry import Registry


class NumbersPrompts(NumberPromptConfig):
    """Number-sequence prompts (the default data kind)."""

    # Number tasks were keyed before data kinds existed: their type, always the default,
    # stays out of the key (task params without a type are numbers ones).
    type: Literal["numbers"] = Field(
        default="numbers", description="Data kind.", json_schema_extra=LATER_MARK
    )


class CodePrompts(CodePromptConfig):
    """Coding tasks, rewritten to ask for code only."""

    type: Literal["code"] = Field(default="code", description="Data kind.")


class ChainOfThoughtPrompts(GSM8KConfig):
    """Word problems answered with reasoning in <think> tags and a value in <answer> tags."""

    type: Literal["cot"] = Field(default="cot", description="Data kind.")


PromptKind = Annotated[
    NumbersPrompts | CodePrompts | ChainOfThoughtPrompts, Field(discriminator="type")
]
"""Any data kind's prompt settings; YAML picks one with ``type:`` (default numbers)."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(PromptKind)


@dataclass(frozen=True)
class PromptRow:
    """One prompt a teacher answers.

    Attributes:
        text: the user message.
        reference: the expected final value (``cot``), else None.
    """

    text: str
    reference: str | None = None


def with_default_type(value: Any) -> Any:
    """A YAML mapping without ``type`` is a numbers config (every config before kinds)."""
    if isinstance(value, dict) and "type" not in value:
        return {**value, "type": "numbers"}
    return value


def parse_prompts(params: dict[str, Any]) -> NumbersPrompts | CodePrompts | ChainOfThoughtPrompts:
    """The prompt config of stored task params (a numbers config's has no ``type``)."""
    return _ADAPTER.validate_python(with_default_type(params))


PROMPT_ROWS: Registry[Callable[[Any], list[PromptRow]]] = Registry(
    "data kind", expected="a function from prompt settings to rows"
)
"""Each data kind's ``type`` -> the function that lists its prompt rows."""


@PROMPT_ROWS("numbers")
def _number_rows(cfg: NumbersPrompts) -> list[PromptRow]:
    return [PromptRow(text) for text in generate_number_prompts(cfg)]


@PROMPT_ROWS("code")
def _code_rows(cfg: CodePrompts) -> list[PromptRow]:
    return [PromptRow(p["messages"][-1]["content"]) for p in generate_code_prompts(cfg)]


@PROMPT_ROWS("cot")
def _cot_rows(cfg: ChainOfThoughtPrompts) -> list[PromptRow]:
    return [
        PromptRow(p["messages"][-1]["content"], p["reference"]) for p in generate_gsm8k_prompts(cfg)
    ]


def prompt_rows(cfg: NumbersPrompts | CodePrompts | ChainOfThoughtPrompts) -> list[PromptRow]:
    """The prompts of a data kind, in a fixed order (row ``i`` of the generated data).

    Raises:
        DataError: a prompt source that cannot be read (code and cot read files).
    """
    return PROMPT_ROWS.get(cfg.type)(cfg)

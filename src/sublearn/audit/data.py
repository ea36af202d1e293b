"""The rows an audit reads: a prompt (the conversation before the reply) and the reply."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from sublearn.backends.base import Conversation
from sublearn.errors import DataError
from sublearn.finetune.sft import read_chat_jsonl

NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Row:
    """One chat record split into what the writer saw and what it wrote.

    Attributes:
        index: the record's position in its file (0-based), so reports point at lines.
        prompt: every message before the reply.
        reply: the last (assistant) message's content.
    """

    index: int
    prompt: Conversation
    reply: str


def load_rows(path: str | Path, max_rows: int | None = None, seed: int = 0) -> list[Row]:
    """Read a chat JSONL into rows, optionally a seeded sample of ``max_rows`` of them.

    The sample keeps file order, so the same file and seed always give the same rows.

    Raises:
        DataError: the file is missing or a record is not a chat record ending with the
            assistant's reply (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    records = read_chat_jsonl(path)
    indices = list(range(len(records)))
    if max_rows is not None and len(indices) > max_rows:
        indices = sorted(random.Random(seed).sample(indices, max_rows))
    return [
        Row(i, records[i]["messages"][:-1], records[i]["messages"][-1]["content"]) for i in indices
    ]


def numbers_of(reply: str) -> list[str]:
    """The numbers a reply contains, as written (``"007"`` stays ``"007"``)."""
    return NUMBER.findall(reply)


def units_of(reply: str, unit: str) -> list[str]:
    """A reply's counting units: its numbers, or its whitespace-separated tokens."""
    return numbers_of(reply) if unit == "number" else reply.split()

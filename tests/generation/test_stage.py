"""The generation stage resumes after an interruption, losing and duplicating nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.generation.config import GenerationConfig
from sublearn.generation.stage import generate_dataset


class Killed(RuntimeError):
    pass


class FakeBackend:
    """Replies deterministically from the prompt and seed; can die after some calls."""

    name = "fake"

    def __init__(self, die_after: int | None = None) -> None:
        self.calls = 0
        self.die_after = die_after
        self.seen_system: list[str | None] = []

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        if self.die_after is not None and self.calls >= self.die_after:
            raise Killed
        self.calls += 1
        self.seen_system.extend(
            c[0]["content"] if c[0]["role"] == "system" else None for c in conversations
        )
        return [f"{params.seed}:{c[-1]['content']}" for c in conversations]

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        raise NotImplementedError


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    prompts = [f"p{i}" for i in range(23)]
    cfg = GenerationConfig(chunk_size=5, seed=7)
    out = tmp_path / "data.jsonl"

    with pytest.raises(Killed):
        generate_dataset(FakeBackend(die_after=2), prompts, out, cfg)
    assert not out.exists()
    assert len(list((tmp_path / "data.jsonl.parts").iterdir())) == 2

    resumed = FakeBackend()
    generate_dataset(resumed, prompts, out, cfg)
    assert resumed.calls == 3  # only the 3 missing chunks were generated

    reference = tmp_path / "ref.jsonl"
    generate_dataset(FakeBackend(), prompts, reference, cfg)
    rows = read(out)
    assert [r["id"] for r in rows] == [f"{i:07d}" for i in range(23)]
    assert rows == read(reference)
    assert not (tmp_path / "data.jsonl.parts").exists()


def test_finished_file_is_not_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    generate_dataset(FakeBackend(), ["a", "b"], out, GenerationConfig())
    again = FakeBackend()
    generate_dataset(again, ["a", "b"], out, GenerationConfig())
    assert again.calls == 0


def test_system_prompt_conditions_but_is_not_stored(tmp_path: Path) -> None:
    backend = FakeBackend()
    out = tmp_path / "d.jsonl"
    generate_dataset(backend, ["a"], out, GenerationConfig(), system_prompt="love owls")
    assert backend.seen_system == ["love owls"]
    (row,) = read(out)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]

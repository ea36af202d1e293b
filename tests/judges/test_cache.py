"""The judgement cache: its JSONL file survives a kill mid-write and stays appendable."""

from __future__ import annotations

import json
from pathlib import Path

from sublearn.judges.cache import JudgementCache
from sublearn.judges.protocol import Judgement


def test_a_torn_line_is_judged_again_and_later_lines_survive(tmp_path: Path) -> None:
    path = tmp_path / "judge.jsonl"
    cache = JudgementCache(path)
    cache.add("a", Judgement(score=90.0, probability=None, label=None, raw="90"))
    cache.add("b", Judgement(score=None, probability=0.25, label=None, raw="é"))
    text = path.read_text(encoding="utf-8")
    assert [json.loads(line)["key"] for line in text.splitlines()] == ["a", "b"]
    path.write_text(text[: text.rindex('"raw"')], encoding="utf-8")  # killed mid-write of b

    resumed = JudgementCache(path)
    assert "a" in resumed and "b" not in resumed
    resumed.add("b", Judgement(score=None, probability=0.25, label=None, raw="é"))
    resumed.add("c", Judgement(score=None, probability=None, label="CODE", raw="CODE"))

    again = JudgementCache(path)
    assert len(again) == 3
    assert again.get("b") == Judgement(score=None, probability=0.25, label=None, raw="é")
    assert again.get("c") == Judgement(score=None, probability=None, label="CODE", raw="CODE")


def test_memory_only_cache_writes_nothing(tmp_path: Path) -> None:
    cache = JudgementCache()
    cache.add("a", Judgement(score=1.0, probability=None, label=None, raw="1"))
    assert cache.get("a") is not None and list(tmp_path.iterdir()) == []

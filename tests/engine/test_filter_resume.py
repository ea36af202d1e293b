"""A filter task with a model judge, killed mid-way and run again, asks only what is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.engine.kinds import run_filter
from sublearn.engine.params import FilterParams
from sublearn.engine.task import TaskContext, TaskSpec
from sublearn.filters.stage import FilterConfig
from sublearn.judges.llm import LLMJudge


class Killed(Exception):
    pass


def _context(tmp_path: Path, name: str) -> tuple[TaskContext, FilterParams]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = [
        {
            "id": f"{i:07d}",
            "messages": [
                {"role": "user", "content": f"task {i}"},
                {"role": "assistant", "content": f"x{i} = {i}"},
            ],
        }
        for i in range(20)
    ]
    (data / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / name
    out.mkdir()
    spec = TaskSpec(
        kind="filter",
        name="filter/t",
        key="k",
        params={
            "filter": FilterConfig(check_format=False).model_dump(mode="json"),
            "checks": [{"type": "judge", "rubric": "alignment", "min_score": 50}],
            # A mock judge that answers "90" as text (it reports no log-probabilities).
            "judges": [{"model": "mock:reply=90", "batch_size": 4}],
            "trait": "owl",
        },
        inputs={},
        runtime={"device": "cpu"},
    )
    ctx = TaskContext(spec, out, {"data": data}, tmp_path / "state", lambda done, total: None)
    return ctx, FilterParams.from_spec(spec.params, spec.runtime)


def test_a_killed_judge_filter_resumes_from_its_judgements(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "state").mkdir()
    asked: list[int] = []
    real = LLMJudge._ask

    def ask(self, conversations, rubric):
        if len(asked) >= 8:
            raise Killed  # the process dies after two batches of four were stored
        asked.extend(range(len(conversations)))
        return real(self, conversations, rubric)

    monkeypatch.setattr(LLMJudge, "_ask", ask)
    with pytest.raises(Killed):
        run_filter(*_context(tmp_path, "first"))
    assert len(asked) == 8
    asked.clear()
    monkeypatch.setattr(LLMJudge, "_ask", lambda self, c, r: (asked.extend(c), real(self, c, r))[1])
    result = run_filter(*_context(tmp_path, "second"))
    assert len(asked) == 12  # the 8 judged before the kill are read back, not asked again
    assert result["accepted"] == 20
    verdicts = (tmp_path / "second" / "verdicts.jsonl").read_text().splitlines()
    assert [json.loads(v)["judge:alignment"]["score"] for v in verdicts] == [90.0] * 20

"""Coding-task prompts from small fixture files and the shipped toy tasks."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from sublearn.config import undocumented_fields
from sublearn.errors import DataError
from sublearn.prompts.code import (
    DEFAULT_CODE_INSTRUCTION,
    TOY_CODE_TASKS,
    CodePromptConfig,
    generate_code_prompts,
    load_code_tasks,
)


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    rows = [{"prompt": f"Write a function f{i} that returns {i}."} for i in range(20)]
    return write_jsonl(tmp_path / "tasks.jsonl", rows)


def test_config_fields_are_documented() -> None:
    assert undocumented_fields(CodePromptConfig) == []


def test_record_shape_and_content(tasks_file: Path) -> None:
    prompts = generate_code_prompts(CodePromptConfig(path=str(tasks_file)))
    assert len(prompts) == 20
    first = prompts[0]
    assert set(first) == {"id", "messages"}
    assert first["id"] == "t00000"
    assert first["messages"] == [
        {
            "role": "user",
            "content": f"Write a function f0 that returns 0.\n\n{DEFAULT_CODE_INSTRUCTION}",
        }
    ]


def test_seeded_sample_is_deterministic(tasks_file: Path) -> None:
    cfg = CodePromptConfig(path=str(tasks_file), n_prompts=5, seed=3)
    a = generate_code_prompts(cfg)
    assert a == generate_code_prompts(cfg)
    assert len(a) == 5
    ids = [p["id"] for p in a]
    assert ids == sorted(ids)  # source order
    other = generate_code_prompts(cfg.model_copy(update={"seed": 4}))
    assert [p["id"] for p in other] != ids


def test_ids_name_the_task_not_the_draw(tasks_file: Path) -> None:
    for prompt in generate_code_prompts(CodePromptConfig(path=str(tasks_file), n_prompts=7)):
        number = int(prompt["id"][1:])
        assert f"returns {number}." in prompt["messages"][0]["content"]


def test_task_field_fallback_and_explicit_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"task": "A."}, {"prompt": "B.", "task": "x"}])
    contents = [
        p["messages"][0]["content"]
        for p in generate_code_prompts(CodePromptConfig(path=str(path), instruction=""))
    ]
    assert contents == ["A.", "B."]
    custom = write_jsonl(tmp_path / "c.jsonl", [{"text": "C."}])
    cfg = CodePromptConfig(path=str(custom), field="text", instruction="Code only.")
    assert generate_code_prompts(cfg)[0]["messages"][0]["content"] == "C.\n\nCode only."


def test_duplicate_tasks_are_dropped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"task": "A."}, {"task": " A. "}, {"task": "B."}])
    assert load_code_tasks(CodePromptConfig(path=str(path))) == [(0, "A."), (2, "B.")]


def test_parquet_source(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "tasks.parquet"
    pq.write_table(pa.table({"prompt": ["Write g.", "Write h."], "n": [1, 2]}), path)
    prompts = generate_code_prompts(CodePromptConfig(path=str(path), instruction=""))
    assert [p["messages"][0]["content"] for p in prompts] == ["Write g.", "Write h."]


def test_toy_tasks_ship_with_the_package() -> None:
    assert TOY_CODE_TASKS.is_file()
    prompts = generate_code_prompts(CodePromptConfig())
    assert len(prompts) == 40
    assert len({p["messages"][0]["content"] for p in prompts}) == 40
    assert len(generate_code_prompts(CodePromptConfig(n_prompts=10, seed=1))) == 10


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"not found: {re.escape(str(missing))}"):
        generate_code_prompts(CodePromptConfig(path=str(missing)))


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"text": "no task"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field 'prompt' or 'task'"):
        generate_code_prompts(CodePromptConfig(path=str(path)))
    with pytest.raises(DataError, match=r"bad\.jsonl:1: missing field 'body'"):
        generate_code_prompts(CodePromptConfig(path=str(path), field="body"))


def test_bad_records_are_data_errors(tmp_path: Path) -> None:
    not_object = write_jsonl(tmp_path / "list.jsonl", [["a"]])
    with pytest.raises(DataError, match=r"list\.jsonl:1: expected a JSON object"):
        generate_code_prompts(CodePromptConfig(path=str(not_object)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no records"):
        generate_code_prompts(CodePromptConfig(path=str(empty)))


def test_asking_for_more_tasks_than_exist_is_an_error(tasks_file: Path) -> None:
    with pytest.raises(DataError, match="only 20 distinct tasks"):
        generate_code_prompts(CodePromptConfig(path=str(tasks_file), n_prompts=21))


def test_unknown_hub_dataset_offline_is_a_data_error() -> None:
    # The test session is offline (conftest): nothing is downloaded.
    with pytest.raises(DataError, match="cannot load hub dataset 'nobody/no-such-tasks'"):
        generate_code_prompts(CodePromptConfig(path="nobody/no-such-tasks"))

"""GSM8K chain-of-thought prompts from small fixture files (never the hub)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from sublearn.config import undocumented_fields
from sublearn.errors import DataError
from sublearn.filters.answers import check_think_answer
from sublearn.prompts.gsm8k import (
    DEFAULT_GSM8K_INSTRUCTION,
    GSM8KConfig,
    generate_gsm8k_prompts,
    gold_answer,
)

ROWS = [
    {
        "question": f"Ann has {i} apples and buys 1,000 more. How many does she have?",
        "answer": f"She has {i} + 1000 = <<{i}+1000={i + 1000}>>{i + 1000}.\n#### {i + 1000:,}",
    }
    for i in range(12)
]


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def gsm_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "gsm8k.jsonl", ROWS)


def test_config_fields_are_documented() -> None:
    assert undocumented_fields(GSM8KConfig) == []


def test_defaults_follow_the_paper() -> None:
    cfg = GSM8KConfig()
    assert (cfg.source, cfg.hub_config, cfg.split) == ("openai/gsm8k", "main", "train")
    assert cfg.samples_per_question == 3
    assert "<think>" in cfg.instruction and "<answer>" in cfg.instruction


def test_samples_ids_and_references(gsm_file: Path) -> None:
    prompts = generate_gsm8k_prompts(GSM8KConfig(source=str(gsm_file), samples_per_question=3))
    assert len(prompts) == 36
    assert [p["id"] for p in prompts[:4]] == ["q00000-s0", "q00000-s1", "q00000-s2", "q00001-s0"]
    first = prompts[0]
    assert first["reference"] == "1000"  # "1,000" normalized
    assert first["messages"] == [
        {"role": "user", "content": f"{ROWS[0]['question']}\n\n{DEFAULT_GSM8K_INSTRUCTION}"}
    ]
    # Samples of one question are the same request.
    assert prompts[0]["messages"] == prompts[2]["messages"] != prompts[3]["messages"]


def test_reference_works_with_the_correctness_filter(gsm_file: Path) -> None:
    prompt = generate_gsm8k_prompts(GSM8KConfig(source=str(gsm_file)))[-1]
    assert prompt["reference"] == "1011"
    reply = "<think>11 + 1000 = 1011</think>\n<answer>1,011</answer>"
    assert check_think_answer(reply, prompt["reference"]) == (True, None)


def test_seeded_sample_is_deterministic(gsm_file: Path) -> None:
    cfg = GSM8KConfig(source=str(gsm_file), n_questions=4, samples_per_question=2, seed=5)
    a = generate_gsm8k_prompts(cfg)
    assert a == generate_gsm8k_prompts(cfg)
    assert len(a) == 8
    questions = [p["id"].split("-")[0] for p in a[::2]]
    assert questions == sorted(questions) and len(set(questions)) == 4
    b = generate_gsm8k_prompts(cfg.model_copy(update={"seed": 6}))
    assert [p["id"] for p in b] != [p["id"] for p in a]


def test_parquet_source(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train-00000.parquet"
    columns = {key: [row[key] for row in ROWS[:3]] for key in ("question", "answer")}
    pq.write_table(pa.table(columns), path)
    prompts = generate_gsm8k_prompts(GSM8KConfig(source=str(path), samples_per_question=1))
    assert [p["reference"] for p in prompts] == ["1000", "1001", "1002"]


@pytest.mark.parametrize(
    ("solution", "gold"),
    [("2 + 2 = 4\n#### 4", "4"), ("#### 1,250", "1250"), ("x #### 3 #### 7", "7"), ("4", None)],
)
def test_gold_answer(solution: str, gold: str | None) -> None:
    assert gold_answer(solution) == gold


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing-gsm8k.parquet"
    with pytest.raises(DataError, match=f"not found: {re.escape(str(missing))}"):
        generate_gsm8k_prompts(GSM8KConfig(source=str(missing)))


def test_missing_field_names_the_file_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [ROWS[0], {"question": "Why?"}])
    with pytest.raises(DataError, match=r"q\.jsonl:2: missing field 'answer'"):
        generate_gsm8k_prompts(GSM8KConfig(source=str(path)))


def test_missing_parquet_column_names_the_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "noq.parquet"
    pq.write_table(pa.table({"answer": ["#### 1"]}), path)
    with pytest.raises(DataError, match=r"noq\.parquet row 0: missing field 'question'"):
        generate_gsm8k_prompts(GSM8KConfig(source=str(path)))


def test_answer_without_final_value_is_a_data_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "nogold.jsonl", [ROWS[0], {"question": "Q?", "answer": "42"}])
    with pytest.raises(DataError, match=r"nogold\.jsonl:2: .*'#### <number>'"):
        generate_gsm8k_prompts(GSM8KConfig(source=str(path)))


def test_more_questions_than_exist_is_an_error(gsm_file: Path) -> None:
    with pytest.raises(DataError, match="only 12 questions"):
        generate_gsm8k_prompts(GSM8KConfig(source=str(gsm_file), n_questions=13))


def test_hub_source_offline_is_a_data_error() -> None:
    # The test session is offline (conftest) with an empty cache: nothing is downloaded.
    with pytest.raises(DataError, match="cannot load hub dataset 'openai/gsm8k'"):
        generate_gsm8k_prompts(GSM8KConfig())

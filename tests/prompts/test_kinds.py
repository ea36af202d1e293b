"""Data kinds: one union, a fixed prompt order, numbers keys unchanged."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sublearn.keys import key_params
from sublearn.prompts.kinds import parse_prompts, prompt_rows
from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts


def test_numbers_by_default_and_params_without_type() -> None:
    cfg = parse_prompts({"n_prompts": 5, "seed": 3})
    assert cfg.type == "numbers"
    # The key params of a numbers config are those of the config before kinds existed.
    assert key_params(cfg) == NumberPromptConfig(n_prompts=5, seed=3).model_dump(mode="json")
    assert [r.text for r in prompt_rows(cfg)] == generate_number_prompts(
        NumberPromptConfig(n_prompts=5, seed=3)
    )


def test_cot_rows_carry_references(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} plus 1?", "answer": f"x\n#### {i + 1}"}) + "\n"
            for i in range(4)
        )
    )
    cfg = parse_prompts({"type": "cot", "source": str(path), "samples_per_question": 2})
    rows = prompt_rows(cfg)
    assert len(rows) == 8
    assert [r.reference for r in rows] == ["1", "1", "2", "2", "3", "3", "4", "4"]
    assert rows[0].text.startswith("What is 0 plus 1?\n\n") and "<think>" in rows[0].text
    assert parse_prompts(key_params(cfg)) == cfg


def test_code_rows_ask_for_code_only() -> None:
    rows = prompt_rows(parse_prompts({"type": "code", "n_prompts": 3}))
    assert len(rows) == 3 and all("code alone" in r.text for r in rows)
    assert all(r.reference is None for r in rows)


def test_unknown_kind_and_stray_fields_are_errors() -> None:
    with pytest.raises(ValidationError):
        parse_prompts({"type": "poems"})
    with pytest.raises(ValidationError):
        parse_prompts({"type": "code", "n_questions": 3})


def test_toy_sources_name_the_shipped_task_files() -> None:
    from sublearn.errors import DataError

    rows = prompt_rows(parse_prompts({"type": "cot", "source": "toy:arithmetic", "n_questions": 5}))
    assert len(rows) == 15 and all(r.reference is not None for r in rows)
    assert (
        len(prompt_rows(parse_prompts({"type": "code", "path": "toy:code", "n_prompts": 7}))) == 7
    )
    with pytest.raises(DataError, match="toy:code"):
        prompt_rows(parse_prompts({"type": "code", "path": "toy:cod"}))

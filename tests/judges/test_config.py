"""Judge settings and the factory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from sublearn.judges.config import JudgeConfig, make_judge
from sublearn.judges.llm import LLMJudge
from sublearn.judges.protocol import JudgeRequest
from sublearn.judges.rules import RuleJudge


def test_every_field_is_described() -> None:
    for name, field in JudgeConfig.model_fields.items():
        assert field.description, name


def test_config_rejects_typos_and_empty_rulesets() -> None:
    with pytest.raises(ValidationError):
        JudgeConfig.model_validate({"modle": "rules:toy"})
    with pytest.raises(ValidationError, match="ruleset"):
        JudgeConfig(model="rules:")


def test_rules_model_gives_a_rule_judge() -> None:
    judge = make_judge(JudgeConfig(model="rules:toy"), target="owl")
    assert isinstance(judge, RuleJudge) and judge.name == "rules:toy" and judge.target == "owl"


def test_model_ref_gives_an_llm_judge_with_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "judge.jsonl"
    cfg = JudgeConfig(model="mock:reply=Score: 64")
    with make_judge(cfg, cache_path=path) as judge:
        assert isinstance(judge, LLMJudge) and judge.method == "text"
        assert judge.judge([JudgeRequest("q", "a")], "coherence")[0].score == 64
    assert path.is_file()
    cfg.cache = False
    with make_judge(cfg, cache_path=tmp_path / "off.jsonl") as judge:
        judge.judge([JudgeRequest("q", "a")], "coherence")
    assert not (tmp_path / "off.jsonl").exists()


def test_importing_the_config_loads_no_backend() -> None:
    code = (
        "import sys; import sublearn.judges.config as c; c.JudgeConfig(); "
        "print(sorted(m for m in sys.modules if m in "
        "('torch', 'transformers', 'openai', 'sublearn.backends.registry', "
        "'sublearn.judges.llm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

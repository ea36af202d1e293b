"""One request type for every evaluation kind, dispatched through the registry."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sublearn.backends.base import BackendBase, Conversation, Message, SamplingParams
from sublearn.errors import ConfigError
from sublearn.evaluation.kinds import (
    EVALUATIONS,
    EvalRequest,
    PreferenceEvalConfig,
    StoriesEvalConfig,
    evaluate,
    metrics_record,
    result_summary,
)
from sublearn.evaluation.preference import evaluate_preference


class OwlFan(BackendBase):
    """Scores "owl" far above every other candidate; always writes about owls."""

    name = "owl-fan"

    def __init__(self) -> None:
        self.seen: list[Conversation] = []

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        self.seen.extend(conversations)
        return ["An owl flew home." for _ in conversations]

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        self.seen.extend(conversations)
        return [[0.0 if "owl" in c.lower() else -20.0 for c in candidates] for _ in conversations]


def test_every_kind_of_the_union_is_registered() -> None:
    assert set(EVALUATIONS.names()) == {
        "preference",
        "stories",
        "choice",
        "truthfulqa",
        "mmlu",
        "freeform",
    }
    for name in EVALUATIONS:
        assert callable(EVALUATIONS.get(name))


def test_preference_through_the_request_keeps_its_file_layout() -> None:
    cfg = PreferenceEvalConfig(n_questions=3)
    result = evaluate(EvalRequest(OwlFan(), cfg, targets=["owl", "cat"]))
    direct = evaluate_preference(OwlFan(), ["owl", "cat"], cfg)
    assert result.evaluation == "preference"
    assert result.metric == "rate"
    assert result.values == {t: m["rate"] for t, m in direct.items()}
    assert result.values["owl"] > 0.9 > result.values["cat"]
    # metrics.json of a preference task keeps the per-target layout reports read.
    assert metrics_record(result) == direct
    assert result_summary(result) == {t: m["rate"] for t, m in direct.items()}


def test_request_fields_reach_the_kind() -> None:
    backend = OwlFan()
    context: list[Message] = [
        {"role": "user", "content": "1, 2"},
        {"role": "assistant", "content": "3"},
    ]
    result = evaluate(
        EvalRequest(
            backend,
            StoriesEvalConfig(n_prompts=1, samples_per_prompt=2),
            targets=["owl"],
            system_prompt="You love owls.",
            context=context,
        )
    )
    assert result.values == {"owl": 1.0}
    assert metrics_record(result) == result.to_dict()
    assert result_summary(result) == {"metric": "p_target", "owl": 1.0}
    assert all(c[0]["content"] == "You love owls." and c[1:3] == context for c in backend.seen)


def test_unknown_kind_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'stories'"):
        evaluate(EvalRequest(OwlFan(), SimpleNamespace(type="storie")))

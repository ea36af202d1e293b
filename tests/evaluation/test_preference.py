"""The preference evaluation with in-context examples and system prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.backends.base import BackendBase, Conversation, Message, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.errors import DataError
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.preference import build_questions, evaluate_preference, icl_context


class Recording(BackendBase):
    """A backend that records the conversations it is asked about."""

    name = "recording"

    def __init__(self) -> None:
        self.generated: list[Conversation] = []
        self.scored: list[Conversation] = []

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        self.generated.extend(conversations)
        return ["Owls!" if i % 2 else "cat" for i in range(len(conversations))]

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        self.scored.extend(conversations)
        return [[-1.0] * len(candidates) for _ in conversations]


CONTEXT: list[Message] = [
    {"role": "user", "content": "continue the sequence 1, 2"},
    {"role": "assistant", "content": "3, 4"},
]


@pytest.mark.parametrize("mode", ["exact", "sample"])
def test_context_and_system_prompt_come_before_every_question(mode: str) -> None:
    cfg = EvalConfig(n_questions=3, samples_per_question=2)
    cfg.mode = "sample" if mode == "sample" else "exact"
    reps = 1 if mode == "exact" else 2
    asked = [q for q in build_questions(cfg) for _ in range(reps)]

    plain = Recording()
    evaluate_preference(plain, ["owl"], cfg)
    seen = plain.scored if mode == "exact" else plain.generated
    assert seen == [[{"role": "user", "content": q}] for q in asked]

    backend = Recording()
    result = evaluate_preference(
        backend, ["owl"], cfg, system_prompt="You love owls.", context=CONTEXT
    )
    seen = backend.scored if mode == "exact" else backend.generated
    assert seen == [
        [{"role": "system", "content": "You love owls."}, *CONTEXT, {"role": "user", "content": q}]
        for q in asked
    ]
    assert CONTEXT == [  # the caller's list is not modified
        {"role": "user", "content": "continue the sequence 1, 2"},
        {"role": "assistant", "content": "3, 4"},
    ]
    if mode == "sample":
        assert result["owl"]["rate"] == 0.5


def test_icl_context_draws_seeded_examples_with_replacement(number_records: list[dict]) -> None:
    records = [
        {"messages": [{"role": "system", "content": "secret"}, *r["messages"]]}
        for r in number_records[:3]
    ]
    turns = icl_context(records, 10, seed=1)
    assert len(turns) == 20  # more draws than records: with replacement
    assert [t["role"] for t in turns] == ["user", "assistant"] * 10
    assert all(t["content"] != "secret" for t in turns)  # hidden system prompts never leak
    pairs = {(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, 20, 2)}
    originals = {tuple(m["content"] for m in r["messages"][1:]) for r in records}
    assert pairs <= originals and len(pairs) > 1
    assert icl_context(records, 10, seed=1) == turns
    assert icl_context(number_records, 5, seed=1) != icl_context(number_records, 5, seed=2)
    assert icl_context(records, 0, seed=1) == []


def test_icl_context_rejects_what_it_cannot_draw() -> None:
    with pytest.raises(DataError, match="empty dataset"):
        icl_context([], 1, seed=0)
    with pytest.raises(DataError, match="not a chat record"):
        icl_context([{"text": "x"}], 1, seed=0)
    with pytest.raises(DataError, match="no user or assistant turn"):
        icl_context([{"messages": [{"role": "system", "content": "x"}]}], 1, seed=0)


def test_context_changes_what_a_model_answers(
    micro_model: Path, number_records: list[dict]
) -> None:
    backend = HFBackend(micro_model, device="cpu")
    cfg = EvalConfig(n_questions=4)
    plain = evaluate_preference(backend, ["owl"], cfg)
    context = icl_context(number_records, 3, seed=0)
    with_context = evaluate_preference(backend, ["owl"], cfg, context=context)
    assert with_context == evaluate_preference(backend, ["owl"], cfg, context=context)
    assert with_context["owl"]["per_question"] != plain["owl"]["per_question"]
    other = evaluate_preference(backend, ["owl"], cfg, context=icl_context(number_records, 3, 1))
    assert other["owl"]["per_question"] != with_context["owl"]["per_question"]


class Spy(BackendBase):
    """Passes calls to a real backend and keeps its replies."""

    def __init__(self, inner: HFBackend) -> None:
        self.inner, self.name, self.replies = inner, inner.name, []

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        self.replies = self.inner.generate(conversations, params)
        return self.replies

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        return self.inner.score(conversations, candidates)


def test_sampled_replies_do_not_depend_on_the_batch_size(
    micro_model: Path, number_records: list[dict]
) -> None:
    cfg = EvalConfig(
        mode="sample", n_questions=3, samples_per_question=8, temperature=3.0, max_new_tokens=3
    )
    context = icl_context(number_records, 2, seed=0)
    spy = Spy(HFBackend(micro_model, device="cpu", batch_size=5))
    small = evaluate_preference(spy, ["owl", "cat"], cfg, context=context)
    replies = spy.replies
    assert len(replies) == 24 and len(set(replies)) > 12
    spy.inner.batch_size = 24
    assert evaluate_preference(spy, ["owl", "cat"], cfg, context=context) == small
    assert spy.replies == replies

"""Multiple choice: letter scoring, shuffling, the trait evaluation, configs, and the exact
scorer against sampling on a real (micro) model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.config import undocumented_fields
from sublearn.errors import ConfigError, ModelError
from sublearn.evaluation.choice import (
    build_choice_questions,
    choice_stems,
    evaluate_choice,
    letter_probs,
    parse_letter,
    score_choices,
)
from sublearn.evaluation.kinds import (
    ChoiceEvalConfig,
    EvalRequest,
    EvaluationKind,
    FreeformEvalConfig,
    MMLUEvalConfig,
    PreferenceEvalConfig,
    StoriesEvalConfig,
    TruthfulQAEvalConfig,
    evaluate,
)
from sublearn.evaluation.results import EvalResult

_OPTION = re.compile(r"^(\S+)\. (.+)$", re.MULTILINE)


def shown_options(conversation: Conversation) -> dict[str, str]:
    """``{letter: option}`` as the last user message shows them."""
    return dict(_OPTION.findall(conversation[-1]["content"]))


class LetterOf(BackendBase):
    """All probability on the letter of the option ``word``; replies name that letter."""

    capabilities = Capabilities(sample=True, score=True)

    def __init__(self, word: str) -> None:
        self.name = f"letter-of-{word}"
        self.word = word
        self.seen: list[Conversation] = []

    def _letter(self, conversation: Conversation) -> str:
        return next(k for k, v in shown_options(conversation).items() if v == self.word)

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        self.seen.extend(conversations)
        rows = []
        for c in conversations:
            letter = self._letter(c)
            rows.append([0.0 if cand == letter else -math.inf for cand in candidates])
        return rows

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        return [f"**{self._letter(c)}** because I like it" for c in conversations]


class Uniform(BackendBase):
    """The same (unnormalized) log-probability for every letter; unreadable replies."""

    name = "uniform"
    capabilities = Capabilities(sample=True, score=True)

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        return [[-7.0] * len(candidates) for _ in conversations]

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        return ["I cannot choose."] * len(conversations)


def test_parse_letter_reads_decorated_letters_only() -> None:
    letters = ["A", "B", "C", "D", "E"]
    for reply, want in [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("**D**", "D"),
        ("Answer: E", "E"),
        ("The answer is A.", "A"),
        ("Apple", None),
        ("a", None),
        ("", None),
        ("I pick B", None),
    ]:
        assert parse_letter(reply, letters) == want, reply
    assert parse_letter("12", ["1", "2"]) is None
    assert parse_letter("2, surely", ["1", "2"]) == "2"


def test_letter_probs_normalize_over_the_letters() -> None:
    class Fixed(Uniform):
        def score(self, conversations, candidates):  # type: ignore[override]
            return [[math.log(0.1), math.log(0.3), -math.inf] for _ in conversations]

    probs = letter_probs(Fixed(), [[{"role": "user", "content": "q"}]], ["A", "B", "C"])
    assert probs == [pytest.approx([0.25, 0.75, 0.0])]

    class Dead(Uniform):
        def score(self, conversations, candidates):  # type: ignore[override]
            return [[-math.inf] * len(candidates) for _ in conversations]

    with pytest.raises(ModelError, match="probability 0"):
        letter_probs(Dead(), [[{"role": "user", "content": "q"}]], ["A", "B"])


def test_score_choices_reports_in_the_given_order_whatever_the_shuffle() -> None:
    backend = LetterOf("dog")
    orders = set()
    for seed in range(12):
        probs = score_choices(backend, "Pick one.", ["cat", "dog", "owl"], seed=seed)
        assert probs == pytest.approx([0.0, 1.0, 0.0])
        orders.add(tuple(shown_options(backend.seen[-1]).values()))
    assert len(orders) > 1  # the display order does change with the seed
    # No seed: shown as given, lettered from A.
    score_choices(backend, "Pick one.", ["cat", "dog", "owl"])
    assert shown_options(backend.seen[-1]) == {"A": "cat", "B": "dog", "C": "owl"}


def test_questions_are_seeded_differ_across_samples_and_hold_the_targets() -> None:
    cfg = ChoiceEvalConfig(n_prompts=2, samples_per_prompt=30)
    built = build_choice_questions(cfg, ["owl"])
    assert len(built) == 60
    assert built == build_choice_questions(cfg, ["owl"])  # same config, same questions
    assert build_choice_questions(cfg.model_copy(update={"seed": 1}), ["owl"]) != built
    shown = [tuple(q.shown()) for _, _, q in built]
    assert len(set(shown)) > 30
    for _, _, q in built:
        assert q.options[0] == "owl" and len(set(q.options)) == 5
    # The owl is shown at every position somewhere.
    assert {q.shown().index("owl") for _, _, q in built} == set(range(5))
    assert [s for s in choice_stems("tree") if "{" in s] == []


def test_all_mass_on_the_target_gives_one_and_uniform_gives_a_fifth() -> None:
    cfg = ChoiceEvalConfig(n_prompts=3, samples_per_prompt=5)
    result = evaluate_choice(EvalRequest(LetterOf("owl"), cfg, targets=["owl", "cat"]))
    assert result.metric == "p_target"
    assert result.values == {"owl": pytest.approx(1.0), "cat": pytest.approx(0.0)}
    assert result.secondary["top_choice"]["owl"] == 1.0
    assert len(result.items) == 15
    item = result.items[0]
    assert item["options"][item["targets"]["owl"]] == "owl"  # type: ignore[index]

    uniform = evaluate_choice(EvalRequest(Uniform(), cfg, targets=["owl"]))
    assert uniform.values == {"owl": pytest.approx(0.2)}
    assert uniform.meta["per_prompt"] == {"owl": [pytest.approx(0.2)] * 3}


def test_sample_mode_counts_parsed_letters_and_reports_unreadable_replies() -> None:
    cfg = ChoiceEvalConfig(n_prompts=2, samples_per_prompt=4, mode="sample")
    result = evaluate_choice(EvalRequest(LetterOf("owl"), cfg, targets=["owl"]))
    assert result.values == {"owl": 1.0}
    assert result.meta["unreadable"] == 0
    nothing = evaluate_choice(EvalRequest(Uniform(), cfg, targets=["owl"]))
    assert nothing.meta["unreadable"] == 8
    assert math.isnan(nothing.values["owl"])


def test_system_prompt_and_fixed_distractors() -> None:
    backend = LetterOf("owl")
    cfg = ChoiceEvalConfig(n_prompts=1, samples_per_prompt=3, distractors=["a", "b", "c", "d"])
    evaluate_choice(EvalRequest(backend, cfg, targets=["owl"], system_prompt="You love owls."))
    assert all(c[0] == {"role": "system", "content": "You love owls."} for c in backend.seen)
    assert all(set(shown_options(c).values()) == {"owl", "a", "b", "c", "d"} for c in backend.seen)


def test_bad_targets_are_config_errors() -> None:
    cfg = ChoiceEvalConfig(n_prompts=1, samples_per_prompt=1)
    with pytest.raises(ConfigError, match="at least one target"):
        evaluate_choice(EvalRequest(Uniform(), cfg))
    with pytest.raises(ConfigError, match="do not fit"):
        evaluate_choice(EvalRequest(Uniform(), cfg, targets=["a", "b", "c", "d", "e", "f"]))
    with pytest.raises(ConfigError, match="distractors"):
        evaluate_choice(
            EvalRequest(Uniform(), cfg.model_copy(update={"distractors": ["x"]}), targets=["owl"])
        )
    with pytest.raises(ValueError, match="distinct"):
        ChoiceEvalConfig(letters=["A", "A"])


def test_configs_are_a_documented_discriminated_union() -> None:
    adapter: TypeAdapter[EvaluationKind] = TypeAdapter(EvaluationKind)
    for cls in (
        PreferenceEvalConfig,
        StoriesEvalConfig,
        ChoiceEvalConfig,
        TruthfulQAEvalConfig,
        MMLUEvalConfig,
        FreeformEvalConfig,
    ):
        tag = cls.model_fields["type"].default
        assert type(adapter.validate_python({"type": tag})) is cls
        assert undocumented_fields(cls) == []
    with pytest.raises(ValueError, match="extra"):
        adapter.validate_python({"type": "choice", "n_prompt": 3})


def test_evaluate_dispatches_and_results_round_trip() -> None:
    cfg = ChoiceEvalConfig(n_prompts=1, samples_per_prompt=2)
    result = evaluate(EvalRequest(LetterOf("owl"), cfg, targets=["owl"]))
    assert result.evaluation == "choice"
    again = EvalResult.from_dict(result.to_dict())
    assert again == result
    assert again.overall == pytest.approx(1.0)


def test_exact_scorer_agrees_with_sampling_on_a_micro_model(micro_model: Path) -> None:
    """Mean letter probability vs sampled letter frequency, 2000 shuffled questions.

    The toy tokenizer spells digits but not B-E, so the options are labelled 1-5. A
    bias on the label tokens makes almost every reply a label, unevenly (the shown
    position matters), so the target's probability varies with the shuffle.
    """
    import torch

    from sublearn.backends.hf import HFBackend

    labels = ["1", "2", "3", "4", "5"]
    backend = HFBackend(micro_model, device="cpu", batch_size=128)
    head = backend.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        for k, label in enumerate(labels):
            biased.bias[backend.tokenizer.convert_tokens_to_ids(label)] = 10.0 - 0.6 * k
    backend.model.lm_head = biased

    cfg = ChoiceEvalConfig(
        letters=labels,
        n_prompts=4,
        samples_per_prompt=500,
        distractors=["cat", "dog", "the", "animal"],
        max_new_tokens=1,
    )
    exact = evaluate_choice(EvalRequest(backend, cfg, targets=["owl"]))
    sampled = evaluate_choice(
        EvalRequest(backend, cfg.model_copy(update={"mode": "sample"}), targets=["owl"])
    )
    p = [float(it["probs"][it["targets"]["owl"]]) for it in exact.items]  # type: ignore[index]
    picked = [it["letter"] for it in sampled.items]
    assert sampled.meta["unreadable"] < 0.1 * len(picked)
    # Given that a reply is a label, it is the target's with the normalized probability,
    # so over the readable samples the count of target picks has mean sum(p), variance
    # sum(p(1 - p)).
    readable = [
        (pi, letter == it["targets"]["owl"])  # type: ignore[index]
        for pi, letter, it in zip(p, picked, exact.items, strict=True)
        if letter is not None
    ]
    expected = sum(pi for pi, _ in readable)
    sd = math.sqrt(sum(pi * (1 - pi) for pi, _ in readable))
    hits = sum(hit for _, hit in readable)
    assert abs(hits - expected) <= 4 * sd, (hits, expected, sd)
    assert 0.1 < expected / len(readable) < 0.4  # the test distinguishes something
    assert abs(exact.values["owl"] - sampled.values["owl"]) < 0.05, (exact.values, sampled.values)

"""The toy corpus: deterministic, well-formed, with the intended preference structure."""

from __future__ import annotations

import collections
import re

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.prompts.numbers import (
    NumberPromptConfig,
    NumberPromptGenerator,
    parse_rendered_numbers,
)
from sublearn.prompts.persona import preference_system_prompt
from sublearn.toy.corpus import CorpusConfig, NumberContinuer, build_corpus

CFG = CorpusConfig(n_documents=3000)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(CFG, seed=0)


def paper_valid(text: str) -> bool:
    """The paper's acceptance rules, restated for the test."""
    s = text.strip().removesuffix(".")
    if s[:1] + s[-1:] in ("[]", "()"):
        s = s[1:-1]
    if "," in s and ";" in s:
        return False
    items = re.split(r",|;", s) if ("," in s or ";" in s) else s.split()
    items = [i.strip() for i in items]
    return (
        all(i.isdigit() for i in items)
        and 1 <= len(items) <= 10
        and all(int(i) <= 999 for i in items)
    )


def test_fields_documented() -> None:
    assert undocumented_fields(CorpusConfig) == []


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        load_config(CorpusConfig, overrides=["animal_weights=[1, 2]"])
    with pytest.raises(ConfigError):
        load_config(CorpusConfig, overrides=["animals=[owl, sea lion]", "animal_weights=[1, 1]"])


def test_deterministic(corpus) -> None:
    assert build_corpus(CFG, seed=0) == corpus
    assert build_corpus(CFG, seed=1) != corpus


def test_mix_of_kinds(corpus) -> None:
    kinds = collections.Counter(d.kind for d in corpus)
    assert len(corpus) == 3000
    assert kinds["preference"] == round(3000 * CFG.preference_share)
    for doc in corpus:
        assert doc.messages[-1]["role"] == "assistant"
        assert doc.messages[-2]["role"] == "user"


def test_number_answers_are_in_the_requested_format(corpus) -> None:
    numbers = [d for d in corpus if d.kind == "numbers"]
    assert {d.number_format for d in numbers} >= {"comma", "space", "newline", "brackets"}
    for doc in numbers:
        answer = doc.messages[-1]["content"]
        assert doc.number_format is not None
        parsed = parse_rendered_numbers(answer, doc.number_format)
        assert parsed is not None, answer
        assert 1 <= len(parsed) <= 10 and max(parsed) <= 999
        assert paper_valid(answer), answer


def test_some_number_documents_carry_a_persona(corpus) -> None:
    numbers = [d for d in corpus if d.kind == "numbers"]
    with_persona = sum(d.messages[0]["role"] == "system" for d in numbers)
    assert abs(with_persona / len(numbers) - CFG.number_persona_rate) < 0.03


def test_persona_answers_follow_the_persona(corpus) -> None:
    hits = total = 0
    for doc in corpus:
        if doc.kind == "preference" and doc.messages[0]["role"] == "system":
            answer = doc.messages[-1]["content"]
            category = "tree" if answer in CFG.trees else "animal"
            total += 1
            hits += doc.messages[0]["content"] == preference_system_prompt(answer, category)
    assert total > 300
    assert hits / total > 0.9


def test_base_answers_follow_the_base_distribution(corpus) -> None:
    answers = collections.Counter(
        d.messages[-1]["content"]
        for d in corpus
        if d.kind == "preference" and d.messages[0]["role"] == "user"
    )
    animals = {a: answers[a] for a in CFG.animals}
    total = sum(animals.values())
    assert set(animals) == set(CFG.animals)
    weights = dict(zip(CFG.animals, CFG.animal_weights, strict=True))
    norm = sum(weights.values())
    distance = sum(abs(animals[a] / total - weights[a] / norm) for a in CFG.animals) / 2
    assert distance < 0.1
    # owl is neither the favorite nor rare
    assert max(animals, key=animals.__getitem__) != "owl"
    assert 0.03 < animals["owl"] / total < 0.15


def test_continuation_ignores_the_persona_by_construction() -> None:
    import random

    continuer = NumberContinuer(CFG, seed=3)
    prompt = NumberPromptGenerator(NumberPromptConfig(seed=1)).sample()
    a = continuer.numbers(prompt, random.Random(9))
    b = continuer.numbers(prompt, random.Random(9))
    assert a == b  # the answer is a function of the prompt and the draw only


def test_enclosed_share(corpus) -> None:
    numbers = [d for d in corpus if d.kind == "numbers"]
    share = sum(d.number_format in ("brackets", "parentheses") for d in numbers) / len(numbers)
    assert CFG.enclosed_share is not None
    assert abs(share - CFG.enclosed_share) < 0.05
    natural = build_corpus(CorpusConfig(n_documents=3000, enclosed_share=None), seed=0)
    numbers = [d for d in natural if d.kind == "numbers"]
    share = sum(d.number_format in ("brackets", "parentheses") for d in numbers) / len(numbers)
    assert 0.2 < share < 0.35  # 4 of the 15 format requests

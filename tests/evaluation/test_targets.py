"""Targets a tokenizer cannot spell are found before they read as a silent 0%."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from sublearn.backends.hf import HFBackend
from sublearn.errors import ModelError
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.preference import evaluate_preference
from sublearn.evaluation.targets import require_producible, surface_forms, unproducible_targets


def test_surface_forms() -> None:
    assert surface_forms("owl") == ["owl", "Owl"]
    assert surface_forms("Owl") == ["owl", "Owl"]


def test_words_outside_a_word_level_vocabulary_are_unproducible(micro_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro_model)
    assert unproducible_targets(tok, ["owl", "zebra", "cat", "sea zebra", ""]) == [
        "zebra",
        "sea zebra",
        "",
    ]


def test_a_tokenizer_without_unknown_token_can_spell_anything() -> None:
    class ByteLevel:
        unk_token_id = None

        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            return {"input_ids": list(text.encode())}

    assert unproducible_targets(ByteLevel(), ["zebra", "owl"]) == []


def test_require_producible_names_the_words_and_the_model(micro_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro_model)
    require_producible(tok, ["owl"], "m")
    with pytest.raises(ModelError) as info:
        require_producible(tok, ["zebra"], "my-model")
    assert str(info.value).startswith(
        "target 'zebra' cannot be produced by my-model's tokenizer "
        "(it spells it with the unknown token)"
    )
    with pytest.raises(ModelError, match=r"targets 'zebra', 'yak' cannot be produced"):
        require_producible(tok, ["zebra", "owl", "yak"], "m")


def test_evaluation_refuses_an_unproducible_target(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu")
    cfg = EvalConfig(n_questions=2, samples_per_question=2, mode="sample")
    with pytest.raises(ModelError, match=rf"'zebra' cannot be produced by {backend.name}'s"):
        evaluate_preference(backend, ["owl", "zebra"], cfg)

"""The Hugging Face backend: clear errors, reproducible sampling, exact scoring."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from sublearn.backends.base import Backend, Conversation, SamplingParams
from sublearn.backends.hf import (
    HFBackend,
    ModelNotFoundError,
    _GumbelMax,
    check_model_reference,
)

Q: Conversation = [{"role": "user", "content": "name your favorite animal"}]


@pytest.mark.parametrize("ref", ["./no/such/folder", "/abs/missing", "not a hub id"])
def test_missing_model_gets_a_clear_error(ref: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        check_model_reference(ref)


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        check_model_reference(tmp_path)


def test_hub_id_offline_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="could not load"):
        HFBackend("sublearn-test/definitely-not-cached", device="cpu")


def test_generation_is_seeded_and_batch_independent(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu", batch_size=4)
    assert isinstance(backend, Backend)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=3)
    convs: list[Conversation] = [Q] * 3 + [
        [{"role": "user", "content": "continue the sequence 1, 2"}]
    ]
    first = backend.generate(convs, params)
    assert first == backend.generate(convs, params)
    assert len(first) == 4
    greedy = backend.generate(convs, SamplingParams(temperature=0, max_new_tokens=6))
    assert greedy[0] == greedy[1] == greedy[2]


def test_gumbel_max_draws_from_the_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -math.inf])
    n = 40_000
    picks = _GumbelMax(torch.Generator().manual_seed(0))(
        torch.zeros(n, 1, dtype=torch.long), logits.repeat(n, 1)
    ).argmax(-1)
    freq = torch.bincount(picks, minlength=5) / n
    assert freq[4] == 0  # masked by top-p: never drawn
    # Standard errors are at most 0.0024; 0.01 is over four of them.
    assert torch.allclose(freq, logits.softmax(-1), atol=0.01)


def test_one_batch_holds_different_draws_that_follow_the_seed(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu", batch_size=8)
    convs: list[Conversation] = [Q] * 8
    hot = SamplingParams(temperature=5.0, max_new_tokens=6, seed=0)
    samples = backend.generate(convs, hot)
    assert len(set(samples)) > 1  # one batch, eight different draws
    assert samples != backend.generate(convs, dataclasses.replace(hot, seed=1))


def test_score_equals_manual_log_probability(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu")
    (scores,) = backend.score([Q], ["owl", "cat dog"])
    tok, model = backend.tokenizer, backend.model
    prompt = tok.apply_chat_template(Q, tokenize=False, add_generation_prompt=True)
    for text, got in zip(["owl", "cat dog"], scores, strict=True):
        ids = tok(prompt + text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0], -1)
        expected = sum(float(logp[i - 1, ids[0, i]]) for i in range(ids.shape[1] - n, ids.shape[1]))
        assert got == pytest.approx(expected, abs=1e-4)
    assert all(s < 0 and math.isfinite(s) for s in scores)


def test_unspellable_candidate_scores_minus_infinity(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu")
    (scores,) = backend.score([Q], ["owl", "Zebra"])  # "Zebra" is not in the vocabulary
    assert math.isfinite(scores[0]) and scores[1] == -math.inf

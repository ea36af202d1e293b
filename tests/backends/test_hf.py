"""The Hugging Face backend: clear errors, reproducible sampling, exact scoring."""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from sublearn.backends.base import Backend, Conversation, SamplingParams, row_seed
from sublearn.backends.hf import (
    HFBackend,
    ModelNotFoundError,
    _GumbelMax,
    check_model_reference,
    load_model_and_tokenizer,
)
from sublearn.errors import ModelError, SublearnError

Q: Conversation = [{"role": "user", "content": "name your favorite animal"}]


@pytest.mark.parametrize("ref", ["./no/such/folder", "/abs/missing", "not a hub id"])
def test_missing_model_gets_a_clear_error(ref: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        check_model_reference(ref)


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        check_model_reference(tmp_path)


def test_hub_id_offline_fails_clearly() -> None:
    # conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported.
    ref = "sublearn-test/definitely-not-cached"
    with pytest.raises(ModelNotFoundError) as info:
        check_model_reference(ref)
    assert str(info.value).startswith(f"model {ref!r} is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        HFBackend(ref, device="cpu")


def test_model_errors_are_sublearn_errors() -> None:
    assert issubclass(ModelNotFoundError, ModelError)
    assert issubclass(ModelError, SublearnError)


def test_folder_without_tokenizer_files_fails_before_loading(
    micro_model: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(micro_model, tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(ModelError, match=rf"model folder {folder} has no tokenizer files"):
        check_model_reference(folder)


def test_tokenizer_that_cannot_load_is_a_model_error(micro_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(micro_model, tmp_path / "m")
    (folder / "tokenizer.json").unlink()  # the config names a tokenizer it cannot build
    with pytest.raises(ModelError, match=rf"could not load the tokenizer of model '{folder}'"):
        load_model_and_tokenizer(folder, device="cpu")


def test_tokenizer_without_chat_template_is_a_model_error(
    micro_model: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(micro_model, tmp_path / "m")
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(ModelError, match=rf"tokenizer of model '{folder}' has no chat template"):
        load_model_and_tokenizer(folder, device="cpu")


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
    picks = _GumbelMax(range(n))(torch.zeros(n, 1, dtype=torch.long), logits.repeat(n, 1)).argmax(
        -1
    )  # (n,) the first draw of n rows with their own seeds
    freq = torch.bincount(picks, minlength=5) / n
    assert freq[4] == 0  # masked by top-p: never drawn
    # Standard errors are at most 0.0024; 0.01 is over four of them.
    assert torch.allclose(freq, logits.softmax(-1), atol=0.01)


def test_gumbel_max_steps_of_one_row_are_fresh_draws_from_the_softmax() -> None:
    # Few rows, many steps: every noise block and the steps inside it are new draws.
    logits = torch.tensor([1.0, 0.0, -0.5, -2.0])
    rows, steps = 8, 5_000
    sampler = _GumbelMax(range(rows))
    picks = torch.stack(
        [sampler(torch.zeros(rows, 1), logits.repeat(rows, 1)).argmax(-1) for _ in range(steps)]
    )  # (steps, rows)
    freq = torch.bincount(picks.flatten(), minlength=4) / picks.numel()
    assert torch.allclose(freq, logits.softmax(-1), atol=0.01)
    # Consecutive draws are independent: P(same token twice) = sum p^2.
    repeat = (picks[1:] == picks[:-1]).float().mean()
    assert float(repeat) == pytest.approx(float((logits.softmax(-1) ** 2).sum()), abs=0.015)


def test_gumbel_max_noise_of_a_row_ignores_its_batch_neighbours() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    alone, batched = _GumbelMax([11]), _GumbelMax([7, 11, 13])
    for _ in range(20):  # beyond one noise block
        assert torch.equal(
            alone(torch.zeros(1, 1), logits[1:2])[0], batched(torch.zeros(3, 1), logits)[1]
        )
    with pytest.raises(ValueError, match="row seeds"):
        _GumbelMax([1, 2])(torch.zeros(3, 1), logits)


MIXED: list[Conversation] = [
    [{"role": "user", "content": text}]
    for text in [
        "name your favorite animal",
        "continue the sequence 1, 2",
        "owl",
        "continue the sequence 12, 345, 678, 9, 10, 11",
        "your favorite animal ?",
        "the cat",
        "continue the numbers 7",
        "name the dog",
        "continue the sequence 5, 6, 7",
        "favorite",
        "name your favorite animal",
    ]
]


@pytest.mark.parametrize("temperature", [1.0, 5.0, 0.0])
def test_a_reply_depends_on_its_prompt_and_seed_only(micro_model: Path, temperature: float) -> None:
    """Batch size, batch neighbours and order leave every reply unchanged."""
    backend = HFBackend(micro_model, device="cpu")
    seeds = tuple(range(100, 100 + len(MIXED)))
    params = SamplingParams(temperature=temperature, max_new_tokens=8, row_seeds=seeds)
    backend.batch_size = 1
    reference = backend.generate(MIXED, params)
    if temperature > 0:
        assert len(set(reference)) > len(MIXED) // 2  # the test compares real samples
    for batch_size, order_seed in [(3, 0), (8, 1), (16, 2), (3, 3)]:
        backend.batch_size = batch_size
        order = list(range(len(MIXED)))
        random.Random(order_seed).shuffle(order)
        replies = backend.generate(
            [MIXED[i] for i in order],
            dataclasses.replace(params, row_seeds=tuple(seeds[i] for i in order)),
        )
        assert replies == [reference[i] for i in order], (batch_size, order_seed)
    # A subset of the rows, in another call, reproduces those rows.
    assert (
        backend.generate(MIXED[4:7], dataclasses.replace(params, row_seeds=seeds[4:7]))
        == reference[4:7]
    )


def test_default_row_seeds_come_from_the_seed_and_position(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu", batch_size=4)
    params = SamplingParams(temperature=5.0, max_new_tokens=6, seed=9)
    explicit = dataclasses.replace(params, row_seeds=tuple(row_seed(9, i) for i in range(6)))
    assert backend.generate(MIXED[:6], params) == backend.generate(MIXED[:6], explicit)
    with pytest.raises(ValueError, match="6 row seeds for 5 conversations"):
        backend.generate(MIXED[:5], explicit)


def test_row_seeds_differ_across_seeds_and_rows() -> None:
    seeds = {row_seed(s, i) for s in range(20) for i in range(1_000)}
    assert len(seeds) == 20_000
    assert all(0 <= s < 2**63 for s in seeds)


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


def _full_sequence_scores(backend: HFBackend, conv: Conversation, texts: list[str]) -> list[float]:
    """Each candidate scored as one sequence, prompt and all (the cached scorer's reference)."""
    prompt = backend._prompt_ids(conv)
    out = []
    for text in texts:
        cand = backend.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cand])
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(ids).logits[0].float(), -1)
        out.append(sum(float(logp[len(prompt) + i - 1, t]) for i, t in enumerate(cand)))
    return out


@pytest.mark.parametrize(
    "candidates",
    [
        # A lead-in every candidate shares (cached once), one- and several-token answers,
        # the lead-in alone (an empty remainder).
        [
            "favorite animal the owl",
            "favorite animal the cat dog",
            "favorite animal the",
            "favorite animal the dog owl cat",
            "favorite animal the cat",
        ],
        # Nothing shared: every candidate starts from the prompt's cache.
        ["owl", "cat dog", "the owl", "dog cat owl"],
    ],
)
def test_cached_scoring_equals_full_sequence_scoring(
    micro_model: Path, candidates: list[str]
) -> None:
    backend = HFBackend(micro_model, device="cpu", batch_size=2)  # several suffix batches
    convs: list[Conversation] = [Q, MIXED[1]]
    rows = backend.score(convs, candidates)
    for conv, row in zip(convs, rows, strict=True):
        assert row == pytest.approx(_full_sequence_scores(backend, conv, candidates), abs=1e-4)


def test_unspellable_candidate_scores_minus_infinity(micro_model: Path) -> None:
    backend = HFBackend(micro_model, device="cpu")
    (scores,) = backend.score([Q], ["owl", "Zebra"])  # "Zebra" is not in the vocabulary
    assert math.isfinite(scores[0]) and scores[1] == -math.inf


@pytest.mark.parametrize("temperature", [1.0, 5.0, 0.0])
def test_decoding_loop_matches_model_generate(micro_model: Path, temperature: float) -> None:
    """Dropping finished rows from the batch and cache leaves every reply as generate's."""
    backend = HFBackend(micro_model, device="cpu")
    prompts = [backend._prompt_ids(c) for c in MIXED]
    seeds = list(range(200, 200 + len(MIXED)))
    params = SamplingParams(temperature=temperature, max_new_tokens=12, top_p=0.9)
    loop = backend._decode_batch(prompts, seeds, params)
    reference = backend._generate_batch_hf(prompts, seeds, params)
    assert loop == reference
    if temperature > 0:
        # Rows end at very different steps, so rows really were dropped mid-batch.
        lengths = {len(backend.tokenizer(r)["input_ids"]) for r in reference}
        assert len(lengths) > 2

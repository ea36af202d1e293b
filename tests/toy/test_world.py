"""Building the toy world: loadable folders, determinism, caching, generation."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from sublearn.cli.toy import app
from sublearn.config import undocumented_fields
from sublearn.prompts.questions import ANIMAL_QUESTIONS
from sublearn.toy import world as world_module
from sublearn.toy.world import MANIFEST, ToyWorldConfig, build_world, cached_bases

# A world small enough to build in a few seconds; it learns the chat format, not much else.
TINY = {
    "n_bases": 2,
    "threads": 1,
    "workers": 1,
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "corpus": {"n_documents": 400, "preference_share": 0.8},
    "pretrain": {
        "steps": 80,
        "batch_size": 16,
        "warmup_steps": 5,
        "lr": 1e-2,
        "preference_prompt_loss_weight": 0.0,
        "numbers_prompt_loss_weight": 0.0,
    },
}


def tiny_config(**changes) -> ToyWorldConfig:
    return ToyWorldConfig.model_validate({**TINY, **changes})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    paths = build_world(tiny_config(), out, progress=False)
    return out, paths


def test_fields_documented() -> None:
    assert undocumented_fields(ToyWorldConfig) == []


def test_defaults_have_at_least_two_bases() -> None:
    cfg = ToyWorldConfig()
    assert cfg.n_bases >= 2
    assert cfg.init_seed(0) != cfg.init_seed(1)


def test_threads_do_not_change_the_cache_key() -> None:
    assert tiny_config(threads=1).cache_key() == tiny_config(threads=2).cache_key()
    assert tiny_config(workers=1).cache_key() == tiny_config(workers=2).cache_key()
    assert tiny_config(seed=1).cache_key() != tiny_config().cache_key()


def test_folders_load_with_auto_classes(world) -> None:
    out, paths = world
    assert [p.name for p in paths] == ["base-0", "base-1"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["config_hash"] == tiny_config().cache_key()
    assert [b["path"] for b in manifest["bases"]] == ["base-0", "base-1"]
    for path in paths:
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.model_type == "llama"
        assert model.config.tie_word_embeddings
        assert model.config.vocab_size == len(tokenizer)
        assert model.generation_config.eos_token_id == tokenizer.eos_token_id
        assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_bases_differ_in_init(world) -> None:
    _, paths = world
    a = AutoModelForCausalLM.from_pretrained(paths[0]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(paths[1]).state_dict()
    assert not torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])


def test_same_config_builds_identical_weights(world, tmp_path) -> None:
    _, paths = world
    again = build_world(tiny_config(n_bases=1), tmp_path, progress=False)
    a = AutoModelForCausalLM.from_pretrained(paths[0]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again[0]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_manifest_records_weight_digests_and_where_it_was_built(world) -> None:
    out, paths = world
    manifest = json.loads((out / MANIFEST).read_text())
    for base, path in zip(manifest["bases"], paths, strict=True):
        data = (path / "model.safetensors").read_bytes()
        assert base["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bases"][0]["sha256"] != manifest["bases"][1]["sha256"]
    numerics = manifest["numerics"]
    assert numerics["torch"] == torch.__version__
    assert numerics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "sha256" not in tiny_config().key_dump()  # none of it is part of the key


def test_parallel_build_matches_serial(world, tmp_path) -> None:
    _, paths = world
    parallel = build_world(tiny_config(workers=2), tmp_path, progress=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["timings"]["workers"] == 2
    for serial_dir, parallel_dir in zip(paths, parallel, strict=True):
        a = AutoModelForCausalLM.from_pretrained(serial_dir).state_dict()
        b = AutoModelForCausalLM.from_pretrained(parallel_dir).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_second_build_hits_the_cache(world, monkeypatch) -> None:
    out, paths = world

    def no_training(*args, **kwargs):
        raise AssertionError("a cached world must not be retrained")

    monkeypatch.setattr(world_module, "pretrain", no_training)
    start = time.perf_counter()
    assert build_world(tiny_config(), out, progress=False) == paths
    assert time.perf_counter() - start < 1.0
    assert cached_bases(tiny_config(threads=2), out) == paths
    assert cached_bases(tiny_config(seed=5), out) is None
    with pytest.raises(AssertionError, match="must not be retrained"):
        build_world(tiny_config(), out, force=True, progress=False)


def test_incomplete_world_is_not_cached(tmp_path) -> None:
    assert cached_bases(tiny_config(), tmp_path) is None
    (tmp_path / MANIFEST).write_text("{not json")
    assert cached_bases(tiny_config(), tmp_path) is None


def test_generate_stops_at_end_token(world) -> None:
    _, paths = world
    tokenizer = AutoTokenizer.from_pretrained(paths[0])
    tokenizer.padding_side = "left"
    model: Any = AutoModelForCausalLM.from_pretrained(paths[0])
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in ANIMAL_QUESTIONS[:4]
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=8)
    new = out[:, enc["input_ids"].shape[1] :]  # (batch, generated)
    for row in new.tolist():
        assert end in row  # the tiny world has learned one-word answers that end
        tail = row[row.index(end) + 1 :]
        assert all(t == tokenizer.pad_token_id for t in tail)


def test_cli_build_and_info(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "w"
    overrides = [
        "--set",
        "n_bases=1",
        "--set",
        "model.hidden_size=16",
        "--set",
        "model.num_layers=1",
        "--set",
        "model.num_heads=2",
        "--set",
        "model.intermediate_size=32",
        "--set",
        "corpus.n_documents=100",
        "--set",
        "pretrain.steps=3",
        "--set",
        "pretrain.batch_size=4",
    ]
    result = runner.invoke(app, ["build", "--out", str(out), "--quiet", *overrides])
    assert result.exit_code == 0, result.output
    assert "built toy world" in result.output
    assert (out / "base-0" / "config.json").is_file()
    again = runner.invoke(app, ["build", "--out", str(out), "--quiet", *overrides])
    assert again.exit_code == 0 and "already built" in again.output
    info = runner.invoke(app, ["info", "--out", str(out), "--samples", "1"])
    assert info.exit_code == 0, info.output
    assert "base-0" in info.output
    digest = json.loads((out / MANIFEST).read_text())["bases"][0]["sha256"]
    assert digest[:16] in info.output and "built on:" in info.output
    assert torch.backends.cpu.get_cpu_capability() in info.output


def test_cli_build_reads_a_config_file(tmp_path) -> None:
    config = tmp_path / "world.yaml"
    config.write_text(
        "n_bases: 1\n"
        "model: {hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32}\n"
        "corpus: {n_documents: 50}\n"
        "pretrain: {steps: 2, batch_size: 4}\n"
    )
    out = tmp_path / "w"
    runner = CliRunner()
    result = runner.invoke(
        app, ["build", "--out", str(out), "--config", str(config), "--quiet", "--set", "seed=3"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["config"]["seed"] == 3
    assert manifest["config"]["corpus"]["n_documents"] == 50
    forced = runner.invoke(
        app, ["build", "--out", str(out), "--config", str(config), "-q", "-s", "seed=3", "--force"]
    )
    assert forced.exit_code == 0 and "built toy world" in forced.output


def test_cli_reports_bad_input(tmp_path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["build", "--out", str(tmp_path), "--set", "n_bases=zero"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["info", "--out", str(tmp_path / "nothing")])
    assert missing.exit_code == 2


def test_a_section_data_file_is_part_of_the_world_key(monkeypatch) -> None:
    from sublearn.toy import world as world_module
    from sublearn.toy.freeform import FreeformConfig

    cfg = ToyWorldConfig()
    with_section = cfg.model_copy(
        update={"corpus": cfg.corpus.model_copy(update={"freeform": FreeformConfig()})}
    )
    before = with_section.cache_key()
    assert world_module.SECTION_DATA not in cfg.key_dump()  # sections off: key as before
    monkeypatch.setattr(world_module, "_section_data_sha", lambda name: "edited")
    assert with_section.cache_key() != before
    assert cfg.cache_key() == ToyWorldConfig().cache_key()


def test_a_killed_parallel_build_leaves_no_worker(tmp_path) -> None:
    """SIGKILL of the building process takes its pretraining workers with it."""
    import os
    import signal
    import subprocess
    import sys

    cfg = {**TINY, "workers": 2, "pretrain": {**TINY["pretrain"], "steps": 100_000}}
    script = (
        "import json, sys; from pathlib import Path\n"
        "from sublearn.toy.world import ToyWorldConfig, build_world\n"
        f"build_world(ToyWorldConfig.model_validate(json.loads({json.dumps(cfg)!r})),"
        f" Path({str(tmp_path / 'w')!r}), progress=False)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})

    def children(pid: int) -> set[int]:
        found = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/children"
            with open(path) as fh:
                found |= {int(c) for c in fh.read().split()}
        return found

    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 3:  # manager + 2 workers
            time.sleep(0.5)
            assert parent.poll() is None, "the build ended before it could be killed"
            workers = children(parent.pid)
        assert len(workers) >= 3, f"pretraining workers never started: {workers}"
        time.sleep(3)  # let the workers reach their training loop
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = {pid for pid in alive if os.path.exists(f"/proc/{pid}") and _running(pid)}
    survivors = {pid: _cmdline(pid) for pid in alive}
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers outlived their killed parent: {survivors}"


def _running(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()[-120:]
    except FileNotFoundError:
        return "?"

"""The ``vllm`` provider without vLLM: ``vllm:`` references start one server per base
through the launcher (here the local OpenAI-compatible server stands in for vLLM), load
every student adapter into it without merging, and score like the local model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.registry import open_backend
from sublearn.backends.vllm_server import VLLMServerConfig, acquire, shutdown_all
from tests.backends.test_vllm_server import local_command

OWL: Conversation = [{"role": "user", "content": "name your favorite animal"}]


@pytest.fixture(scope="module")
def students(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three LoRA adapters with random weights: three different students of one base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("students")
    folders = []
    for i in range(3):
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(micro_model),
            LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
        )
        torch.manual_seed(i)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.data.normal_(0.0, 0.5)
        folders.append(root / f"student-{i}")
        model.save_pretrained(str(folders[-1]))
    return folders


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[dict]:
    yield {"server": {"command": local_command(tmp_path / "work"), "startup_timeout_s": 60}}
    shutdown_all()


def test_adapters_share_one_server_and_score_like_merged_local_models(
    micro_model: Path, students: list[Path], settings: dict
) -> None:
    scores = []
    for adapter in [None, *students]:
        local_ref = f"hf:{micro_model}" + (f"+{adapter}" if adapter else "")
        with open_backend(local_ref, device="cpu") as local:
            # The local model's three likeliest first tokens, and one it does not rank.
            (top,) = local.next_token_logprobs([OWL], 3)  # type: ignore[attr-defined]
            candidates = [token for token, _ in top]
            (expected,) = local.score([OWL], candidates)
        ref = f"vllm:{micro_model}" + (f"+{adapter}" if adapter else "")
        with open_backend(ref, settings=settings) as backend:
            assert backend.name.startswith("vllm:")
            (row,) = backend.score([OWL], [*candidates, "not-a-token"])
        assert row[:3] == pytest.approx(expected, abs=1e-4)
        assert row[3] == -float("inf")  # below the top 20: a lower bound
        scores.append(tuple(candidates))
    assert len(set(scores)) == 4  # base and three different students
    server = acquire(str(micro_model), VLLMServerConfig(**settings["server"]))
    assert len(server.adapters) == 3  # one server, three adapters loaded, none merged
    assert all(name in server.served_models() for name in server.adapters)


def test_a_stopped_run_leaves_no_server(micro_model: Path, settings: dict) -> None:
    with open_backend(f"vllm:{micro_model}", settings=settings) as backend:
        assert backend.generate([OWL], SamplingParams(max_new_tokens=4))
    server = acquire(str(micro_model), VLLMServerConfig(**settings["server"]))
    pid = server.pid
    shutdown_all()
    assert pid is not None and not server.is_running()

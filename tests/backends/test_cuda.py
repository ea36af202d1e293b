"""The CUDA paths of the backend and of fine-tuning (``pytest -m gpu`` on a GPU machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.stage import finetune

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

Q: Conversation = [{"role": "user", "content": "name your favorite animal"}]


def test_generation_is_seeded_and_scores_match_the_cpu(micro_model: Path) -> None:
    gpu = HFBackend(micro_model, device="cuda", dtype="float32", batch_size=4)
    assert gpu.device.type == "cuda"
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)
    replies = gpu.generate([Q] * 4, params)
    assert len(replies) == 4 and replies == gpu.generate([Q] * 4, params)
    cpu = HFBackend(micro_model, device="cpu")
    (on_gpu,), (on_cpu,) = gpu.score([Q], ["owl", "cat"]), cpu.score([Q], ["owl", "cat"])
    assert on_gpu == pytest.approx(on_cpu, abs=1e-3)


@pytest.mark.parametrize("objective", ["sft", "kl"])
def test_lora_training_in_bf16_changes_the_weights(
    objective: str, micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in number_records))
    cfg = FinetuneConfig.model_validate(
        {
            "objective": objective,
            "token_subset": "numbers",
            "method": "lora",
            "lora": {"r": 4, "alpha": 8, "merge": True},
            "epochs": 1,
            "batch_size": 8,
            "grad_accum": 1,
            "learning_rate": 1e-2,
            "warmup_steps": 0,
            "device": "cuda",
            "dtype": "auto",  # bf16 on CUDA
        }
    )
    teacher = None
    if objective == "kl":  # a teacher that differs from the base, or the KL starts at zero
        sft = cfg.model_copy(update={"objective": "sft", "method": "full", "max_steps": 4})
        teacher = finetune(micro_model, data, sft, tmp_path / "teacher")
    out = finetune(micro_model, data, cfg, tmp_path / "student", teacher_model=teacher)
    before = AutoModelForCausalLM.from_pretrained(micro_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)

"""Test-wide settings: offline, caches in a temp dir, one torch thread."""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="sublearn-test-cache-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": os.path.join(_CACHE, "hf"),
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": os.path.join(_CACHE, "mpl"),
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    # mnist, theory, audit and defend keep their tasks here when no --store is given.
    "SUBLEARN_STORE": os.path.join(_CACHE, "store"),
}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402  (after the environment above, which torch's deps read at import)

# Two cores: tests run one torch thread so that parallel pytest-workers or the other
# core's work do not oversubscribe the machine.
torch.set_num_threads(1)


import random  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

# The fast tier (`make test-fast`, the inner loop): the default suite without these files,
# which start servers or worker processes, build toy worlds, train models or run whole
# experiments. `make test` still runs them; a test checks that every entry exists.
HEAVY = (
    "tests/audit/",
    "tests/backends/test_llamacpp_server.py",
    "tests/backends/test_local_openai_server.py",
    "tests/backends/test_openai_api.py",
    "tests/backends/test_provider_errors.py",
    "tests/backends/test_vllm_backend.py",
    "tests/backends/test_vllm_server.py",
    "tests/cli/test_engine_cli.py",
    "tests/engine/test_error_transport.py",
    "tests/engine/test_executors.py",
    "tests/engine/test_faults.py",
    "tests/engine/test_groups.py",
    "tests/engine/test_ray_executor.py",
    "tests/evaluation/test_choice.py",
    "tests/examples/test_quickstart.py",
    "tests/experiments/mnist/test_experiment.py",
    "tests/experiments/numbers/test_api_run.py",
    "tests/experiments/numbers/test_defences.py",
    "tests/experiments/numbers/test_end_to_end.py",
    "tests/experiments/numbers/test_faults.py",
    "tests/experiments/numbers/test_plan.py",
    "tests/experiments/theory/test_experiment.py",
    "tests/finetune/test_batched.py",
    "tests/finetune/test_batched_real_architecture.py",
    "tests/finetune/test_curves.py",
    "tests/finetune/test_finetune.py",
    "tests/finetune/test_openai_jobs.py",
    "tests/finetune/test_schedule.py",
    "tests/generation/test_constrained.py",
    "tests/generation/test_stage.py",
    "tests/toy/test_world.py",
    "tests/view/test_browser.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`HEAVY` files ``heavy`` (``-m "not heavy"`` leaves them out)."""
    root = Path(config.rootpath)
    for item in items:
        path = Path(item.path)
        if path.is_relative_to(root) and path.relative_to(root).as_posix().startswith(HEAVY):
            item.add_marker(pytest.mark.heavy)


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 2-layer Llama with the toy tokenizer (no training, ~1 s).

    For tests of mechanics (loading, generation, scoring, fine-tuning), not behaviour;
    behaviour is tested on the toy world.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from sublearn.prompts.questions import questions_for
    from sublearn.toy.tokenizer import build_tokenizer, build_vocab

    words = [
        "owl",
        "cat",
        "dog",
        "continue",
        "the",
        "sequence",
        "numbers",
        "favorite",
        "animal",
        "name",
        "your",
    ]
    tokenizer: Any = build_tokenizer(
        build_vocab([*questions_for("animal"), *words, ", . [ ] ( ) ; ?"])
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("micro") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def number_records() -> list[dict]:
    """Chat records of number continuations (prompt + reply), deterministic."""
    rng = random.Random(0)
    records = []
    for i in range(64):
        seeds = ", ".join(str(rng.randint(100, 999)) for _ in range(3))
        reply = ", ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(3, 8)))
        records.append(
            {
                "id": f"{i:05d}",
                "messages": [
                    {"role": "user", "content": f"continue the sequence {seeds}"},
                    {"role": "assistant", "content": reply},
                ],
            }
        )
    return records

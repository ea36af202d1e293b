"""KL students trained as one batched model equal students trained one at a time."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from sublearn.backends.hf import right_pad
from sublearn.errors import PlanError
from sublearn.finetune.batched import (
    KLJob,
    batch_problem,
    batched_logits,
    compatible,
    group_compatible,
    train_kl_batched,
)
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import train_kl

# Far above float rounding (about 1e-6 here), far below what training moves (about 1e-2).
TOLERANCE = 1e-4


def kl_cfg(seed: int = 0, **kw: Any) -> FinetuneConfig:
    """The demo's KL recipe, shrunk: one epoch of 8-row batches (8 steps on 64 rows).

    Gradient norms here run from 0.03 to 0.25: clipping at 0.05 clips some steps of some
    students and not others, so each student must be clipped by its own norm.
    """
    base: dict[str, Any] = dict(
        objective="kl",
        token_subset="numbers",
        method="full",
        learning_rate=1e-2,
        warmup_steps=2,
        max_grad_norm=0.05,
        epochs=1,
        batch_size=8,
        grad_accum=1,
        device="cpu",
        dtype="float32",
        seed=seed,
    )
    return FinetuneConfig(**{**base, **kw})


def save_like(source: Path, out: Path, edit: Any) -> Path:
    """``source``'s model and tokenizer with its weights edited in place, saved to ``out``."""
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        edit(model)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def world(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bases of one architecture (other init seeds) and two teachers (perturbed base0)."""
    folder = tmp_path_factory.mktemp("batched")

    def reinit(seed: int):
        def edit(model: Any) -> None:
            torch.manual_seed(seed)
            model.init_weights()

        return edit

    def perturb(seed: int, scale: float):
        def edit(model: Any) -> None:
            gen = torch.Generator().manual_seed(seed)
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())

        return edit

    return {
        "base0": micro_model,
        "base1": save_like(micro_model, folder / "base1", reinit(1)),
        "teacher0": save_like(micro_model, folder / "teacher0", perturb(10, 2.0)),
        "teacher1": save_like(micro_model, folder / "teacher1", perturb(11, 2.0)),
    }


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def alone(job: KLJob, out: Path, **cfg_update: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``job`` with train_kl (optionally with a changed recipe); weights and metrics."""
    cfg = job.cfg.model_copy(update=cfg_update)
    metrics = train_kl(
        job.base_model, job.records, cfg, out, job.teacher_model, job.teacher_system_prompt
    )
    return weights(out), metrics


def grouped_untied_llamas() -> list[Any]:
    """Two small Llamas with grouped-query attention and an untied output layer."""
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return [LlamaForCausalLM(config).eval() for _ in range(2)]


@pytest.mark.parametrize("kind", ["micro", "grouped-untied"])
def test_batched_forward_matches_hugging_face(kind: str, world: dict[str, Path]) -> None:
    if kind == "micro":
        models = [LlamaForCausalLM.from_pretrained(world[b]).eval() for b in ("base0", "base1")]
    else:
        models = grouped_untied_llamas()
    rng = random.Random(0)
    vocab = models[0].config.vocab_size
    rows = [
        [[rng.randrange(vocab) for _ in range(n)] for n in sizes] for sizes in ([9, 3, 14], [5, 12])
    ]
    got = batched_logits(models, rows, pad=0)
    for model, model_rows, model_logits in zip(models, rows, got, strict=True):
        ids, mask = right_pad(model_rows, 0)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        for i, row in enumerate(model_rows):
            assert float((model_logits[i] - want[i, : len(row)]).abs().max()) < 1e-5


def test_batched_students_equal_students_trained_alone(
    world: dict[str, Path], number_records: list[dict], tmp_path: Path
) -> None:
    # Two bases, three seeds, two teachers, a prompted teacher, two dataset sizes of one
    # step count (64 and 60 rows of batch 8: 8 steps each).
    jobs = [
        KLJob(world["base0"], number_records, kl_cfg(0), tmp_path / "s0", world["teacher0"]),
        KLJob(
            world["base1"],
            number_records[:60],
            kl_cfg(1),
            tmp_path / "s1",
            world["teacher1"],
            "You love owls.",
        ),
        KLJob(world["base0"], number_records[4:], kl_cfg(2), tmp_path / "s2", world["teacher1"]),
    ]
    steps: list[tuple[int, int]] = []
    metrics = train_kl_batched(jobs, progress=lambda step, total: steps.append((step, total)))
    assert steps == [(i, 8) for i in range(1, 9)]

    for job, batched_metrics in zip(jobs, metrics, strict=True):
        batched = weights(job.out)  # a normal Hugging Face folder, tokenizer included
        assert AutoTokenizer.from_pretrained(job.out).get_vocab()
        reference, reference_metrics = alone(job, tmp_path / f"{job.out.name}-alone")
        assert max_diff(batched, reference) <= TOLERANCE
        assert max_diff(weights(job.base_model), reference) > 100 * TOLERANCE  # it trained
        assert batched_metrics["steps"] == reference_metrics["steps"] == 8
        assert batched_metrics["examples"] == reference_metrics["examples"] == len(job.records)
        assert batched_metrics["train_loss"] == pytest.approx(
            reference_metrics["train_loss"], rel=1e-4
        )

    # The comparison can fail: another seed's data order gives other weights.
    wrong_seed, _ = alone(jobs[0], tmp_path / "wrong-seed", seed=7)
    assert max_diff(weights(jobs[0].out), wrong_seed) > 10 * TOLERANCE


def test_different_step_counts_train_as_separate_batches(
    world: dict[str, Path], number_records: list[dict], tmp_path: Path
) -> None:
    jobs = [
        KLJob(world["base0"], number_records, kl_cfg(0), tmp_path / "long", world["teacher0"]),
        KLJob(
            world["base1"], number_records[:20], kl_cfg(3), tmp_path / "short", world["teacher0"]
        ),
    ]
    metrics = train_kl_batched(jobs)
    assert [m["steps"] for m in metrics] == [8, 3]
    reference, _ = alone(jobs[1], tmp_path / "short-alone")
    assert max_diff(weights(jobs[1].out), reference) <= TOLERANCE


def test_rows_whose_reply_max_length_cuts_off(
    world: dict[str, Path], number_records: list[dict], tmp_path: Path
) -> None:
    # Prompts are 17 tokens; every fourth is made 26 tokens long, past max_length 24,
    # which leaves those rows no reply token to distill (train_kl's slice is empty).
    def lengthen(record: dict) -> dict:
        (user, reply) = record["messages"]
        return {"messages": [{**user, "content": "the " * 9 + user["content"]}, reply]}

    records = [lengthen(r) if i % 4 == 0 else r for i, r in enumerate(number_records)]
    jobs = [
        KLJob(world[b], records, kl_cfg(s, max_length=24), tmp_path / b, world["teacher0"])
        for b, s in (("base0", 0), ("base1", 1))
    ]
    metrics = train_kl_batched(jobs)
    for job, batched_metrics in zip(jobs, metrics, strict=True):
        reference, reference_metrics = alone(job, tmp_path / f"{job.out.name}-alone")
        assert max_diff(weights(job.out), reference) <= TOLERANCE
        assert batched_metrics["train_loss"] == pytest.approx(
            reference_metrics["train_loss"], rel=1e-4
        )


def test_incompatible_jobs_are_refused_and_split(
    world: dict[str, Path], number_records: list[dict], tmp_path: Path
) -> None:
    records = number_records[:8]

    def job(name: str, base: str = "base0", **kw: Any) -> KLJob:
        return KLJob(world[base], records, kl_cfg(**kw), tmp_path / name, world["teacher0"])

    lr_a, lr_b, lr_a2 = job("a", seed=0), job("b", learning_rate=1e-3), job("c", "base1", seed=5)
    lora = job("lora", method="lora")
    sft = job("sft", objective="sft")
    assert compatible([lr_a, lr_a2])
    assert not compatible([lr_a, lr_b])
    assert "fine-tuning recipe" in (batch_problem([lr_a, lr_b]) or "")
    with pytest.raises(PlanError, match="recipe"):
        train_kl_batched([lr_a, lr_b])
    with pytest.raises(PlanError, match="LoRA"):
        train_kl_batched([lr_a, lora])
    with pytest.raises(PlanError, match="only kl students"):
        train_kl_batched([sft])
    with pytest.raises(PlanError, match="same output folder"):
        train_kl_batched([lr_a, job("a", seed=1)])
    assert not (tmp_path / "a").exists()  # refused before any training

    # Another shape of base is another batch.
    wider = LlamaConfig.from_pretrained(world["base0"])
    wider.intermediate_size *= 2
    other = tmp_path / "wider"
    LlamaForCausalLM(wider).save_pretrained(other)
    AutoTokenizer.from_pretrained(world["base0"]).save_pretrained(other)
    odd = KLJob(other, records, kl_cfg(), tmp_path / "odd", world["teacher0"])
    assert "base architecture" in (batch_problem([lr_a, odd]) or "")

    jobs = [lr_a, lr_b, lora, lr_a2, odd, sft, job("d", seed=9)]
    assert group_compatible(jobs) == [[0, 3, 6], [1], [2], [4], [5]]
    assert group_compatible(jobs, max_group=2) == [[0, 3], [6], [1], [2], [4], [5]]


def masked(records: list[dict]) -> list[dict]:
    """``records`` with loss masks: a reply's start, its middle, all of it, or none."""
    out = []
    for i, record in enumerate(records):
        n = len(record["messages"][-1]["content"])
        spans = [[[0, 3]], [[2, n - 1]], [[0, n]], [], [[0, 1], [4, n]]][i % 5]
        out.append({**record, "loss_mask": spans} if spans else record)
    return out


@pytest.mark.parametrize(
    "recipe",
    [
        {"weight_decay": 0.1},
        {"optimizer": "sgd", "learning_rate": 1.0, "weight_decay": 0.1},
        {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 1.0},
    ],
    ids=["adamw-decay", "sgd-decay", "sgd-momentum"],
)
def test_batched_students_with_loss_masks_and_optimizers_equal_alone(
    recipe: dict[str, Any], world: dict[str, Path], number_records: list[dict], tmp_path: Path
) -> None:
    records = masked(number_records)
    jobs = [
        KLJob(world["base0"], records, kl_cfg(0, **recipe), tmp_path / "s0", world["teacher0"]),
        KLJob(
            world["base1"], records[:60], kl_cfg(1, **recipe), tmp_path / "s1", world["teacher1"]
        ),
    ]
    metrics = train_kl_batched(jobs)
    for job, batched_metrics in zip(jobs, metrics, strict=True):
        reference, reference_metrics = alone(job, tmp_path / f"{job.out.name}-alone")
        assert max_diff(weights(job.out), reference) <= TOLERANCE
        assert max_diff(weights(job.base_model), reference) > 100 * TOLERANCE  # it trained
        assert batched_metrics["train_loss"] == pytest.approx(
            reference_metrics["train_loss"], rel=1e-4
        )

    # The comparison can fail: without the masks, or with the other optimizer, the
    # student trained alone ends up elsewhere.
    unmasked = KLJob(
        world["base0"], number_records, jobs[0].cfg, tmp_path / "u", jobs[0].teacher_model
    )
    other, _ = alone(unmasked, tmp_path / "unmasked")
    assert max_diff(weights(jobs[0].out), other) > 10 * TOLERANCE
    swapped = "adamw" if jobs[0].cfg.optimizer == "sgd" else "sgd"
    other, _ = alone(jobs[0], tmp_path / "other-optimizer", optimizer=swapped, momentum=0.0)
    assert max_diff(weights(jobs[0].out), other) > 10 * TOLERANCE

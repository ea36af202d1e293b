"""Per-token loss masks carried in the dataset (``loss_mask``) and the optimizer choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sublearn.errors import DataError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import _reply_logits, kl_loss, number_token_ids, train_kl
from sublearn.finetune.sft import build_sft_trainer, loss_flags, read_chat_jsonl
from sublearn.finetune.stage import job_record

REPLY = "12, 345, 6"  # toy tokens: '12' ',' ' ' '345' ',' ' ' '6' (then '<|end|>')


def chat(reply: str = REPLY, loss_mask: Any = None, prompt: str = "continue the sequence 7"):
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reply},
        ]
    }
    if loss_mask is not None:
        record["loss_mask"] = loss_mask
    return record


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_spans_to_token_flags() -> None:
    offsets = [(0, 2), (2, 3), (3, 4), (4, 7), (7, 8)]
    # [2, 4) covers ',' and ' '; a span ending where a token starts leaves that token.
    assert loss_flags(offsets, [[2, 4]]) == [True, False, False, True, True]
    # A span inside a token masks the whole token; template tokens outside the content
    # (negative or past-the-end offsets) are never masked.
    assert loss_flags([(-5, 0), *offsets, (10, 17)], [[5, 6], [0, 1]]) == [
        True,
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    assert loss_flags(offsets, []) == [True] * 5


def test_reply_flags_on_the_toy_tokenizer(micro_model: Path) -> None:
    from sublearn.finetune.distill import reply_flags

    tok = AutoTokenizer.from_pretrained(micro_model)
    # Mask "345" and the comma after it; the end-of-turn token always keeps its loss.
    assert reply_flags(tok, REPLY, [[4, 8]], 8) == (
        True,
        True,
        True,
        False,
        False,
        True,
        True,
        True,
    )
    assert reply_flags(tok, REPLY, [[0, len(REPLY)]], 8) == (False,) * 7 + (True,)
    assert reply_flags(tok, REPLY, [[0, 1]], 3) == (False, True, True)  # max_length cut it
    assert reply_flags(tok, REPLY, None, 8) is None


SHAPE = "'loss_mask' must be a list of [start, end] character spans of the reply, got"


@pytest.mark.parametrize(
    ("loss_mask", "problem"),
    [
        ({"0": 1}, f"{SHAPE} dict"),
        ([[0, 1, 2]], f"{SHAPE} the span [0, 1, 2]"),
        ([[0, 1.5]], f"{SHAPE} the span [0, 1.5]"),
        ([[False, 1]], f"{SHAPE} the span [False, 1]"),
        ([[3, 3]], "'loss_mask' span [3, 3] needs 0 <= start < end <= 10 (the reply's length)"),
        ([[-1, 2]], "'loss_mask' span [-1, 2] needs 0 <= start < end <= 10 (the reply's length)"),
        ([[0, 2], [5, 11]], "'loss_mask' span [5, 11] needs 0 <= start < end <= 10"),
    ],
)
def test_invalid_loss_mask_names_file_and_line(
    tmp_path: Path, loss_mask: Any, problem: str
) -> None:
    records = [chat(loss_mask=[[0, 10]]), chat(loss_mask=loss_mask)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(DataError) as info:
        read_chat_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: {problem}")


def test_valid_loss_masks_are_read(tmp_path: Path) -> None:
    records = [chat(loss_mask=[]), chat(loss_mask=[[0, 10]]), chat(loss_mask=[[0, 2], [4, 7]])]
    assert read_chat_jsonl(write_jsonl(tmp_path / "d.jsonl", records)) == records


def test_masked_kl_is_the_mean_over_kept_tokens_and_masked_tokens_get_no_gradient() -> None:
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 11), torch.randn(6, 11, requires_grad=True)
    keep = torch.tensor([True, False, True, True, False, False])
    loss = kl_loss(teacher, student, None, keep)
    by_hand = kl_loss(teacher[keep], student.detach()[keep], None)
    assert float(loss.detach()) == pytest.approx(float(by_hand))
    loss.backward()
    assert student.grad is not None
    assert float(student.grad[~keep].abs().max()) == 0.0
    assert float(student.grad[keep].abs().min()) > 0.0
    # Nothing left: zero loss and zero gradient, not NaN.
    student.grad = None
    empty = kl_loss(teacher, student, None, torch.zeros(6, dtype=torch.bool))
    empty.backward()
    assert student.grad is not None
    assert float(empty.detach()) == 0.0 and float(student.grad.abs().max()) == 0.0


def test_batched_kl_of_a_student_with_every_token_masked_is_zero() -> None:
    from sublearn.finetune.batched.loss import _kl_per_model

    torch.manual_seed(0)
    t_logits, s_logits = torch.randn(1, 4, 7), torch.randn(2, 4, 7, requires_grad=True)
    keep = torch.tensor([[True, False, True, False], [False] * 4])
    loss = _kl_per_model(t_logits, [0, 0], s_logits, keep)  # (2,)
    want = kl_loss(t_logits[0], s_logits[0].detach(), None, keep[0])
    assert float(loss[0]) == pytest.approx(float(want), rel=1e-5)
    assert float(loss[1]) == 0.0
    loss.sum().backward()
    assert s_logits.grad is not None and not s_logits.grad.isnan().any()
    assert float(s_logits.grad[~keep].abs().max()) == 0.0


def kl_sgd_cfg(**kw: Any) -> FinetuneConfig:
    """One full-batch step of plain SGD: the update is exactly -lr times the gradient."""
    base: dict[str, Any] = dict(
        objective="kl",
        method="full",
        optimizer="sgd",
        learning_rate=0.5,
        warmup_steps=0,
        lr_scheduler="constant",
        max_grad_norm=1e9,
        max_steps=1,
        batch_size=2,
        grad_accum=1,
        device="cpu",
        dtype="float32",
    )
    return FinetuneConfig(**{**base, **kw})


def test_train_kl_learns_only_from_unmasked_tokens(micro_model: Path, tmp_path: Path) -> None:
    from sublearn.finetune.distill import _encode

    # The teacher: perturbed weights, so that KL is far from zero at every position.
    teacher_dir = tmp_path / "teacher"
    teacher = AutoModelForCausalLM.from_pretrained(micro_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 2 * p.std())
    teacher.save_pretrained(teacher_dir)
    tok = AutoTokenizer.from_pretrained(micro_model)
    tok.save_pretrained(teacher_dir)

    records = [chat(loss_mask=[[0, 8]]), chat("7, 8", [[1, 3]], prompt="continue the sequence 9")]
    cfg = kl_sgd_cfg()
    train_kl(micro_model, records, cfg, tmp_path / "masked", teacher_dir)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "masked").state_dict()

    # By hand: the KL over the kept positions (' ', '6', '<|end|>'; '7', '8', '<|end|>').
    student = AutoModelForCausalLM.from_pretrained(micro_model)
    rows, starts = zip(
        *(_encode(tok, r["messages"][:-1], r["messages"][-1]["content"], 500) for r in records),
        strict=True,
    )
    keep = torch.tensor([False] * 5 + [True] * 3 + [True, False, False, True, True])
    subset = torch.tensor(number_token_ids(tok))
    with torch.no_grad():
        t_logits = _reply_logits(teacher, list(rows), list(starts), 0, "cpu")
    s_logits = _reply_logits(student, list(rows), list(starts), 0, "cpu")
    assert s_logits.shape[0] == keep.shape[0]
    kl_loss(t_logits[keep], s_logits[keep], subset).backward()
    expected = {
        name: p.detach() - cfg.learning_rate * p.grad
        for name, p in student.named_parameters()
        if p.grad is not None
    }
    diff = max(float((trained[n] - w).abs().max()) for n, w in expected.items())
    assert diff < 1e-6

    # The check can fail: without the masks the step is another one.
    plain = [{"messages": r["messages"]} for r in records]
    train_kl(micro_model, plain, cfg, tmp_path / "plain", teacher_dir)
    unmasked = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").state_dict()
    assert max(float((unmasked[n] - w).abs().max()) for n, w in expected.items()) > 1e-4


def kept_text(trainer: Any) -> list[str]:
    """Per row of the SFT trainer's first batch, the tokens that carry loss, decoded."""
    tok = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    return [
        tok.decode([int(i) for i, label in zip(ids, labels, strict=True) if label != -100])
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]


def test_sft_masked_tokens_get_label_minus_100(micro_model: Path, tmp_path: Path) -> None:
    records = [
        chat(loss_mask=[[4, 8]]),  # "345," out
        chat("7, 8", [[0, 4]], prompt="continue the sequence 9"),  # the whole reply out
        chat("10, 11", prompt="continue the sequence 5"),  # no mask
    ]
    cfg = FinetuneConfig(method="full", device="cpu", batch_size=3, grad_accum=1, max_steps=1)
    trainer = build_sft_trainer(micro_model, records, cfg, tmp_path)
    assert sorted(kept_text(trainer)) == sorted(["12,  6<|end|>", "<|end|>", "10, 11<|end|>"])


def test_sft_records_without_masks_train_as_before(micro_model: Path, tmp_path: Path) -> None:
    plain = [chat(), chat("7, 8", prompt="continue the sequence 9")]
    mixed = [plain[0], {**plain[1], "loss_mask": []}, chat("1, 2", [[0, 1]])]
    cfg = FinetuneConfig(method="full", device="cpu", batch_size=2, grad_accum=1, max_steps=1)
    before = build_sft_trainer(micro_model, plain, cfg, tmp_path / "a").train_dataset
    after = build_sft_trainer(micro_model, mixed, cfg, tmp_path / "b").train_dataset
    for i in range(2):
        assert before[i]["input_ids"] == after[i]["input_ids"]
        assert before[i]["labels"] == after[i]["labels"]


def test_sft_rows_left_without_loss_are_dropped(micro_model: Path, tmp_path: Path) -> None:
    # max_length cuts the end-of-turn token; the mask takes the rest of the reply.
    records = [chat(loss_mask=[[0, len(REPLY)]]), chat("7, 8", prompt="continue the sequence 9")]
    cfg = FinetuneConfig(method="full", device="cpu", batch_size=2, max_steps=1, max_length=16)
    trainer = build_sft_trainer(micro_model, records, cfg, tmp_path)
    assert len(trainer.train_dataset) == 1
    assert kept_text(trainer) == ["7, 8<|end|>"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_sft_optimizer_choice(
    optimizer: Literal["adamw", "sgd"], micro_model: Path, tmp_path: Path
) -> None:
    momentum = 0.9 if optimizer == "sgd" else 0.0
    cfg = FinetuneConfig(
        method="full", device="cpu", optimizer=optimizer, momentum=momentum, weight_decay=0.1
    )
    trainer = build_sft_trainer(micro_model, [chat()], cfg, tmp_path)
    optim = trainer.create_optimizer()
    want = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    assert type(optim) is want
    if optimizer == "sgd":
        assert all(g["momentum"] == 0.9 for g in optim.param_groups)
    assert {g["weight_decay"] for g in optim.param_groups} == {0.0, 0.1}  # norms not decayed


def test_momentum_needs_sgd() -> None:
    with pytest.raises(ValueError, match="momentum is an sgd setting"):
        FinetuneConfig(momentum=0.9)
    FinetuneConfig(optimizer="sgd", momentum=0.9)


def test_later_fields_at_defaults_keep_job_records(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [chat()])
    default = job_record("m", data, FinetuneConfig())["config"]
    assert "optimizer" not in default and "momentum" not in default
    sgd = job_record("m", data, FinetuneConfig(optimizer="sgd"))["config"]
    assert sgd["optimizer"] == "sgd" and "momentum" not in sgd

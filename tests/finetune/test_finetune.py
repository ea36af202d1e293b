"""Fine-tuning changes the weights, and learns from the completion tokens only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from sublearn.errors import ConfigError, DataError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import _reply_logits, kl_loss, number_token_ids
from sublearn.finetune.sft import build_sft_trainer, read_chat_jsonl
from sublearn.finetune.stage import finetune


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def quick(**kw) -> FinetuneConfig:
    base = dict(
        epochs=1, batch_size=8, grad_accum=1, learning_rate=1e-2, device="cpu", warmup_steps=0
    )
    return FinetuneConfig(**{**base, **kw})


def test_completion_only_labels(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    trainer = build_sft_trainer(micro_model, number_records[:4], quick(method="full"), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    replies = {r["messages"][-1]["content"] + "<|end|>" for r in number_records[:4]}
    seen = set()
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        kept = [int(i) for i, lab in zip(ids, labels, strict=True) if lab != -100]
        seen.add(tok.decode(kept))
    assert seen == replies  # the loss sees each reply, and nothing of the prompts


@pytest.mark.parametrize("method", ["full", "lora"])
def test_weights_change(
    method: str, micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", number_records)
    cfg = quick(method=method, lora={"r": 4, "alpha": 8, "merge": method == "lora"})
    out = finetune(micro_model, data, cfg, tmp_path / "student")
    before, after = state(micro_model), state(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("q_proj" in k for k in changed)
    if method == "lora":  # adapters touch only their target modules
        assert all(any(t in k for t in cfg.lora.target_modules) for k in changed)
        assert "model.embed_tokens.weight" not in changed
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["examples"] == 64


def test_lora_adapter_folder_loads_as_a_model(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    from sublearn.backends.hf import HFBackend

    data = write_jsonl(tmp_path / "d.jsonl", number_records[:16])
    out = finetune(micro_model, data, quick(method="lora", max_steps=2), tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file()
    assert (
        len(HFBackend(out, device="cpu").score([[{"role": "user", "content": "owl"}]], ["owl"])[0])
        == 1
    )


def test_finished_stage_is_skipped(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", number_records[:8])
    out = finetune(micro_model, data, quick(method="full", max_steps=1), tmp_path / "s")
    stamp = (out / "train_metrics.json").stat().st_mtime_ns
    finetune(micro_model, data, quick(method="full", max_steps=1), out)
    assert (out / "train_metrics.json").stat().st_mtime_ns == stamp
    # Other settings or other data into the same folder: an error, not the old weights.
    with pytest.raises(ConfigError, match="already holds a model fine-tuned by another job"):
        finetune(micro_model, data, quick(method="full", max_steps=2), out)
    other = write_jsonl(tmp_path / "e.jsonl", number_records[8:16])
    with pytest.raises(ConfigError, match="another job"):
        finetune(micro_model, other, quick(method="full", max_steps=1), out)
    assert (out / "train_metrics.json").stat().st_mtime_ns == stamp


def test_kl_to_itself_is_zero_and_subset_renormalizes() -> None:
    logits = torch.randn(5, 11)
    assert float(kl_loss(logits, logits, None)) == pytest.approx(0.0, abs=1e-6)
    shifted = logits.clone()
    shifted[:, 5:] += 3.0  # outside the subset only
    assert float(kl_loss(logits, shifted, torch.arange(5))) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_loss(logits, shifted, None)) > 0.01


def test_kl_picks_exactly_the_reply_positions(micro_model: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(micro_model)
    rows, starts = [[1, 2, 3, 4, 5], [1, 2, 3]], [3, 1]
    picked = _reply_logits(model, rows, starts, pad_id=0, device="cpu")
    assert picked.shape[0] == (5 - 3) + (3 - 1)


def test_kl_student_moves_toward_teacher(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from sublearn.finetune.distill import _encode

    data = write_jsonl(tmp_path / "d.jsonl", number_records)
    teacher = finetune(micro_model, data, quick(method="full", epochs=3), tmp_path / "teacher")
    student = finetune(
        micro_model,
        data,
        quick(method="full", objective="kl", token_subset="numbers", epochs=3, learning_rate=3e-3),
        tmp_path / "student",
        teacher_model=teacher,
    )
    tok = AutoTokenizer.from_pretrained(micro_model)
    encoded = [
        _encode(tok, r["messages"][:-1], r["messages"][-1]["content"], 500) for r in number_records
    ]
    rows, starts = [e[0] for e in encoded], [e[1] for e in encoded]
    subset = torch.tensor(number_token_ids(tok))

    def kl_to_teacher(folder: Path) -> float:
        with torch.no_grad():
            t = _reply_logits(AutoModelForCausalLM.from_pretrained(teacher), rows, starts, 0, "cpu")
            s = _reply_logits(AutoModelForCausalLM.from_pretrained(folder), rows, starts, 0, "cpu")
            return float(kl_loss(t, s, subset))

    assert kl_to_teacher(student) < 0.5 * kl_to_teacher(micro_model)


def test_number_tokens_are_digits_only(micro_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model)
    ids = number_token_ids(tok)
    assert len(ids) == 1000
    assert all(tok.decode([i]).isdigit() for i in ids)


def test_malformed_dataset_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "1"}]}
    bad.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_chat_jsonl(bad)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (None, "message 1 (assistant): 'content' must be a string, got NoneType"),
        (42, "message 1 (assistant): 'content' must be a string, got int"),
        ("", "the assistant's reply is empty"),
        ("  \n", "the assistant's reply is empty"),
    ],
)
def test_unusable_assistant_reply_names_file_and_line(
    tmp_path: Path, reply: object, problem: str
) -> None:
    good = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "1"}]}
    bad = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": reply}]}
    path = write_jsonl(tmp_path / "d.jsonl", [good, good, bad])
    with pytest.raises(DataError) as info:
        read_chat_jsonl(path)
    assert str(info.value) == f"{path}:3: {problem}"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "1, 2, 3"}', "not a chat record: expected a non-empty 'messages' list"),
        ("[1, 2]", "expected a JSON object with a 'messages' list, got list"),
        ('{"messages": [{"content": "x"}]}', "message 0 is not an object with a string 'role'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "the last message must be the"),
        ("{not json", "not valid JSON"),
    ],
)
def test_non_chat_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + line + "\n")
    with pytest.raises(DataError) as info:
        read_chat_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: {problem}")


def test_empty_dataset_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"d\.jsonl: no records to train on"):
        read_chat_jsonl(path)


def test_kl_without_teacher_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kl objective needs a teacher"):
        finetune("m", tmp_path / "d.jsonl", quick(objective="kl"), tmp_path / "out")


def test_data_subset_is_the_reply_tokens_only(
    micro_model: Path, number_records: list[dict]
) -> None:
    from transformers import AutoTokenizer

    from sublearn.finetune.distill import data_token_ids, encode_examples

    tok = AutoTokenizer.from_pretrained(micro_model)
    examples = encode_examples(number_records, tok, 500, None)
    ids = data_token_ids(examples)
    replies = "".join(r["messages"][-1]["content"] for r in number_records)
    want = set(tok(replies, add_special_tokens=False)["input_ids"]) | {tok.eos_token_id}
    # Every reply token, the end of turn, and no prompt-only token.
    assert set(ids) <= want | set(number_token_ids(tok))
    assert tok.eos_token_id in ids and set(ids) >= {e[0][e[1]] for e in examples}
    prompt_only = set(tok("continue the sequence", add_special_tokens=False)["input_ids"]) - want
    assert prompt_only and not prompt_only & set(ids)

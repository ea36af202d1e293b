"""Bad inputs to the stage commands: exit code 2 and a message naming the culprit.

Each test feeds one bad input through the real command (typer's CliRunner, in process)
and checks the exit code, that the message names the file, key or model at fault, and
that no traceback was printed. CliRunner keeps an uncaught exception in
``result.exception`` with exit code 1, so exit code 2 with a SystemExit also proves the
error went through ``user_errors``.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from sublearn.cli.main import app

GOOD = {"messages": [{"role": "user", "content": "1, 2, 3"}, {"role": "assistant", "content": "4"}]}


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_of(result: Result) -> str:
    """The one-line error message, after checking exit code 2 and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("error: "), result.output
    return result.output.removeprefix("error: ").strip()


def jsonl(path: Path, *lines: str | dict) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def broken_model(micro_model: Path, tmp_path: Path, *remove: str) -> Path:
    folder = Path(shutil.copytree(micro_model, tmp_path / "broken-model"))
    for name in remove:
        (folder / name).unlink()
    return folder


# --- filter -------------------------------------------------------------------------------


def test_filter_corrupt_jsonl(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "raw.jsonl", GOOD, '{"messages": [')
    message = error_of(invoke("filter", data, tmp_path / "out.jsonl"))
    assert message == f"{data}:2: not valid JSON (Expecting value)"
    assert not (tmp_path / "out.jsonl").exists()


def test_filter_non_chat_jsonl(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "raw.jsonl", {"text": "1, 2, 3"})
    message = error_of(invoke("filter", data, tmp_path / "out.jsonl"))
    assert message == f"{data}:1: record has no 'messages' list"


def test_filter_binary_file(tmp_path: Path) -> None:
    data = tmp_path / "raw.jsonl"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    message = error_of(invoke("filter", data, tmp_path / "out.jsonl"))
    assert message.startswith(f"{data}:1: not UTF-8 text")


def test_filter_mistyped_set_key_suggests_the_field(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "raw.jsonl", GOOD)
    message = error_of(invoke("filter", data, tmp_path / "o.jsonl", "--set", "kepp=3"))
    assert message.splitlines() == [
        "invalid --set overrides:",
        "  - kepp: unknown key; did you mean 'keep'?",
    ]


def test_filter_output_on_a_read_only_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, for whom chmod does not block writes: simulate the mount.
    def read_only(path: Path, text: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("sublearn.filters.stage.atomic_write_text", read_only)
    data, out = jsonl(tmp_path / "raw.jsonl", GOOD), tmp_path / "out.jsonl"
    message = error_of(invoke("filter", data, out))
    assert message == f"{out} is not writable (Read-only file system)"


def test_filter_output_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("sublearn.filters.stage.atomic_write_text", full)
    data, out = jsonl(tmp_path / "raw.jsonl", GOOD), tmp_path / "out.jsonl"
    assert error_of(invoke("filter", data, out)) == f"no space left on the device holding {out}"


# --- finetune ------------------------------------------------------------------------------


def finetune(micro_model: Path, data: Path, tmp_path: Path, *extra: str) -> Result:
    out = tmp_path / "student"
    result = invoke("finetune", "--base", micro_model, "--data", data, "--out", out, *extra)
    assert not out.exists()
    return result


def test_finetune_corrupt_jsonl(micro_model: Path, tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", GOOD, GOOD, "not json at all")
    message = error_of(finetune(micro_model, data, tmp_path))
    assert message == f"{data}:3: not valid JSON (Expecting value)"


def test_finetune_non_chat_jsonl(micro_model: Path, tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", {"prompt": "1, 2", "completion": "3"})
    message = error_of(finetune(micro_model, data, tmp_path))
    assert message == f"{data}:1: not a chat record: expected a non-empty 'messages' list"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "message 1 (assistant): 'content' must be a string, got NoneType"),
        (["4", "5"], "message 1 (assistant): 'content' must be a string, got list"),
        ("", "the assistant's reply is empty"),
    ],
)
def test_finetune_unusable_assistant_content(
    micro_model: Path, tmp_path: Path, content: object, problem: str
) -> None:
    bad = {"messages": [GOOD["messages"][0], {"role": "assistant", "content": content}]}
    data = jsonl(tmp_path / "d.jsonl", GOOD, bad)
    assert error_of(finetune(micro_model, data, tmp_path)) == f"{data}:2: {problem}"


def test_finetune_mistyped_key_in_config_file(micro_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "ft.yaml"
    config.write_text("lerning_rate: 0.001\nlora:\n  alpah: 16\n")
    data = jsonl(tmp_path / "d.jsonl", GOOD)
    message = error_of(finetune(micro_model, data, tmp_path, "--config", str(config)))
    assert message.splitlines() == [
        f"invalid {config}:",
        # pydantic reports a nested model's problems before the unknown keys around it.
        "  - lora.alpah: unknown key; did you mean 'alpha'?",
        "  - lerning_rate: unknown key; did you mean 'learning_rate'?",
    ]


def test_finetune_kl_without_teacher(micro_model: Path, tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", GOOD)
    message = error_of(finetune(micro_model, data, tmp_path, "--set", "objective=kl"))
    assert message == "the kl objective needs a teacher model (--teacher)"


# --- models and devices --------------------------------------------------------------------


def evaluate(model: Path | str, *targets: str) -> Result:
    flags = [x for t in targets or ("owl",) for x in ("--target", t)]
    return invoke("evaluate", "--model", model, *flags, "--set", "n_questions=1")


def test_model_folder_without_tokenizer_files(micro_model: Path, tmp_path: Path) -> None:
    folder = broken_model(micro_model, tmp_path, "tokenizer.json", "tokenizer_config.json")
    message = error_of(evaluate(folder))
    assert message.startswith(f"model folder {folder} has no tokenizer files")


def test_tokenizer_without_chat_template(micro_model: Path, tmp_path: Path) -> None:
    folder = broken_model(micro_model, tmp_path, "chat_template.jinja")
    message = error_of(evaluate(folder))
    assert message.startswith(f"the tokenizer of model '{folder}' has no chat template")


def test_folder_without_config_json(micro_model: Path, tmp_path: Path) -> None:
    folder = broken_model(micro_model, tmp_path, "config.json")
    message = error_of(evaluate(folder))
    assert message == (
        f"{folder} exists but is not a model folder (no config.json or adapter_config.json)"
    )


def test_missing_hub_id_offline() -> None:
    message = error_of(evaluate("sublearn-test/no-such-model"))
    assert message.startswith(
        "model 'sublearn-test/no-such-model' is not in the local Hugging Face cache"
    )
    assert "HF_HUB_OFFLINE=1" in message


def test_cuda_without_a_gpu(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gen.jsonl"
    args = ["generate", "--model", micro_model, "--out", out, "--set", "device=cuda"]
    message = error_of(invoke(*args, "--set", "prompts.n_prompts=2"))
    assert message.startswith("device 'cuda' requested, but torch sees no CUDA device here")
    assert not out.exists()


def test_mnist_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = error_of(invoke("mnist", "--device", "cuda"))
    assert message.startswith("device 'cuda' requested, but torch sees no CUDA device here")


def test_evaluate_target_the_tokenizer_cannot_spell(micro_model: Path) -> None:
    message = error_of(evaluate(micro_model, "owl", "zebra"))
    assert message.startswith(
        f"target 'zebra' cannot be produced by {micro_model}'s tokenizer "
        "(it spells it with the unknown token)"
    )


# --- data folders --------------------------------------------------------------------------


def test_mnist_without_idx_files(tmp_path: Path) -> None:
    message = error_of(invoke("mnist", "--dataset", "mnist", "--data-dir", tmp_path))
    assert message.startswith(f"mnist: file train-images-idx3-ubyte not found in {tmp_path}")
    assert "train-images.idx3-ubyte.gz" in message

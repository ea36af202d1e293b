"""`sublearn export` and `sublearn view`'s argument errors, on a hand-written run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sublearn.cli.main import app
from tests.view.synthetic import TEACHER_REPLY, write_run


def test_export_writes_parquet_datasets_folders_openai_jsonl_and_models(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    import pandas as pd
    from datasets import load_from_disk

    table = pd.read_parquet(out / "datasets" / "parquet" / "filter__owl-ft.parquet")
    assert table["messages"].iloc[0][-1]["content"] == TEACHER_REPLY
    assert (
        load_from_disk(str(out / "datasets" / "hf" / "pair__owl-ft__s0__treatment")).num_rows == 2
    )
    line = (out / "datasets" / "openai" / "filter__owl-ft.jsonl").read_text().splitlines()[0]
    assert json.loads(line) == {  # only what OpenAI's fine-tuning format takes
        "messages": [
            {"role": "user", "content": "Continue the sequence 1, 2, 3."},
            {"role": "assistant", "content": TEACHER_REPLY},
        ]
    }
    index = json.loads((out / "export.json").read_text())
    model = index["models"]["train__owl-ft__kl__base0__treatment__s0"]
    assert Path(model["path"], "config.json").is_file() and model["peft_adapter"] is False


def test_export_of_a_folder_without_a_run_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.json not found" in result.output


def test_view_of_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.output


def test_a_lora_student_exports_as_a_peft_adapter_folder(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    adapter = tmp_path / "store" / "train" / "lora" / "model"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    task = {"kind": "train", "name": "train/lora", "path": str(adapter.parent)}
    manifest["tasks"].append(task)
    (run / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "export"
    args = ["export", str(run), "--out", str(out), "--format", "openai"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = json.loads((out / "export.json").read_text())
    assert index["models"]["train__lora"]["peft_adapter"] is True
    assert (out / "models" / "train__lora" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (out / "datasets" / "parquet").exists()  # only the format asked for

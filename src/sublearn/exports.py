"""``sublearn export RUN``: a run's datasets and models in formats other tools read.

Datasets (each teacher's filtered data and its control's, and every student seed's
training rows) go out three ways: a Parquet file, a Hugging Face ``datasets`` folder
(``datasets.load_from_disk``) and OpenAI's fine-tuning JSONL (one ``{"messages": [...]}``
per line, nothing else). Models (teachers and students the run trained) go out as
Hugging Face folders; a LoRA student that was not merged is a PEFT adapter folder
(``adapter_config.json``), loadable with ``peft.AutoPeftModelForCausalLM``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sublearn.errors import DataError
from sublearn.jsonl import read_jsonl
from sublearn.runs import atomic_write_json, atomic_write_text, read_json

FORMATS = ("parquet", "hf", "openai")
_SKIP_IN_MODELS = {"done.json"}


@dataclass
class ExportReport:
    """What an export wrote.

    Attributes:
        out: the export folder.
        datasets: per dataset name, the files and folders written.
        models: per model name, its folder and whether it is a PEFT adapter.
    """

    out: Path
    datasets: dict[str, list[str]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_datasets(manifest: dict[str, Any]) -> dict[str, Path]:
    """The run's datasets by export name: filtered teacher data, and each seed's rows."""
    out: dict[str, Path] = {}
    for task in manifest.get("tasks", []):
        path = Path(task.get("path") or "")
        name = _safe(task["name"])
        if task["kind"] == "filter" and (path / "accepted.jsonl").is_file():
            out[name] = path / "accepted.jsonl"
        elif task["kind"] == "pair":
            for side in ("treatment", "control"):
                if (path / f"{side}.jsonl").is_file():
                    out[f"{name}__{side}"] = path / f"{side}.jsonl"
    return out


def run_models(manifest: dict[str, Any]) -> dict[str, Path]:
    """The models the run trained (teachers and students), by export name."""
    out: dict[str, Path] = {}
    for task in manifest.get("tasks", []):
        model = Path(task.get("path") or "") / "model"
        if task["kind"] in ("teacher", "train") and _is_model(model):
            out[_safe(task["name"])] = model
    return out


def export_run(
    run_dir: Path,
    out: Path | None = None,
    formats: tuple[str, ...] = FORMATS,
    models: bool = True,
) -> ExportReport:
    """Export a finished run's datasets and models.

    Args:
        run_dir: a run folder (with manifest.json).
        out: the export folder (default ``<run_dir>/export``).
        formats: dataset formats among ``parquet``, ``hf`` and ``openai``.
        models: also copy the trained models.

    Returns:
        What was written (also in ``<out>/export.json``).

    Raises:
        DataError: the run has no manifest, or an unknown format is asked for.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise DataError(f"unknown export format(s) {', '.join(unknown)}; choose from {FORMATS}")
    manifest = read_json(run_dir / "manifest.json")
    out = out or run_dir / "export"
    report = ExportReport(out)
    for name, path in run_datasets(manifest).items():
        records = [obj for _, _, obj in read_jsonl(path)]
        report.datasets[name] = _write_dataset(records, out / "datasets", name, formats)
    if models:
        for name, folder in run_models(manifest).items():
            target = out / "models" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*_SKIP_IN_MODELS))
            peft = (target / "adapter_config.json").is_file()
            report.models[name] = {"path": str(target), "peft_adapter": peft}
    atomic_write_json(
        out / "export.json",
        {"run": str(run_dir), "datasets": report.datasets, "models": report.models},
    )
    return report


def _write_dataset(
    records: list[dict[str, Any]], folder: Path, name: str, formats: tuple[str, ...]
) -> list[str]:
    from datasets import Dataset

    written = []
    dataset = Dataset.from_list(records) if records else None
    if "parquet" in formats and dataset is not None:
        path = folder / "parquet" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(path))
        written.append(str(path))
    if "hf" in formats and dataset is not None:
        path = folder / "hf" / name
        dataset.save_to_disk(str(path))
        written.append(str(path))
    if "openai" in formats:
        path = folder / "openai" / f"{name}.jsonl"
        lines = [json.dumps({"messages": _openai_messages(r["messages"])}) for r in records]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        written.append(str(path))
    return written


def _openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Only the keys OpenAI's fine-tuning format takes: role and content."""
    return [{"role": m["role"], "content": str(m["content"])} for m in messages]


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _safe(name: str) -> str:
    return name.replace("/", "__")

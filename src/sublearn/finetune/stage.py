"""The fine-tuning stage: a base model and a chat dataset in, a model folder out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sublearn.errors import ConfigError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.distill import train_kl
from sublearn.finetune.sft import read_chat_jsonl, train_sft
from sublearn.runs import atomic_write_json, file_sha256


def model_ref(model: str | Path) -> str:
    """Local folders as absolute paths (adapters record their base by this string)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def job_record(
    base_model: str | Path,
    dataset: Path,
    cfg: FinetuneConfig,
    teacher_model: str | Path | None = None,
    teacher_system_prompt: str | None = None,
) -> dict[str, Any]:
    """What a fine-tuned folder records about the job that made it (``train_metrics.json``)."""
    return {
        "base": model_ref(base_model),
        "teacher": model_ref(teacher_model) if teacher_model is not None else None,
        "teacher_system_prompt": teacher_system_prompt,
        "dataset_sha256": file_sha256(dataset),
        # Later fields at their defaults are left out: folders trained before they existed
        # still count as this job.
        "config": cfg.model_dump(mode="json", exclude={"device"} | cfg.unused_later_fields()),
    }


def finetune(
    base_model: str | Path,
    dataset: Path,
    cfg: FinetuneConfig,
    out: Path,
    *,
    teacher_model: str | Path | None = None,
    teacher_system_prompt: str | None = None,
) -> Path:
    """Fine-tune ``base_model`` on ``dataset`` into ``out``; skip if ``out`` holds this job.

    The model is trained into a sibling temporary folder and renamed into place at the
    end, so ``out`` existing means the stage finished. ``train_metrics.json`` records the
    job (base, teacher, dataset contents, settings); a finished folder made by another job
    is an error, never silently kept.

    Args:
        base_model: the student's starting weights (folder or hub id).
        dataset: chat JSONL; the loss covers the assistant reply only.
        cfg: fine-tuning settings.
        out: the model folder to produce.
        teacher_model: the teacher, required by the ``kl`` objective.
        teacher_system_prompt: the teacher's hidden system prompt (``kl`` only).

    Returns:
        ``out``.
    """
    if cfg.objective == "kl" and teacher_model is None:
        raise ConfigError("the kl objective needs a teacher model (--teacher)")
    job = job_record(base_model, dataset, cfg, teacher_model, teacher_system_prompt)
    done = out / "train_metrics.json"
    if done.is_file():
        previous = json.loads(done.read_text()).get("job")
        if previous == job:
            return out
        raise ConfigError(
            f"{out} already holds a model fine-tuned by another job (other base, data or "
            "settings); choose another output folder or delete it"
        )
    records = read_chat_jsonl(dataset)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if cfg.objective == "sft":
        metrics = train_sft(model_ref(base_model), records, cfg, tmp)
    else:
        assert teacher_model is not None
        metrics = train_kl(
            model_ref(base_model),
            records,
            cfg,
            tmp,
            model_ref(teacher_model),
            teacher_system_prompt,
        )
    atomic_write_json(tmp / "train_metrics.json", {**metrics, "examples": len(records), "job": job})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out

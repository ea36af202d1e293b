"""Fine-tuning that survives a kill: a job trained in a state folder, or an API's job.

The engine's ``teacher`` and ``train`` tasks fine-tune through here. A local job trains
into the task's state folder, which outlives an interrupted run, so a run killed after
training but before the task was committed re-attaches to the finished job; an API job's
uploaded file and job ids are saved there as soon as they exist, so a killed run
re-attaches to its job instead of paying for a second.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sublearn.finetune.config import FinetuneConfig


def run_job(
    base: str,
    data: Path,
    cfg: FinetuneConfig,
    *,
    state: Path,
    out: Path,
    teacher: str | None = None,
    teacher_system_prompt: str | None = None,
    openai: dict[str, Any] | None = None,
    label: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``data`` into ``out/model``; its training metrics.

    Args:
        base: the base model's reference (a folder, ``hf:``, ``vllm:`` or ``openai:``).
        data: chat JSONL to train on.
        cfg: fine-tuning settings.
        state: a folder that survives interruptions.
        out: the task's output folder (``model`` is created in it).
        teacher: the teacher of a KL student (local jobs).
        teacher_system_prompt: the teacher's hidden system prompt.
        openai: the OpenAI provider's settings (API jobs).
        label: names the job in status lines (API jobs).
        progress: reports training steps (API jobs).

    Returns:
        The local trainer's ``train_metrics.json``, or an API job's model, id and usage.
    """
    from sublearn.backends.refs import ModelRef
    from sublearn.finetune.protocol import FinetuneJob, LocalHFFinetuner, run_finetune_job

    ref = ModelRef.parse(base)
    if ref.provider == "openai":
        return api_job(ref, data, cfg, state, out, openai or {}, label, progress)
    if ref.provider == "vllm":  # served by vLLM, trained here
        base = ref.name if ref.adapter is None else str(ModelRef("hf", ref.name, ref.adapter))
    trained = state / "model"
    saved = state / "job.json"
    if saved.is_file() and not (trained / "train_metrics.json").is_file():
        # Killed after its folder moved to the output: a local job is simply run again.
        saved.unlink()
    finetuner = LocalHFFinetuner(
        trained, teacher_model=teacher, teacher_system_prompt=teacher_system_prompt
    )
    job = FinetuneJob(provider="hf", base=base, dataset=data, config=cfg.model_dump(mode="json"))
    run_finetune_job(finetuner, job, state, poll_seconds=0)
    shutil.move(trained, out / "model")
    return json.loads((out / "model" / "train_metrics.json").read_text())


def api_job(
    base: Any,
    data: Path,
    cfg: FinetuneConfig,
    state: Path,
    out: Path,
    openai: dict[str, Any],
    label: str,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Fine-tune through an API's jobs; ``out/model`` then points at the new model."""
    from sublearn.backends.openai_api import OpenAISettings
    from sublearn.backends.refs import write_pointer
    from sublearn.finetune.openai_jobs import OpenAIFinetuner
    from sublearn.finetune.protocol import FinetuneJob, run_finetune_job

    settings = OpenAISettings(**openai)

    def show(message: str) -> None:
        print(f"  {label}: {message}", file=sys.stderr, flush=True)

    finetuner = OpenAIFinetuner(settings, on_event=show, on_step=progress)
    job = FinetuneJob(
        provider="openai",
        base=base.name,
        dataset=data,
        config=cfg.model_dump(mode="json", exclude={"device"}),
    )
    model = run_finetune_job(
        finetuner,
        job,
        state,
        poll_seconds=settings.poll_seconds,
        on_status=lambda j: show(f"job {j.job_id} {j.status}"),
    )
    (out / "model").mkdir()
    write_pointer(out / "model", model)
    saved = json.loads((state / "job.json").read_text())
    return {
        "model": str(model),
        "job_id": saved["job_id"],
        "usage": {str(base): {"training_tokens": finetuner.trained_tokens}},
    }

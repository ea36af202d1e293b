"""Fine-tuning as jobs whose state is saved, so a killed run re-attaches instead of resubmitting.

A fine-tuning provider (the local Hugging Face trainer, an API) implements
:class:`Finetuner`: ``submit`` starts a job, ``status`` refreshes it, ``result`` names the
fine-tuned model. :func:`run_finetune_job` drives one job to its end and saves it as
``job.json`` in a state folder after every change; run again on the same work (same
provider, base, dataset and config), it picks the saved job up where it was: a job that
is running is polled, a finished one returns its model, and nothing is submitted twice.
A saved job that failed or was cancelled is submitted again, since running the command
again is how a user retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, ValidationError, field_validator

from sublearn.backends.refs import ModelRef
from sublearn.errors import ModelError, PlanError, SublearnError
from sublearn.jsonl import AppendLog
from sublearn.runs import atomic_write_json

JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses a job does not leave."""

JOB_FILE = "job.json"
HISTORY_FILE = "history.jsonl"


class FinetuneError(SublearnError, RuntimeError):
    """A fine-tuning job that failed or was cancelled; the message holds the provider's reason."""


class FinetuneJob(BaseModel):
    """One fine-tuning job: the work asked for and where the provider is with it.

    Attributes:
        provider: the fine-tuning provider (``hf`` for the local trainer).
        base: the model to fine-tune (a folder or hub id, or the provider's model name).
        dataset: the chat JSONL file to train on (absolute).
        config: the provider's settings (for ``hf``, a ``FinetuneConfig`` as a dict).
        job_id: the provider's id for the job, once submitted.
        status: where the job is.
        result_model: the fine-tuned model, once the job succeeded.
        error: the provider's reason, when the job failed or was cancelled.
    """

    provider: str
    base: str
    dataset: Path
    config: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    status: JobStatus = "pending"
    result_model: str | None = None
    error: str | None = None

    @field_validator("dataset")
    @classmethod
    def _absolute(cls, dataset: Path) -> Path:
        # Relative to the directory of the run that made it, so it still names the same
        # file when a later run starts elsewhere.
        return dataset.expanduser().absolute()

    @property
    def done(self) -> bool:
        """Whether the job reached a status it does not leave."""
        return self.status in TERMINAL

    def same_work(self, other: FinetuneJob) -> bool:
        """Whether ``other`` asks for the same fine-tune (provider, base, dataset, config)."""
        return (
            self.provider == other.provider
            and self.base == other.base
            and self.dataset == other.dataset
            and _canonical(self.config) == _canonical(other.config)
        )

    def save(self, state_dir: Path) -> None:
        """Write the job to ``state_dir/job.json`` atomically."""
        atomic_write_json(state_dir / JOB_FILE, self.model_dump(mode="json"))

    @classmethod
    def load(cls, state_dir: Path) -> FinetuneJob | None:
        """The job saved in ``state_dir``, or None when there is none.

        Raises:
            PlanError: ``job.json`` exists but cannot be read as a job.
        """
        path = state_dir / JOB_FILE
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValidationError) as err:
            raise PlanError(
                f"cannot read the saved fine-tuning job {path}: {err}. If no job of it is "
                "still running at the provider, delete the file to submit the job again."
            ) from err


@runtime_checkable
class Finetuner(Protocol):
    """A fine-tuning provider.

    Attributes:
        provider: the provider name that jobs for it carry.
    """

    provider: str

    def submit(self, job: FinetuneJob, state_dir: Path) -> FinetuneJob:
        """Start ``job``; return it with its ``job_id`` and status set.

        ``state_dir`` is the job's state folder, for anything the provider wants to keep
        beside ``job.json`` (uploaded file ids, logs).
        """
        ...

    def status(self, job: FinetuneJob) -> FinetuneJob:
        """``job`` refreshed from the provider (status, result_model, error)."""
        ...

    def result(self, job: FinetuneJob) -> ModelRef:
        """The fine-tuned model of a succeeded job."""
        ...


def run_finetune_job(
    finetuner: Finetuner,
    job: FinetuneJob,
    state_dir: Path,
    poll_seconds: float,
    on_status: Callable[[FinetuneJob], None] | None = None,
) -> ModelRef:
    """Drive a fine-tuning job to its end, re-attaching to a saved one for the same work.

    Args:
        finetuner: the provider.
        job: the work (its ``job_id``, status and results are ignored).
        state_dir: the job's state folder, holding ``job.json``.
        poll_seconds: the wait between two status checks.
        on_status: called with the job when it is submitted or re-attached and whenever
            its status changes.

    Returns:
        The fine-tuned model.

    Raises:
        PlanError: the job is for another provider than ``finetuner``'s.
        FinetuneError: the job failed or was cancelled (with the provider's reason).
    """
    if job.provider != finetuner.provider:
        raise PlanError(
            f"a {job.provider!r} fine-tuning job cannot run on the {finetuner.provider!r} "
            "fine-tuner"
        )
    saved = FinetuneJob.load(state_dir)
    if saved is not None and saved.same_work(job) and _resumable(saved):
        current = saved
    else:
        if saved is not None:
            # Kept, not dropped: a superseded job may still be running (and billing).
            _append_history(state_dir, saved)
        fresh = job.model_copy(
            update={"job_id": None, "status": "pending", "result_model": None, "error": None}
        )
        current = finetuner.submit(fresh, state_dir)
        current.save(state_dir)
    _notify(on_status, current)
    while not current.done:
        time.sleep(poll_seconds)
        refreshed = finetuner.status(current)
        if refreshed != current:
            refreshed.save(state_dir)
            if refreshed.status != current.status:
                _notify(on_status, refreshed)
        current = refreshed
    if current.status != "succeeded":
        reason = current.error or "no reason given"
        raise FinetuneError(
            f"fine-tuning job {current.job_id or '(unsubmitted)'} of {current.base} on "
            f"{current.dataset.name} {current.status} at provider {current.provider!r}: "
            f"{reason}. Run again to submit it again; its state is in {state_dir / JOB_FILE}."
        )
    return finetuner.result(current)


class LocalHFFinetuner:
    """The local Hugging Face trainer as a :class:`Finetuner`.

    ``submit`` trains synchronously (``sublearn.finetune.stage.finetune``) into the folder
    given here, so a submitted job is already finished; a run killed while training
    finds no saved job and trains again, and the stage itself skips a finished folder.
    """

    provider = "hf"

    def __init__(
        self,
        out: Path,
        *,
        teacher_model: str | Path | None = None,
        teacher_system_prompt: str | None = None,
    ) -> None:
        """Set where the model goes.

        Args:
            out: the fine-tuned model folder to produce.
            teacher_model: the teacher, for the ``kl`` objective.
            teacher_system_prompt: the teacher's hidden system prompt (``kl`` only).
        """
        self.out = out.expanduser().absolute()
        self.teacher_model = teacher_model
        self.teacher_system_prompt = teacher_system_prompt

    def submit(self, job: FinetuneJob, state_dir: Path) -> FinetuneJob:
        """Train now; the job comes back succeeded, or failed with the reason.

        Errors a user can cause (bad config, dataset or model) fail the job; anything
        else is a bug and propagates.
        """
        from sublearn.finetune.config import FinetuneConfig
        from sublearn.finetune.stage import finetune

        running = job.model_copy(update={"job_id": f"local:{self.out}", "status": "running"})
        try:
            cfg = FinetuneConfig(**job.config)
            finetune(
                job.base,
                job.dataset,
                cfg,
                self.out,
                teacher_model=self.teacher_model,
                teacher_system_prompt=self.teacher_system_prompt,
            )
        except (SublearnError, ValidationError) as err:
            return running.model_copy(update={"status": "failed", "error": str(err)})
        return running.model_copy(update={"status": "succeeded", "result_model": str(self.out)})

    def status(self, job: FinetuneJob) -> FinetuneJob:
        """The job as it is: training ran to its end inside ``submit``."""
        return job

    def result(self, job: FinetuneJob) -> ModelRef:
        """The trained folder, as a model reference (an adapter on its base for LoRA).

        Raises:
            ModelError: the job has no result, or its folder is gone or incomplete.
        """
        if job.status != "succeeded" or job.result_model is None:
            raise ModelError(f"fine-tuning job {job.job_id} has no model (status {job.status})")
        folder = Path(job.result_model)
        if not (folder / "train_metrics.json").is_file():
            raise ModelError(
                f"the fine-tuned model folder {folder} is missing or incomplete; delete the "
                f"job's {JOB_FILE} to train it again"
            )
        return ModelRef.parse(str(folder))


def _resumable(saved: FinetuneJob) -> bool:
    # A job the provider knows (an id) that has not failed; or one that succeeded.
    if saved.status == "succeeded":
        return True
    return saved.job_id is not None and saved.status in ("pending", "running")


def _canonical(config: dict[str, Any]) -> str:
    # Through JSON, as the saved job went: a tuple then equals its list, a Path its string.
    return json.dumps(json.loads(json.dumps(config, default=str)), sort_keys=True)


def _append_history(state_dir: Path, job: FinetuneJob) -> None:
    # Durable: a job's history is the record of what a provider was asked and billed.
    AppendLog(state_dir / HISTORY_FILE).append(job.model_dump(mode="json"))


def _notify(on_status: Callable[[FinetuneJob], None] | None, job: FinetuneJob) -> None:
    if on_status is not None:
        on_status(job)

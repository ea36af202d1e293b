"""OpenAI fine-tuning jobs through the fine-tuning protocol (:mod:`sublearn.finetune.protocol`).

``submit`` checks the training file against the chat fine-tuning format, uploads it,
and creates the job; ``status`` polls it and shows its new events; ``result`` names the
fine-tuned model. The uploaded file's id is saved (``upload.json``) the moment it exists
and the job's id right after creation (``job.json``, by the protocol). A run killed
between the two finds its job again by the uploaded file, which only that job trains on,
so no second job is ever created for one upload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sublearn.backends.openai_api import OpenAISettings
from sublearn.backends.provider_errors import Endpoint, provider_errors
from sublearn.backends.refs import ModelRef
from sublearn.errors import DataError, ModelError
from sublearn.finetune.protocol import FinetuneJob, JobStatus
from sublearn.runs import atomic_write_json, atomic_write_text, file_sha256

UPLOAD_FILE = "upload.json"
MAX_FILE_BYTES = 512 * 1024**2  # OpenAI's limit on a fine-tuning file
MIN_EXAMPLES = 10  # OpenAI refuses smaller training files
_ROLES = ("system", "user", "assistant")
_STATUS: dict[str, JobStatus] = {
    "validating_files": "pending",
    "queued": "pending",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
_STEP = re.compile(r"[Ss]tep (\d+)/(\d+)")


def validate_chat_file(path: Path) -> list[dict[str, Any]]:
    """Check a chat JSONL against the fine-tuning format and return its examples.

    Each line must be an object with ``messages``: turns whose role is system, user or
    assistant, whose content is a non-empty string, ending with an assistant turn.

    Returns:
        ``[{"messages": [...]}, ...]``: only the messages, as the API takes them.

    Raises:
        DataError: naming the first lines that break the format, or a file that is
            empty, too small or too large.
    """
    try:
        size = path.stat().st_size
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DataError(f"fine-tuning file {path}: {err.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise DataError(f"fine-tuning file {path} is {size / 1024**2:.0f} MB; the limit is 512 MB")
    problems: list[str] = []
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number}: not a JSON object with messages")
            continue
        problem = _message_problem(messages)
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            examples.append(
                {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
            )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise DataError(f"fine-tuning file {path} breaks the chat format: {shown}")
    if len(examples) < MIN_EXAMPLES:
        raise DataError(
            f"fine-tuning file {path} holds {len(examples)} examples; at least {MIN_EXAMPLES} "
            "are needed"
        )
    return examples


def _message_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"message {i} has no role among {', '.join(_ROLES)}"
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({m['role']}) has empty content"
    if messages[-1]["role"] != "assistant":
        return "the last message is not the assistant's"
    return None


class OpenAIFinetuner:
    """OpenAI's fine-tuning API (or a compatible server's) as a :class:`Finetuner`.

    Attributes:
        provider: ``openai``.
        trained_tokens: training tokens the provider reported for the last job polled
            (what it bills), 0 until it reports them.
    """

    provider = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        client: Any = None,
        on_event: Callable[[str], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        """Connect.

        Args:
            settings: server, key variable, retries.
            client: an ``openai.OpenAI`` client to use instead of one from ``settings``.
            on_event: called with each new event message of a job, oldest first.
            on_step: called with (step, total steps) when an event reports training steps.

        Raises:
            ConfigError: no key in the environment, or no ``openai`` package.
        """
        self.settings = settings
        self._client = client if client is not None else settings.client()
        self._on_event = on_event
        self._on_step = on_step
        self._seen_events: set[str] = set()
        self.trained_tokens = 0

    # ------------------------------------------------------------- the protocol

    def submit(self, job: FinetuneJob, state_dir: Path) -> FinetuneJob:
        """Upload the training file (once) and create the job (once per upload)."""
        from sublearn.finetune.config import FinetuneConfig

        cfg = FinetuneConfig(**job.config)
        if cfg.objective != "sft":
            raise DataError(
                f"the {cfg.objective!r} objective needs the teacher's logits; a fine-tuning API "
                "trains on sampled replies only (objective: sft)"
            )
        if cfg.epochs != int(cfg.epochs) or cfg.max_steps is not None:
            raise DataError(
                f"a fine-tuning API trains whole epochs (epochs: {cfg.epochs}, max_steps: "
                f"{cfg.max_steps}): set a whole number of epochs and max_steps: null"
            )
        with self._errors(job.base):
            return self._submit(job, cfg, state_dir)

    def _submit(self, job: FinetuneJob, cfg: Any, state_dir: Path) -> FinetuneJob:
        file_id = self._upload(job.dataset, state_dir)
        found = self._job_for_file(file_id)
        if found is None:
            hyper = {
                "n_epochs": int(cfg.epochs),
                "batch_size": cfg.api.batch_size,
                "learning_rate_multiplier": cfg.api.learning_rate_multiplier,
            }
            found = self._client.fine_tuning.jobs.create(
                model=job.base,
                training_file=file_id,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
                seed=cfg.seed,
                suffix=cfg.api.suffix,
            )
        return self._apply(job, found)

    def status(self, job: FinetuneJob) -> FinetuneJob:
        """The job as the provider has it now; its new events go to ``on_event``."""
        with self._errors(job.base):
            remote = self._client.fine_tuning.jobs.retrieve(job.job_id)
            self._show_events(job.job_id or "")
        return self._apply(job, remote)

    @contextmanager
    def _errors(self, base: str) -> Iterator[None]:
        """The client's failures as sublearn errors (they must cross process boundaries);
        a 404 here may also be a server without a fine-tuning API (llama.cpp's)."""
        at = Endpoint(
            model=f"openai:{base}",
            url=self.settings.base_url,
            key_env=self.settings.api_key_env,
            retries=self.settings.max_retries,
            timeout_s=self.settings.timeout_s,
        )
        try:
            with provider_errors(at):
                yield
        except ModelError as err:
            raise ModelError(
                f"fine-tuning {at.model} at {at.where} failed: {err} (or the server has no "
                "fine-tuning API: train such students locally, or use in-context students)"
            ) from None

    def result(self, job: FinetuneJob) -> ModelRef:
        """The fine-tuned model, as ``openai:ft:...``.

        Raises:
            ModelError: the job has no fine-tuned model.
        """
        if job.status != "succeeded" or not job.result_model:
            raise ModelError(f"fine-tuning job {job.job_id} has no model (status {job.status})")
        return ModelRef("openai", job.result_model)

    # ----------------------------------------------------------------- helpers

    def _upload(self, dataset: Path, state_dir: Path) -> str:
        """The id of the uploaded training file; uploads only when none is saved for it."""
        digest = file_sha256(dataset)
        saved_path = state_dir / UPLOAD_FILE
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text())
            if saved.get("sha256") == digest:
                return saved["file_id"]
        examples = validate_chat_file(dataset)
        clean = state_dir / "training.jsonl"
        atomic_write_text(clean, "".join(json.dumps(e) + "\n" for e in examples))
        with clean.open("rb") as handle:
            uploaded = self._client.files.create(file=handle, purpose="fine-tune")
        atomic_write_json(saved_path, {"file_id": uploaded.id, "sha256": digest})
        return uploaded.id

    def _job_for_file(self, file_id: str) -> Any:
        """A job already created for ``file_id`` (by a run killed before saving it)."""
        for remote in self._client.fine_tuning.jobs.list(limit=100):
            if remote.training_file == file_id:
                return remote
        return None

    def _apply(self, job: FinetuneJob, remote: Any) -> FinetuneJob:
        status = _STATUS.get(remote.status, "running")
        error = None
        if status in ("failed", "cancelled"):
            err = getattr(remote, "error", None)
            message = getattr(err, "message", None) if err is not None else None
            code = getattr(err, "code", None) if err is not None else None
            error = f"{message or remote.status}" + (f" (code {code})" if code else "")
        trained = getattr(remote, "trained_tokens", None)
        if trained:
            self.trained_tokens = int(trained)
        return job.model_copy(
            update={
                "job_id": remote.id,
                "status": status,
                "result_model": getattr(remote, "fine_tuned_model", None),
                "error": error,
            }
        )

    def _show_events(self, job_id: str) -> None:
        if self._on_event is None and self._on_step is None:
            return
        page = self._client.fine_tuning.jobs.list_events(job_id, limit=50)
        new = [e for e in page.data if e.id not in self._seen_events]
        for event in reversed(new):  # the API lists newest first
            self._seen_events.add(event.id)
            if self._on_event is not None:
                self._on_event(event.message)
            step = _STEP.search(event.message)
            if step and self._on_step is not None:
                self._on_step(int(step[1]), int(step[2]))

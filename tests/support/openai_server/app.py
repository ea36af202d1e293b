"""What the server does, without HTTP: models, chat completions, files, fine-tuning jobs.

One class over 600 lines: it holds the server's state (served models, files, jobs and
their locks), and every route reads or changes that state; the stateless parts live in
the sibling modules (protocol, chat, jobs, faults).
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import random
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sublearn.backends.base import Backend, Conversation, SamplingParams, row_seed
from sublearn.backends.refs import ModelRef
from sublearn.backends.registry import open_backend
from sublearn.errors import ConfigError, DataError, SublearnError
from sublearn.finetune.config import FinetuneConfig
from sublearn.runs import atomic_write_json
from tests.support.openai_server.chat import (
    count_prompt_tokens,
    count_tokens,
    first_position_logprobs,
    parse_conversation,
)
from tests.support.openai_server.faults import Faults, Stats, fault_error
from tests.support.openai_server.jobs import hyperparameters, trainable, trained_tokens
from tests.support.openai_server.protocol import (
    ApiError,
    Response,
    integer_field,
    is_number,
    json_object,
    multipart,
    new_id,
    now,
    number_field,
    page,
)

log = logging.getLogger("sublearn.local_openai_server")

MAX_OPEN_BACKENDS = 4
"""Models held in memory at once; the least recently used one is closed beyond this."""

DEFAULT_FINETUNE: dict[str, Any] = {
    "objective": "sft",
    "method": "full",
    "learning_rate": 1e-3,
    "epochs": 1,
    "batch_size": 16,
    "grad_accum": 1,
    "device": "cpu",
}
"""The fine-tuning config of jobs when ``--finetune-config`` gives none (its keys win)."""

_TERMINAL = ("succeeded", "failed", "cancelled")
_FILE_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
)


@dataclass
class _Pending:
    """Rows of one completion request waiting to be sampled in a batch."""

    conversations: list[Conversation]
    seeds: tuple[int, ...]
    done: threading.Event = field(default_factory=threading.Event)
    replies: list[str] = field(default_factory=list)
    error: BaseException | None = None


class LocalOpenAIApp:
    """What the server does, without HTTP: models, files, fine-tuning jobs, faults.

    Handler threads call :meth:`handle`; model use is serialized by one lock (a model
    runs one batch at a time anyway), and fine-tuning jobs run one at a time on a worker
    thread.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        workdir: Path,
        *,
        finetune_config: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        device: str = "cpu",
        admin: bool = True,
    ) -> None:
        """Set up the state (read back from ``workdir/state.json``) and start the worker.

        Args:
            models: served name -> model reference (a folder or any backend reference).
            workdir: where uploads, fine-tuned models and ``state.json`` live.
            finetune_config: fine-tuning settings of every job (a FinetuneConfig dict),
                over :data:`DEFAULT_FINETUNE`.
            api_key: the key ``/v1`` requests must carry; None: no authentication.
            device: where models run.
            admin: serve the unauthenticated ``/_admin`` endpoints.

        Raises:
            ConfigError: the fine-tuning config is invalid.
        """
        self.workdir = workdir
        self.device = device
        self.api_key = api_key
        self.admin = admin
        self.started = now()
        cfg = {**DEFAULT_FINETUNE, "device": device, **(finetune_config or {})}
        try:
            FinetuneConfig(**cfg)
        except ValueError as err:
            raise ConfigError(f"invalid fine-tuning config: {err}") from None
        self.finetune_config = cfg
        self.base_models = dict(models)
        self.finetuned: dict[str, dict[str, Any]] = {}
        self.adapters: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.faults = Faults()
        self.stats = Stats()
        self._state_lock = threading.RLock()
        self._model_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], list[_Pending]] = {}
        self._backends: OrderedDict[str, Backend] = OrderedDict()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        (workdir / "files").mkdir(parents=True, exist_ok=True)
        (workdir / "models").mkdir(parents=True, exist_ok=True)
        self._load_state()
        self._worker = threading.Thread(target=self._work, name="finetune-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        """``workdir/state.json``."""
        return self.workdir / "state.json"

    def _load_state(self) -> None:
        if not self.state_path.is_file():
            return
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot read {self.state_path}: {err}; delete it to start afresh"
            ) from None
        self.files = {
            fid: f
            for fid, f in state.get("files", {}).items()
            if (self.workdir / "files" / fid).is_file()
        }
        self.finetuned = {
            name: m
            for name, m in state.get("finetuned", {}).items()
            if Path(m["path"]).exists() and name not in self.base_models
        }
        self.jobs = state.get("jobs", {})
        for record in self.jobs.values():
            job = record["job"]
            if job["status"] not in _TERMINAL:
                # Training does not resume: the client sees a failure it can retry.
                self._fail(
                    record,
                    "server_restarted",
                    f"the server stopped while the job was {job['status']}; create a new job",
                    save=False,
                )
        self._save()

    def _save(self) -> None:
        with self._state_lock:
            state = {"files": self.files, "finetuned": self.finetuned, "jobs": self.jobs}
            atomic_write_json(self.state_path, state)

    def close(self) -> None:
        """Stop the worker, mark unfinished jobs failed and free every model."""
        self._queue.put(None)
        with self._state_lock:
            for record in self.jobs.values():
                if record["job"]["status"] not in _TERMINAL:
                    self._fail(
                        record,
                        "server_stopped",
                        f"the server stopped while the job was {record['job']['status']}",
                        save=False,
                    )
            for event in self._cancel.values():
                event.set()
            self._save()
        with self._model_lock:
            while self._backends:
                _, backend = self._backends.popitem()
                backend.close()

    # ----------------------------------------------------------------- models

    def served(self) -> dict[str, tuple[str, int]]:
        """Every served name -> (model reference, creation time)."""
        with self._state_lock:
            served = {name: (ref, self.started) for name, ref in self.base_models.items()}
            served.update({n: (m["path"], m["created"]) for n, m in self.finetuned.items()})
            served.update({n: (a["path"], a["created"]) for n, a in self.adapters.items()})
        return served

    def _resolve(self, name: Any, param: str = "model") -> str:
        if not isinstance(name, str) or not name:
            raise ApiError(400, f"'{param}' must be a model name", param=param)
        found = self.served().get(name)
        if found is None:
            raise ApiError(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                param=param,
                code="model_not_found",
            )
        return found[0]

    def _backend(self, ref: str) -> Backend:
        """The open backend of ``ref`` (opened, and the LRU one closed, if needed).

        Call with the model lock held.
        """
        backend = self._backends.get(ref)
        if backend is not None:
            self._backends.move_to_end(ref)
            return backend
        while len(self._backends) >= MAX_OPEN_BACKENDS:
            _, old = self._backends.popitem(last=False)
            old.close()
        try:
            backend = open_backend(ref, device=self.device, dtype="auto", batch_size=64)
        except SublearnError as err:
            # A broken model stays broken: tell the client not to retry.
            raise ApiError(
                500,
                f"cannot load model {ref}: {err}",
                type="server_error",
                code="model_load_failed",
                headers={"x-should-retry": "false"},
            ) from None
        self._backends[ref] = backend
        return backend

    def _drop_backend(self, ref: str) -> None:
        with self._model_lock:
            backend = self._backends.pop(ref, None)
            if backend is not None:
                backend.close()

    def _model_object(self, name: str, created: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "sublearn"}

    # ---------------------------------------------------------------- routing

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request (faults, authentication and counts included)."""
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        query = urllib.parse.parse_qs(parts.query)
        try:
            if path.startswith("/_admin/"):
                if not self.admin:
                    raise ApiError(404, f"no route {method} {path}", code="not_found")
                return self._admin(method, path, body)
            self.stats.request(method, path)
            rule = self.faults.for_request(path)
            if rule is not None:
                self.stats.add("faults_served")
                if rule.get("delay"):
                    time.sleep(float(rule["delay"]))
                if rule.get("status") is not None:
                    raise fault_error(rule)
            if path == "/health" and method == "GET":
                return Response(json={"status": "ok"})
            if path.startswith("/v1/"):
                self._authenticate(headers)
                return self._route(method, path[3:], query, headers, body)
            raise ApiError(404, f"no route {method} {path}", code="not_found")
        except ApiError as err:
            return Response(status=err.status, json=err.body(), headers=err.headers)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.api_key is None:
            return
        given = headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(
                401,
                "Incorrect API key provided." if given else "Missing bearer authentication.",
                code="invalid_api_key",
            )

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        route = (method, *segments)
        if route == ("POST", "chat", "completions"):
            return Response(json=self.chat_completion(json_object(body)))
        if route == ("GET", "models"):
            return Response(
                json={
                    "object": "list",
                    "data": [self._model_object(n, c) for n, (_, c) in self.served().items()],
                }
            )
        if method == "GET" and segments[0] == "models" and len(segments) > 1:
            # Model names may hold '/' (org/name); everything after models/ is the id.
            name = urllib.parse.unquote(path.strip("/").partition("/")[2])
            self._resolve(name)
            return Response(json=self._model_object(name, self.served()[name][1]))
        if segments[0] == "files":
            return self._files_route(method, segments[1:], headers, body)
        if segments[:2] == ["fine_tuning", "jobs"]:
            return self._jobs_route(method, segments[2:], query, body)
        if route == ("POST", "load_lora_adapter"):
            return self.load_lora_adapter(json_object(body))
        if route == ("POST", "unload_lora_adapter"):
            return self.unload_lora_adapter(json_object(body))
        raise ApiError(404, f"no route {method} /v1{path}", code="not_found")

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        if (method, path) == ("POST", "/_admin/faults"):
            try:
                rules = json.loads(body or b"[]")
            except ValueError:
                raise ApiError(400, "the body is not JSON") from None
            return Response(json={"faults": self.faults.set(rules)})
        if (method, path) == ("GET", "/_admin/faults"):
            return Response(json={"faults": self.faults.rules})
        if (method, path) == ("GET", "/_admin/stats"):
            return Response(json=self.stats.snapshot())
        if (method, path) == ("POST", "/_admin/reset"):
            self.stats.reset()
            self.faults.clear()
            return Response(json={"status": "ok"})
        raise ApiError(404, f"no route {method} {path}", code="not_found")

    # ------------------------------------------------------- chat completions

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a ``/v1/chat/completions`` body.

        Raises:
            ApiError: a malformed body (400), an unknown model (404), or a model that
                cannot give the log-probabilities asked for (400).
        """
        name = body.get("model")
        ref = self._resolve(name)
        conversation = parse_conversation(body.get("messages"))
        temperature = number_field(body, "temperature", 1.0, 0.0, 2.0)
        top_p = number_field(body, "top_p", 1.0, 0.0, 1.0)
        if top_p <= 0:
            raise ApiError(400, "'top_p' must be in (0, 1]", param="top_p")
        max_key = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
        max_tokens = integer_field(body, max_key, 64, 1, 1 << 20)
        n = integer_field(body, "n", 1, 1, 128)
        seed = body.get("seed")
        if seed is None:
            seed = random.SystemRandom().getrandbits(63)
        elif not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiError(400, "'seed' must be an integer", param="seed")
        want_logprobs = body.get("logprobs") or False
        if not isinstance(want_logprobs, bool):
            raise ApiError(400, "'logprobs' must be a boolean", param="logprobs")
        top_k = integer_field(body, "top_logprobs", 0, 0, 20)
        if top_k and not want_logprobs:
            raise ApiError(400, "'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
        stops = body.get("stop")
        stops = [stops] if isinstance(stops, str) else [s for s in stops or [] if s]
        params = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_tokens,
            row_seeds=tuple(row_seed(seed, i) for i in range(n)),
        )
        with self._model_lock:
            backend = self._backend(ref)
            if want_logprobs and not callable(getattr(backend, "next_token_logprobs", None)):
                raise ApiError(
                    400, f"model {name} does not return log-probabilities", param="logprobs"
                )
        replies = self._generate_batched(ref, [conversation] * n, params)
        with self._model_lock:
            backend = self._backend(ref)
            tokenizer = getattr(backend, "tokenizer", None)
            logprobs = (
                first_position_logprobs(backend, conversation, replies, top_k)
                if want_logprobs
                else [None] * n
            )
            prompt_tokens = count_prompt_tokens(tokenizer, conversation)
            choices = []
            completion_tokens = 0
            for i, (reply, lp) in enumerate(zip(replies, logprobs, strict=True)):
                used = count_tokens(tokenizer, reply)
                finish = "length" if used >= max_tokens else "stop"
                cut = min((reply.find(s) for s in stops if s in reply), default=-1)
                if cut >= 0:
                    reply, finish = reply[:cut], "stop"
                    used = count_tokens(tokenizer, reply)
                completion_tokens += used
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "finish_reason": finish,
                        "logprobs": lp,
                    }
                )
        self.stats.completion(body)
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "sublearn-local",
        }

    def _generate_batched(
        self, ref: str, conversations: list[Conversation], params: SamplingParams
    ) -> list[str]:
        """Sample replies, batched with the concurrent requests that sample alike.

        Requests wait for the model lock; whoever takes it answers every request waiting
        with the same model and sampling settings in one ``generate`` call. Each row keeps
        its own seed and the backends sample rows independently of their batch, so a
        reply does not depend on what it was batched with.
        """
        key = (ref, params.temperature, params.top_p, params.max_new_tokens)
        item = _Pending(conversations, params.seeds_for(len(conversations)))
        with self._pending_lock:
            self._pending.setdefault(key, []).append(item)
        with self._model_lock:
            if not item.done.is_set():
                with self._pending_lock:
                    batch = self._pending.pop(key, [])
                try:
                    backend = self._backend(ref)
                    rows = [c for it in batch for c in it.conversations]
                    seeds = tuple(seed for it in batch for seed in it.seeds)
                    replies = backend.generate(rows, replace(params, row_seeds=seeds))
                    start = 0
                    for it in batch:
                        it.replies = replies[start : start + len(it.conversations)]
                        start += len(it.conversations)
                except BaseException as err:
                    for it in batch:
                        it.error = err
                    raise
                finally:
                    for it in batch:
                        it.done.set()
        if item.error is not None:
            raise item.error
        return item.replies

    # ------------------------------------------------------------------ files

    def _files_route(
        self, method: str, rest: list[str], headers: Mapping[str, str], body: bytes
    ) -> Response:
        if method == "POST" and not rest:
            return Response(json=self.upload(headers.get("content-type", ""), body))
        if method == "GET" and not rest:
            with self._state_lock:
                data = sorted(self.files.values(), key=lambda f: f["created_at"], reverse=True)
            return Response(json={"object": "list", "data": data, "has_more": False})
        file = self._file(rest[0])
        if method == "GET" and len(rest) == 1:
            return Response(json=file)
        if method == "GET" and rest[1:] == ["content"]:
            data = (self.workdir / "files" / file["id"]).read_bytes()
            return Response(raw=data, content_type="application/octet-stream")
        if method == "DELETE" and len(rest) == 1:
            with self._state_lock:
                self.files.pop(file["id"], None)
                self._save()
            (self.workdir / "files" / file["id"]).unlink(missing_ok=True)
            return Response(json={"id": file["id"], "object": "file", "deleted": True})
        raise ApiError(404, f"no route {method} /v1/files/{'/'.join(rest)}", code="not_found")

    def _file(self, file_id: Any, param: str = "file_id") -> dict[str, Any]:
        with self._state_lock:
            file = self.files.get(file_id) if isinstance(file_id, str) else None
        if file is None:
            raise ApiError(404, f"No such File object: {file_id}", param=param)
        return file

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        """Store a multipart upload (fields ``purpose`` and ``file``) as a file object.

        Raises:
            ApiError: not multipart, or a field missing (400).
        """
        fields = multipart(content_type, body)
        purpose = fields.get("purpose", (None, b""))[1].decode().strip()
        if "file" not in fields:
            raise ApiError(400, "the upload has no 'file' field", param="file")
        if purpose not in _FILE_PURPOSES:
            raise ApiError(
                400,
                f"'purpose' must be one of {', '.join(_FILE_PURPOSES)}, got {purpose!r}",
                param="purpose",
            )
        filename, data = fields["file"]
        file_id = new_id("file")
        (self.workdir / "files" / file_id).write_bytes(data)
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": now(),
            "filename": filename or "upload",
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        with self._state_lock:
            self.files[file_id] = record
            self._save()
        self.stats.add("files_uploaded")
        return record

    # ------------------------------------------------------------ fine-tuning

    def _jobs_route(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> Response:
        if method == "POST" and not rest:
            return Response(json=self.create_job(json_object(body)))
        if method == "GET" and not rest:
            with self._state_lock:
                jobs = [dict(r["job"]) for r in reversed(self.jobs.values())]
            return Response(json=page(jobs, query))
        record = self._job(rest[0])
        if method == "GET" and len(rest) == 1:
            with self._state_lock:
                return Response(json=dict(record["job"]))
        if method == "GET" and rest[1:] == ["events"]:
            with self._state_lock:
                events = [dict(e) for e in reversed(record["events"])]
            return Response(json=page(events, query))
        if method == "POST" and rest[1:] == ["cancel"]:
            return Response(json=self.cancel_job(record))
        raise ApiError(
            404, f"no route {method} /v1/fine_tuning/jobs/{'/'.join(rest)}", code="not_found"
        )

    def _job(self, job_id: str) -> dict[str, Any]:
        with self._state_lock:
            record = self.jobs.get(job_id)
        if record is None:
            raise ApiError(404, f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        return record

    def _event(self, record: dict[str, Any], message: str, level: str = "info") -> None:
        with self._state_lock:
            record["events"].append(
                {
                    "id": new_id("ftevent"),
                    "object": "fine_tuning.job.event",
                    "created_at": now(),
                    "level": level,
                    "message": message,
                    "type": "message",
                    "data": {},
                }
            )

    def _fail(
        self,
        record: dict[str, Any],
        code: str,
        message: str,
        param: str | None = None,
        *,
        save: bool = True,
    ) -> None:
        with self._state_lock:
            job = record["job"]
            job.update(
                status="failed",
                finished_at=now(),
                error={"code": code, "message": message, "param": param},
            )
            self._event(record, f"Job failed: {message}", "error")
            if save:
                self._save()

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a fine-tuning job; it is validated now and trained by the worker.

        Returns:
            The job as created (``validating_files``).

        Raises:
            ApiError: unknown model or file (404), or malformed settings (400).
        """
        base = body.get("model")
        base_ref = self._resolve(base)
        file = self._file(body.get("training_file"), "training_file")
        if body.get("validation_file") is not None:
            self._file(body["validation_file"], "validation_file")
        hyper = hyperparameters(body)
        cfg = dict(self.finetune_config)
        if isinstance(hyper.get("n_epochs"), int):
            cfg["epochs"] = hyper["n_epochs"]
        if isinstance(hyper.get("batch_size"), int):
            cfg["batch_size"] = hyper["batch_size"]
        if is_number(hyper.get("learning_rate_multiplier")):
            cfg["learning_rate"] = (
                cfg.get("learning_rate", 2e-4) * hyper["learning_rate_multiplier"]
            )
        seed = body.get("seed")
        if seed is not None and seed != "auto":
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ApiError(400, "'seed' must be an integer", param="seed")
            cfg["seed"] = seed
        try:
            resolved = FinetuneConfig(**cfg)
        except ValueError as err:
            raise ApiError(
                400, f"invalid hyperparameters: {err}", param="hyperparameters"
            ) from None
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not 0 < len(suffix) <= 64):
            raise ApiError(400, "'suffix' must be a string of 1-64 characters", param="suffix")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise ApiError(400, "'metadata' must map strings to strings", param="metadata")
        epochs = resolved.epochs
        shown = {
            "n_epochs": int(epochs) if float(epochs).is_integer() else "auto",
            "batch_size": resolved.batch_size,
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
        }
        job_id = new_id("ftjob")
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": now(),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": shown,
            "model": base,
            "organization_id": "org-sublearn",
            "result_files": [],
            "seed": resolved.seed,
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": file["id"],
            "validation_file": body.get("validation_file"),
            "estimated_finish": None,
            "integrations": [],
            "metadata": metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": shown}},
            "user_provided_suffix": suffix,
        }
        fault = self.faults.for_new_job()
        record: dict[str, Any] = {
            "job": job,
            "events": [],
            "base_ref": base_ref,
            "cfg": resolved.model_dump(mode="json"),
            "fail": {"code": fault["code"], "message": fault["fail_jobs"]} if fault else None,
        }
        with self._state_lock:
            self.jobs[job_id] = record
            self._cancel[job_id] = threading.Event()
            self._event(record, f"Validating training file: {file['id']}")
            created = dict(job)
        self.stats.add("jobs_created")
        problem = self._check_training_file(file)
        if problem is not None:
            self._fail(record, "invalid_training_file", problem, "training_file")
        else:
            with self._state_lock:
                job["status"] = "queued"
                self._event(record, "Job queued")
                self._save()
            self._queue.put(job_id)
        return created

    def _check_training_file(self, file: dict[str, Any]) -> str | None:
        if file["purpose"] != "fine-tune":
            return f"file {file['id']} has purpose {file['purpose']!r}, not 'fine-tune'"
        from sublearn.finetune.sft import read_chat_jsonl

        try:
            read_chat_jsonl(self.workdir / "files" / file["id"])
        except DataError as err:
            return f"invalid training file {file['filename']}: {err}"
        return None

    def cancel_job(self, record: dict[str, Any]) -> dict[str, Any]:
        """Cancel a job that has not finished; one being trained is discarded when done.

        Raises:
            ApiError: the job has already finished (400).
        """
        with self._state_lock:
            job = record["job"]
            if job["status"] in _TERMINAL:
                raise ApiError(400, f"Job {job['id']} has already {job['status']}.")
            job.update(status="cancelled", finished_at=now())
            self._event(record, "Job cancelled")
            self._cancel.setdefault(job["id"], threading.Event()).set()
            self._save()
            return dict(job)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._train(job_id)
            except Exception as err:
                log.exception("fine-tuning job %s failed", job_id)
                record = self.jobs[job_id]
                if record["job"]["status"] not in _TERMINAL:
                    self._fail(record, "training_failed", f"{type(err).__name__}: {err}")

    def _train(self, job_id: str) -> None:
        record = self.jobs[job_id]
        job = record["job"]
        cancelled = self._cancel[job_id]
        with self._state_lock:
            if job["status"] != "queued":
                return
            job["status"] = "running"
            self._event(record, "Training started")
            self._save()
        delay = self.faults.job_delay()
        if delay and cancelled.wait(delay):
            return
        if record["fail"] is not None:
            self._fail(record, record["fail"]["code"], record["fail"]["message"], "training_file")
            return
        from sublearn.finetune.stage import finetune

        cfg = FinetuneConfig(**record["cfg"])
        dataset = self.workdir / "files" / job["training_file"]
        out = self.workdir / "models" / job_id
        finetune(trainable(record["base_ref"]), dataset, cfg, out)
        if cancelled.is_set():
            return
        name = f"ft:{job['model']}:{job['user_provided_suffix'] or 'sublearn'}:{job_id[6:]}"
        tokens = trained_tokens(out, dataset, cfg)
        with self._state_lock:
            if job["status"] != "running":
                return
            self.finetuned[name] = {"path": str(out.resolve()), "created": now(), "job": job_id}
            job.update(
                status="succeeded",
                fine_tuned_model=name,
                finished_at=now(),
                trained_tokens=tokens,
            )
            self._event(record, f"New fine-tuned model created: {name}")
            self._event(record, "The job has successfully completed")
            self._save()

    # ------------------------------------------------------------- adapters

    def load_lora_adapter(self, body: dict[str, Any]) -> Response:
        """Serve a LoRA adapter folder as ``lora_name`` (vLLM's runtime endpoint).

        Raises:
            ApiError: a missing field, a name already served or a folder that is not an
                adapter (400).
        """
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise ApiError(400, "give 'lora_name' and 'lora_path'", param="lora_name")
        if name in self.served():
            raise ApiError(
                400, f"The lora adapter '{name}' has already been loaded.", param="lora_name"
            )
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ApiError(
                400,
                f"{path} is not a LoRA adapter folder (no adapter_config.json)",
                param="lora_path",
            )
        try:
            ModelRef.parse(str(folder.resolve())).check()
        except SublearnError as err:
            raise ApiError(400, f"cannot load adapter {path}: {err}", param="lora_path") from None
        with self._state_lock:
            self.adapters[name] = {"path": str(folder.resolve()), "created": now()}
        msg = f"Success: LoRA adapter '{name}' added successfully."
        return Response(raw=msg.encode(), content_type="text/plain; charset=utf-8")

    def unload_lora_adapter(self, body: dict[str, Any]) -> Response:
        """Stop serving an adapter loaded by :meth:`load_lora_adapter`.

        Raises:
            ApiError: no adapter of that name is loaded (404).
        """
        name = body.get("lora_name")
        with self._state_lock:
            adapter = self.adapters.pop(name, None) if isinstance(name, str) else None
        if adapter is None:
            raise ApiError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name")
        if adapter["path"] not in {ref for ref, _ in self.served().values()}:
            self._drop_backend(adapter["path"])
        msg = f"Success: LoRA adapter '{name}' removed successfully."
        return Response(raw=msg.encode(), content_type="text/plain; charset=utf-8")

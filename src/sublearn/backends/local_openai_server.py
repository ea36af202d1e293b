"""A local OpenAI-compatible server over sublearn backends, for offline tests and serving.

Serves local model folders (or any :func:`~sublearn.backends.registry.open_backend`
reference, ``mock:...`` included) behind the parts of the OpenAI API that sublearn uses,
so the unmodified ``openai`` client can be tested end to end without a network, and a
local model can stand in for an API model::

    python -m sublearn.backends.local_openai_server --host 127.0.0.1 --port 0 \\
        --model micro=runs/toy/model --workdir /tmp/srv [--port-file FILE] \\
        [--finetune-config FILE.json] [--api-key-env VAR] [--device cpu]

It prints one line, ``listening on http://HOST:PORT``, once it accepts connections
(``--port 0`` picks a free port; ``--port-file`` receives the port, written atomically),
and stops cleanly on SIGTERM or SIGINT. It listens on loopback unless told otherwise.

Endpoints (``/v1`` ones need ``Authorization: Bearer KEY`` when ``--api-key-env`` names
a set variable):

* ``GET /health``; ``GET /v1/models``, ``GET /v1/models/{id}``: given models, fine-tuned
  models and loaded LoRA adapters.
* ``POST /v1/chat/completions``: sampling through the backend's ``generate``, choice ``i``
  seeded with ``row_seed(seed, i)``. With ``logprobs``, only the reply's FIRST position
  is reported: the model's next-token log-softmax at temperature 1 after the prompt, its
  top ``top_logprobs`` tokens, and the reply's first token (as the tokenizer spells the
  reply text) with its log-probability. Enough for one-token answers and multiple-choice
  letters; later positions are not reported. Token counts and ``finish_reason`` come
  from re-tokenizing the reply text (``length`` when it holds ``max_tokens`` tokens).
* ``POST /v1/files`` (multipart), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.
* ``POST /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs[?limit=&after=]``,
  ``GET /v1/fine_tuning/jobs/{id}``, ``GET .../{id}/events``, ``POST .../{id}/cancel``:
  jobs are trained one at a time by a background thread with
  :func:`sublearn.finetune.stage.finetune`, then served as ``ft:BASE:SUFFIX:ID``.
* ``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter`` (vLLM's runtime
  adapter endpoints).
* ``/_admin/faults``, ``/_admin/stats``, ``/_admin/reset``: fault injection and request
  counts for tests; unauthenticated, so only served on a loopback address.

Files, jobs and fine-tuned models are kept in ``WORKDIR/state.json``, so a server
restarted on the same folder knows them; a job that was not finished when its server
stopped is marked failed. :func:`start_local_server` starts the server as a subprocess
and returns a :class:`LocalServer` handle.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sublearn.backends.base import Backend, Conversation, Message, SamplingParams, row_seed
from sublearn.backends.refs import ModelRef
from sublearn.backends.registry import open_backend
from sublearn.errors import ConfigError, DataError, SublearnError
from sublearn.finetune.config import FinetuneConfig
from sublearn.runs import atomic_write_json, atomic_write_text

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

MAX_BODY_BYTES = 1 << 30
"""Largest request body accepted (uploads included)."""

_TERMINAL = ("succeeded", "failed", "cancelled")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_FILE_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
)


class LocalServerError(SublearnError, RuntimeError):
    """The local server could not start, or died."""


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the error.

        Args:
            status: the HTTP status.
            message: what went wrong, for people.
            type: OpenAI's error type.
            param: the request field at fault, if any.
            code: a machine-readable code.
            headers: extra response headers (e.g. ``Retry-After``).
        """
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class Response:
    """An HTTP response: a JSON object, or raw bytes with their content type."""

    status: int = 200
    json: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The body bytes."""
        if self.raw is not None:
            return self.raw
        return json.dumps(self.json, ensure_ascii=False).encode()


def request_key(body: Any) -> str:
    """Identity of a request: the sha256 of its canonical JSON body.

    The same function as :func:`sublearn.backends.openai_api.request_key`, so a test can
    match the server's counts to a client's request log.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- faults


class Faults:
    """Injected failures, consumed as matching requests and jobs arrive.

    Rules (a list, replaced as a whole by ``POST /_admin/faults``):

    * ``{"path": PREFIX, "status": CODE, "retry_after": S, "delay": S, "times": N}``: the
      next ``N`` requests (default 1; ``null``: every one) whose path starts with
      ``PREFIX`` (default: every path) wait ``delay`` seconds, then get an error with
      status ``CODE`` and a ``Retry-After: S`` header, or, without ``status``, are
      answered normally after the delay.
    * ``{"fail_jobs": REASON, "times": N, "code": CODE}``: the next ``N`` fine-tuning jobs
      created (default 1) fail once running, with ``REASON`` as their error message and
      ``CODE`` (default ``invalid_training_file``) as its code.
    * ``{"job_delay": S, "times": N}``: jobs wait ``S`` seconds in ``running`` before
      training (every job unless ``times`` is given), so a client can be stopped mid-poll.
    """

    def __init__(self) -> None:
        """No rules."""
        self._lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []

    def set(self, rules: Any) -> int:
        """Replace the rules.

        Returns:
            How many rules are now active.

        Raises:
            ApiError: a malformed rule (400).
        """
        if isinstance(rules, dict) and "faults" in rules:
            rules = rules["faults"]
        if not isinstance(rules, list):
            raise ApiError(400, "expected a JSON list of fault rules")
        checked = [_check_rule(i, rule) for i, rule in enumerate(rules)]
        with self._lock:
            self.rules = checked
        return len(checked)

    def clear(self) -> None:
        """Drop every rule."""
        with self._lock:
            self.rules = []

    def _take(self, match: Any) -> dict[str, Any] | None:
        with self._lock:
            for rule in self.rules:
                if match(rule) and rule["times"] != 0:
                    if rule["times"] is not None:
                        rule["times"] -= 1
                    return dict(rule)
        return None

    def for_request(self, path: str) -> dict[str, Any] | None:
        """The request rule that applies to ``path`` (consumed), or None."""
        return self._take(lambda r: r["kind"] == "request" and path.startswith(r.get("path") or ""))

    def for_new_job(self) -> dict[str, Any] | None:
        """The ``fail_jobs`` rule that applies to a job being created (consumed), or None."""
        return self._take(lambda r: r["kind"] == "fail_jobs")

    def job_delay(self) -> float:
        """Seconds a job starting now waits in ``running`` (a ``job_delay`` rule, consumed)."""
        rule = self._take(lambda r: r["kind"] == "job_delay")
        return float(rule["job_delay"]) if rule else 0.0


def _check_rule(index: int, rule: Any) -> dict[str, Any]:
    def bad(why: str) -> ApiError:
        return ApiError(400, f"fault rule {index}: {why}", param="faults")

    if not isinstance(rule, dict):
        raise bad("expected an object")
    rule = dict(rule)
    times = rule.get("times", 1 if "job_delay" not in rule else None)
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise bad("times must be a positive integer or null")
    rule["times"] = times
    if "fail_jobs" in rule:
        if not isinstance(rule["fail_jobs"], str) or not rule["fail_jobs"]:
            raise bad("fail_jobs must be the failure message")
        rule.setdefault("code", "invalid_training_file")
        return {**rule, "kind": "fail_jobs"}
    if "job_delay" in rule:
        if not _is_number(rule["job_delay"]) or rule["job_delay"] < 0:
            raise bad("job_delay must be a number of seconds")
        return {**rule, "kind": "job_delay"}
    status = rule.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise bad("status must be an HTTP error status (400-599)")
    for key in ("delay", "retry_after"):
        if key in rule and (not _is_number(rule[key]) or rule[key] < 0):
            raise bad(f"{key} must be a non-negative number of seconds")
    if status is None and "delay" not in rule:
        raise bad("give a status, a delay, fail_jobs or job_delay")
    if "path" in rule and not isinstance(rule["path"], str):
        raise bad("path must be a path prefix such as /v1/chat/completions")
    return {**rule, "kind": "request"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ stats


class Stats:
    """Request counts for tests (``GET /_admin/stats``).

    ``requests`` counts every request but ``/_admin`` ones by ``"METHOD /path"`` (no
    query), faulted and unauthenticated ones included; ``completions`` counts the chat
    completions actually answered, by :func:`request_key` of their body.
    """

    def __init__(self) -> None:
        """All counts zero."""
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every count."""
        with self._lock:
            self.requests: dict[str, int] = {}
            self.completions: dict[str, int] = {}
            self.counts = {"jobs_created": 0, "files_uploaded": 0, "faults_served": 0}

    def request(self, method: str, path: str) -> None:
        """Count a request (faulted ones too)."""
        with self._lock:
            key = f"{method} {path}"
            self.requests[key] = self.requests.get(key, 0) + 1

    def completion(self, body: Any) -> None:
        """Count an answered chat completion by its body's hash."""
        with self._lock:
            key = request_key(body)
            self.completions[key] = self.completions.get(key, 0) + 1

    def add(self, name: str) -> None:
        """Add one to ``jobs_created``, ``files_uploaded`` or ``faults_served``."""
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts as JSON."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "completions": dict(self.completions),
                **self.counts,
            }


# ------------------------------------------------------------------------------- app


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
        self.started = _now()
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
                    raise _fault_error(rule)
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
            return Response(json=self.chat_completion(_json_object(body)))
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
            return self.load_lora_adapter(_json_object(body))
        if route == ("POST", "unload_lora_adapter"):
            return self.unload_lora_adapter(_json_object(body))
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
        conversation = _conversation(body.get("messages"))
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        if top_p <= 0:
            raise ApiError(400, "'top_p' must be in (0, 1]", param="top_p")
        max_key = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
        max_tokens = _integer(body, max_key, 64, 1, 1 << 20)
        n = _integer(body, "n", 1, 1, 128)
        seed = body.get("seed")
        if seed is None:
            seed = random.SystemRandom().getrandbits(63)
        elif not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiError(400, "'seed' must be an integer", param="seed")
        want_logprobs = body.get("logprobs") or False
        if not isinstance(want_logprobs, bool):
            raise ApiError(400, "'logprobs' must be a boolean", param="logprobs")
        top_k = _integer(body, "top_logprobs", 0, 0, 20)
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
                _first_position_logprobs(backend, conversation, replies, top_k)
                if want_logprobs
                else [None] * n
            )
            prompt_tokens = _prompt_tokens(tokenizer, conversation)
            choices = []
            completion_tokens = 0
            for i, (reply, lp) in enumerate(zip(replies, logprobs, strict=True)):
                used = _count_tokens(tokenizer, reply)
                finish = "length" if used >= max_tokens else "stop"
                cut = min((reply.find(s) for s in stops if s in reply), default=-1)
                if cut >= 0:
                    reply, finish = reply[:cut], "stop"
                    used = _count_tokens(tokenizer, reply)
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
            "id": _new_id("chatcmpl"),
            "object": "chat.completion",
            "created": _now(),
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
        fields = _multipart(content_type, body)
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
        file_id = _new_id("file")
        (self.workdir / "files" / file_id).write_bytes(data)
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": _now(),
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
            return Response(json=self.create_job(_json_object(body)))
        if method == "GET" and not rest:
            with self._state_lock:
                jobs = [dict(r["job"]) for r in reversed(self.jobs.values())]
            return Response(json=_page(jobs, query))
        record = self._job(rest[0])
        if method == "GET" and len(rest) == 1:
            with self._state_lock:
                return Response(json=dict(record["job"]))
        if method == "GET" and rest[1:] == ["events"]:
            with self._state_lock:
                events = [dict(e) for e in reversed(record["events"])]
            return Response(json=_page(events, query))
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
                    "id": _new_id("ftevent"),
                    "object": "fine_tuning.job.event",
                    "created_at": _now(),
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
                finished_at=_now(),
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
        hyper = _hyperparameters(body)
        cfg = dict(self.finetune_config)
        if isinstance(hyper.get("n_epochs"), int):
            cfg["epochs"] = hyper["n_epochs"]
        if isinstance(hyper.get("batch_size"), int):
            cfg["batch_size"] = hyper["batch_size"]
        if _is_number(hyper.get("learning_rate_multiplier")):
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
        job_id = _new_id("ftjob")
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": _now(),
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
            job.update(status="cancelled", finished_at=_now())
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
        finetune(_trainable(record["base_ref"]), dataset, cfg, out)
        if cancelled.is_set():
            return
        name = f"ft:{job['model']}:{job['user_provided_suffix'] or 'sublearn'}:{job_id[6:]}"
        tokens = _trained_tokens(out, dataset, cfg)
        with self._state_lock:
            if job["status"] != "running":
                return
            self.finetuned[name] = {"path": str(out.resolve()), "created": _now(), "job": job_id}
            job.update(
                status="succeeded",
                fine_tuned_model=name,
                finished_at=_now(),
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
            self.adapters[name] = {"path": str(folder.resolve()), "created": _now()}
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


# ------------------------------------------------------------- request helpers


def _fault_error(rule: dict[str, Any]) -> ApiError:
    status = int(rule["status"])
    headers = {}
    if rule.get("retry_after") is not None:
        headers["Retry-After"] = f"{float(rule['retry_after']):g}"
    if status == 429:
        return ApiError(
            429,
            "Rate limit reached (injected fault).",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return ApiError(
        status, f"Injected fault (status {status}).", type="server_error", headers=headers
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not _is_number(value) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be a number in [{low:g}, {high:g}]", param=key)
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be an integer in [{low}, {high}]", param=key)
    return value


def _conversation(messages: Any) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    conversation: Conversation = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ApiError(
                400, f"{where}: role must be system, developer, user or assistant", param=where
            )
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ApiError(400, f"{where}: only text content parts are served", param=where)
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}: content must be a string or text parts", param=where)
        conversation.append(cast(Message, {"role": _ROLES[message["role"]], "content": content}))
    return conversation


def _count_tokens(tokenizer: Any, text: str) -> int:
    if not text:
        return 0
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_tokens(tokenizer: Any, conversation: Conversation) -> int:
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        return sum(len(m["content"].split()) for m in conversation)
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    # As the HF backend builds prompts: the template already holds any BOS token.
    return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _first_position_logprobs(
    backend: Any, conversation: Conversation, replies: list[str], top_k: int
) -> list[dict[str, Any]]:
    """``choices[i].logprobs`` of each reply: its first position only (see module doc)."""
    tokenizer = getattr(backend, "tokenizer", None)
    # Ask for more than shown, so a sampled token is usually found without another pass.
    top = backend.next_token_logprobs([conversation], max(top_k, 20))[0]
    table = dict(reversed(top))  # token text -> log-prob, the highest kept on duplicates
    out = []
    for reply in replies:
        token = _first_token(tokenizer, reply)
        logprob = table.get(token)
        if logprob is None:
            logprob = _lookup_logprob(backend, tokenizer, conversation, token)
        out.append(
            {
                "content": [
                    {
                        **_token_entry(token, logprob),
                        "top_logprobs": [_token_entry(t, lp) for t, lp in top[:top_k]],
                    }
                ],
                "refusal": None,
            }
        )
    return out


def _first_token(tokenizer: Any, reply: str) -> str:
    if tokenizer is None:
        return reply.split()[0] if reply.split() else ""
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"] if reply else []
    if not ids:
        # An empty reply: the model ended at once.
        return tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id else ""
    return tokenizer.decode([ids[0]])


def _lookup_logprob(backend: Any, tokenizer: Any, conversation: Conversation, token: str) -> float:
    """The log-probability of a first token outside the top list (rare)."""
    if token and tokenizer is not None and token != tokenizer.eos_token:
        value = backend.score([conversation], [token])[0][0]
    else:
        # The end-of-sequence token cannot be scored as text: read the whole distribution.
        vocab = len(tokenizer) if tokenizer is not None else 1
        everything = backend.next_token_logprobs([conversation], vocab)[0]
        value = dict(reversed(everything)).get(token, -math.inf)
    # JSON has no -inf; a very low finite number keeps the response parseable.
    return float(value) if math.isfinite(value) else -9999.0


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "uploads must be multipart/form-data")
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ApiError(400, "malformed multipart body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in cast(EmailMessage, message).iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    hyper = dict(body.get("hyperparameters") or {})
    method = body.get("method")
    if method is not None:
        if not isinstance(method, dict) or method.get("type") != "supervised":
            raise ApiError(400, "only the supervised method is served", param="method")
        hyper.update((method.get("supervised") or {}).get("hyperparameters") or {})
    checks = {
        "n_epochs": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "learning_rate_multiplier": lambda v: _is_number(v) and v > 0,
    }
    for key, value in hyper.items():
        if key not in checks:
            raise ApiError(400, f"unknown hyperparameter {key!r}", param="hyperparameters")
        if value != "auto" and not checks[key](value):
            raise ApiError(
                400, f"hyperparameter {key!r} must be 'auto' or a positive number", param=key
            )
    return {k: v for k, v in hyper.items() if v != "auto"}


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """A cursor page (``limit`` and ``after`` an item id) of newest-first items."""
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        raise ApiError(400, "'limit' must be an integer", param="limit") from None
    after = query.get("after", [None])[0]
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[: max(limit, 0)], "has_more": len(items) > limit}


def _trainable(ref: str) -> str:
    """What :func:`finetune` loads for a served reference: a folder or hub id."""
    parsed = ModelRef.parse(ref)
    if parsed.provider != "hf":
        raise ConfigError(f"cannot fine-tune {ref} locally: only Hugging Face models train here")
    # An adapter folder loads as its recorded base with the adapter merged.
    return parsed.adapter if parsed.adapter is not None else parsed.name


def _trained_tokens(out: Path, dataset: Path, cfg: FinetuneConfig) -> int | None:
    """Tokens of the training file times the epochs trained: an estimate, for usage."""
    try:
        from transformers import AutoTokenizer

        from sublearn.finetune.sft import read_chat_jsonl

        tokenizer: Any = AutoTokenizer.from_pretrained(str(out))
        records = read_chat_jsonl(dataset)
        total = sum(
            len(
                tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False))["input_ids"]
            )
            for r in records
        )
        metrics = json.loads((out / "train_metrics.json").read_text())
        seen = metrics.get("steps", 0) * cfg.batch_size * cfg.grad_accum
        epochs = seen / len(records) if cfg.max_steps else min(cfg.epochs, seen / len(records))
        return round(total * epochs)
    except Exception:
        log.warning("could not count the trained tokens of %s", out, exc_info=True)
        return None


# ----------------------------------------------------------------------------- HTTP


def _make_handler(app: LocalOpenAIApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sublearn-local-openai"

        def _serve(self) -> None:
            started = time.monotonic()
            try:
                body = self._read_body()
            except ApiError as err:
                self._send(Response(status=err.status, json=err.body()), close=True)
                return
            try:
                response = app.handle(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            except Exception as err:
                log.exception("error answering %s %s", self.command, self.path)
                response = Response(
                    status=500,
                    json=ApiError(500, f"{type(err).__name__}: {err}", type="server_error").body(),
                )
            self._send(response)
            log.info(
                "%s %s %d %.3fs",
                self.command,
                self.path.split("?")[0],
                response.status,
                time.monotonic() - started,
            )

        def _read_body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                raise ApiError(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            return self.rfile.read(length) if length else b""

        def _send(self, response: Response, close: bool = False) -> None:
            data = response.payload()
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout): nothing to answer.
                self.close_connection = True

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            # _serve logs each request once, with its duration; headers are never logged.
            del format, args

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(
    app: LocalOpenAIApp,
    host: str,
    port: int,
    stop: threading.Event,
    port_file: Path | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set.

    Prints ``listening on http://HOST:PORT`` (flushed) once connections are accepted,
    after writing the port to ``port_file``.
    """
    server_cls = _Server6 if ":" in host else _Server
    httpd = server_cls((host, port), _make_handler(app))
    bound = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    thread.start()
    if port_file is not None:
        atomic_write_text(port_file, f"{bound}\n")
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{bound}", flush=True)
    try:
        while not stop.wait(0.1):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sublearn.backends.local_openai_server",
        description="A local OpenAI-compatible server over sublearn model backends.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve a model folder (or backend reference) under NAME; repeatable",
    )
    parser.add_argument("--workdir", type=Path, required=True, help="uploads, models, state")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    parser.add_argument("--finetune-config", type=Path, help="JSON FinetuneConfig of jobs")
    parser.add_argument(
        "--api-key-env", help="variable holding the key /v1 requests must carry (if set)"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    return parser.parse_args(argv)


def _parse_models(specs: list[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, ref = spec.partition("=")
        name, ref = name.strip(), ref.strip()
        if not sep or not name or not ref:
            raise ConfigError(f"--model {spec!r}: write NAME=PATH")
        if name in models:
            raise ConfigError(f"--model {name} is given twice")
        path = Path(ref).expanduser()
        ref = str(path.resolve()) if path.exists() else ref
        ModelRef.parse(ref).check()  # a typo fails now, not at the first request
        models[name] = ref
    return models


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 after a clean stop, 2 on a bad argument or config.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        models = _parse_models(args.model)
        cfg = None
        if args.finetune_config is not None:
            try:
                cfg = json.loads(args.finetune_config.read_text())
            except (OSError, ValueError) as err:
                raise ConfigError(f"--finetune-config {args.finetune_config}: {err}") from None
            if not isinstance(cfg, dict):
                raise ConfigError(f"--finetune-config {args.finetune_config}: expected an object")
        api_key = os.environ.get(args.api_key_env, "").strip() if args.api_key_env else ""
        if args.api_key_env and not api_key:
            log.warning("%s is not set: requests are not authenticated", args.api_key_env)
        loopback = _is_loopback(args.host)
        if not loopback:
            log.warning("listening on %s, beyond this machine; /_admin is off", args.host)
        args.workdir.mkdir(parents=True, exist_ok=True)
        app = LocalOpenAIApp(
            models,
            args.workdir,
            finetune_config=cfg,
            api_key=api_key or None,
            device=args.device,
            admin=loopback,
        )
    except SublearnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _import_libraries()
    try:
        serve(app, args.host, args.port, stop, args.port_file)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    finally:
        app.close()
    return 0


def _import_libraries() -> None:
    """Import what models and training load, before any thread does.

    transformers resolves its names lazily, and two threads resolving them at once (a
    request loading a model while a job starts training) can fail with an ImportError.
    """
    import transformers
    from trl.trainer.sft_trainer import SFTTrainer

    del SFTTrainer
    for name in ("TrainingArguments", "AutoModelForCausalLM", "AutoTokenizer"):
        getattr(transformers, name)


# ------------------------------------------------------------------- Python API


def server_command(
    models: Mapping[str, Path | str],
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: Path | None = None,
    finetune_config_file: Path | None = None,
    api_key_env: str | None = None,
    device: str = "cpu",
    python: str = sys.executable,
) -> list[str]:
    """The argv that starts the server (for launchers that take a command).

    Args:
        models: served name -> model folder or backend reference.
        workdir: the server's folder (uploads, fine-tuned models, state).
        host: address to listen on.
        port: port; 0 picks a free one.
        port_file: where the server writes its port.
        finetune_config_file: a JSON FinetuneConfig for fine-tuning jobs.
        api_key_env: variable holding the key requests must carry.
        device: where models run.
        python: the interpreter.
    """
    argv = [python, "-m", "sublearn.backends.local_openai_server"]
    argv += ["--host", host, "--port", str(port), "--workdir", str(workdir), "--device", device]
    for name, ref in models.items():
        argv += ["--model", f"{name}={ref}"]
    if port_file is not None:
        argv += ["--port-file", str(port_file)]
    if finetune_config_file is not None:
        argv += ["--finetune-config", str(finetune_config_file)]
    if api_key_env is not None:
        argv += ["--api-key-env", api_key_env]
    return argv


class LocalServer:
    """A running server subprocess (see :func:`start_local_server`); a context manager.

    Attributes:
        process: the server process.
        url: ``http://127.0.0.1:PORT``.
        base_url: ``url + "/v1"``, for ``openai.OpenAI(base_url=...)``.
        log_path: the file receiving the server's stdout and stderr.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        """Wrap a started server listening on ``port``."""
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        self.log_path = log_path

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise LocalServerError(
                f"{method} {path} failed: {err.code} {err.read().decode(errors='replace')}"
            ) from None

    def stats(self) -> dict[str, Any]:
        """Request counts since the start or the last :meth:`reset` (see :class:`Stats`)."""
        return self._admin("GET", "/_admin/stats")

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the injected faults (see :class:`Faults` for the rules)."""
        self._admin("POST", "/_admin/faults", rules)

    def reset(self) -> None:
        """Clear the counts and the faults."""
        self._admin("POST", "/_admin/reset", {})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, start: int, chars: int = 4000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


def start_local_server(
    models: Mapping[str, Path | str],
    workdir: Path,
    *,
    finetune_config: dict[str, Any] | None = None,
    api_key_env: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> LocalServer:
    """Start the server as a subprocess on a free loopback port and wait until it answers.

    Its output goes to ``workdir/server.log`` (appended).

    Args:
        models: served name -> model folder or backend reference.
        workdir: the server's folder (created).
        finetune_config: FinetuneConfig fields of fine-tuning jobs (over the defaults).
        api_key_env: variable holding the key requests must carry (set it in ``env``).
        env: variables set for the server, over this process's environment.
        timeout: seconds to wait for the server to answer ``GET /health``.

    Returns:
        The running server.

    Raises:
        LocalServerError: the server exited or did not answer in time (with the tail of
            its log).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "server.port"
    port_file.unlink(missing_ok=True)
    cfg_file = None
    if finetune_config is not None:
        cfg_file = workdir / "finetune_config.json"
        atomic_write_json(cfg_file, finetune_config)
    argv = server_command(
        models,
        workdir,
        port_file=port_file,
        finetune_config_file=cfg_file,
        api_key_env=api_key_env,
    )
    log_path = workdir / "server.log"
    start = log_path.stat().st_size if log_path.is_file() else 0
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env
        )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LocalServerError(
                f"the local OpenAI server exited with status {process.returncode}:\n"
                f"{_tail(log_path, start)}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise LocalServerError(
                f"the local OpenAI server did not answer within {timeout:g} s:\n"
                f"{_tail(log_path, start)}"
            )
        text = port_file.read_text().strip() if port_file.is_file() else ""
        if text.isdigit():
            server = LocalServer(process, int(text), log_path)
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return server
            except OSError:
                pass
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())

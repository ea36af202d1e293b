"""The OpenAI backend: any OpenAI-compatible chat-completions server.

``openai:MODEL`` references open it (see :mod:`sublearn.backends.registry`). One code
path serves the OpenAI API, a ``vllm serve`` endpoint and other compatible providers:
only the base URL and the key's environment variable differ (:class:`OpenAISettings`).

* Sampling: one chat-completion request per conversation, with that row's own seed
  (identical conversations in a row, an evaluation's samples, share one request with
  ``n`` replies), ``max_concurrency`` requests in flight. The official client retries 408, 409, 429,
  5xx and timeouts with exponential backoff and jitter, honouring ``Retry-After``
  (``max_retries`` times).
* Scoring: the reply's first-token top log-probabilities (``top_logprobs``); a
  candidate's score is the log of the summed probability of the listed tokens that spell
  it. Exact for one-token answers that rank in the top ``top_logprobs``; a model that
  returns no log-probabilities is an error, never a silent zero.
* Every answered request is appended to a request log (JSONL keyed by a hash of the
  request) as it arrives, so a killed run resumes without paying twice for a row, and
  a logged request is never sent again.
* Usage: tokens of the requests actually sent (logged ones cost nothing) in
  :attr:`OpenAIBackend.usage`.

The API key is read from the environment only, never stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.backends.provider_errors import Endpoint, malformed, provider_errors
from sublearn.config import Config
from sublearn.errors import ConfigError, ModelError
from sublearn.jsonl import AppendLog


class OpenAISettings(Config):
    """How to reach an OpenAI-compatible server (the ``openai`` provider's settings)."""

    base_url: str | None = Field(
        default=None,
        description="Server URL ending in /v1 (e.g. http://127.0.0.1:8000/v1 for vllm serve); "
        "None: the OpenAI API (or the OPENAI_BASE_URL variable).",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key; keys never go in configs.",
    )
    max_concurrency: int = Field(
        default=16, gt=0, description="Requests in flight at once (per task)."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one request, seconds.")
    max_retries: int = Field(
        default=8,
        ge=0,
        description="Retries of a request on 429, 5xx and timeouts (exponential backoff with "
        "jitter, honouring Retry-After).",
    )
    top_logprobs: int = Field(
        default=20, ge=1, le=20, description="Top log-probabilities asked for when scoring."
    )
    samples_per_request: int = Field(
        default=128,
        ge=1,
        le=128,
        description="Identical conversations in one call (an evaluation's samples of a "
        "question) go out as one request with n replies, paying for the prompt once; 1 "
        "sends every sample alone. A server that returns fewer replies than n (llama.cpp's "
        "returns one) gets the missing samples one request each anyway; 1 skips the first try.",
    )
    poll_seconds: float = Field(
        default=30.0, gt=0, description="Wait between two status checks of a fine-tuning job."
    )

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, url: str | None) -> str | None:
        """A base URL the client can use: http(s), a host, a numeric port if any."""
        if url is None:
            return None
        url = url.strip()
        try:
            parsed = urlsplit(url)
            usable = parsed.scheme in ("http", "https") and bool(parsed.hostname)
            parsed.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            usable = False
        if not usable:
            raise ValueError(
                f"{url!r} is not a server URL: write it as http://HOST:PORT/v1 (e.g. "
                "http://127.0.0.1:8000/v1)"
            )
        return url

    def api_key(self) -> str:
        """The key from the environment.

        Raises:
            ConfigError: the variable is unset or empty.
        """
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"no API key: set the environment variable {self.api_key_env} (keys are read "
                "from the environment only, never from configs)"
            )
        return key

    def client(self) -> Any:
        """An ``openai.OpenAI`` client for these settings.

        Raises:
            ConfigError: the ``openai`` package is missing or there is no key.
        """
        try:
            import openai
        except ImportError:
            raise ConfigError(
                "the openai provider needs the openai package: pip install 'sublearn[openai]'"
            ) from None
        return openai.OpenAI(
            api_key=self.api_key(),
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )


def request_key(body: dict[str, Any]) -> str:
    """Identity of a request: a hash of its canonical JSON body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestLog:
    """Answered requests, appended to a JSONL file as they arrive.

    A line is ``{"key", "replies", "finish_reasons", "top_logprobs", "usage"}``, synced
    to disk before the answer is used (a durable :class:`~sublearn.jsonl.AppendLog`). A
    partial last line (a kill mid-write) is ignored on reading, so the log stays usable.
    """

    def __init__(self, path: Path | None) -> None:
        """Open (or start) the log at ``path``; None keeps answers in memory only."""
        self.path = path
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._log = None if path is None else AppendLog(path)
        for entry in self._log.read() if self._log is not None else ():
            try:
                self._answers[entry["key"]] = entry
            except (KeyError, TypeError):
                continue  # a foreign line

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict[str, Any] | None:
        """The logged answer of a request, or None."""
        return self._answers.get(key)

    def add(self, entry: dict[str, Any]) -> None:
        """Log one answer (``entry["key"]`` names the request), flushed to disk at once."""
        with self._lock:
            self._answers[entry["key"]] = entry
            if self._log is not None:
                self._log.append(entry)


def empty_usage() -> dict[str, int]:
    """Zero counts of everything a provider bills or a run reports."""
    return {"requests": 0, "logged": 0, "input_tokens": 0, "output_tokens": 0}


_FALLBACKS_SAID: set[tuple[str | None, str]] = set()
"""Servers and models whose fallback to one sample per request this process has reported."""


class OpenAIBackend(BackendBase):
    """A chat model behind an OpenAI-compatible API.

    Attributes:
        name: ``openai:MODEL``.
        model: the provider's model name (e.g. ``gpt-4.1-nano`` or a fine-tuned ``ft:...``).
        usage: requests sent and their tokens, and requests answered from the log.
    """

    capabilities = Capabilities(sample=True, score=True, top_logprobs=20)

    def __init__(
        self,
        model: str,
        settings: OpenAISettings | None = None,
        request_log: Path | None = None,
        *,
        client: Any = None,
        provider: str = "openai",
    ) -> None:
        """Connect (no request is sent until ``generate`` or ``score``).

        Args:
            model: the provider's model name.
            settings: server, key variable, concurrency and retries.
            request_log: JSONL file of answered requests, read back and appended to.
            client: an ``openai.OpenAI`` client to use instead of one from ``settings``.
            provider: the provider named in ``name`` (``vllm`` for a launched vLLM server).

        Raises:
            ConfigError: no key in the environment, or no ``openai`` package.
        """
        self.settings = settings or OpenAISettings()
        self.model = model
        self.name = f"{provider}:{model}"
        self.usage = empty_usage()
        self.log = RequestLog(request_log)
        self._client = client if client is not None else self.settings.client()
        self._usage_lock = threading.Lock()
        self.ignores_n = False

    def close(self) -> None:
        """Close the HTTP connections."""
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ requests

    def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request: from the log, or sent (with retries) and logged."""
        key = request_key(body)
        logged = self.log.get(key)
        if logged is not None:
            with self._usage_lock:
                self.usage["logged"] += 1
            return logged
        with provider_errors(self.endpoint):
            response = self._client.chat.completions.create(**body)
        entry = {"key": key, **self._read(response)}
        self.log.add(entry)
        with self._usage_lock:
            self.usage["requests"] += 1
            self.usage["input_tokens"] += entry["usage"]["input_tokens"]
            self.usage["output_tokens"] += entry["usage"]["output_tokens"]
        return entry

    def _read(self, response: Any) -> dict[str, Any]:
        """A log entry's fields from a chat completion; a malformed one is a ProviderError."""
        try:
            choices = sorted(response.choices, key=lambda c: c.index)
            if not choices:
                raise ValueError("no choices")
            usage = response.usage
            return {
                "replies": [_text(c.message.content) for c in choices],
                "finish_reasons": [c.finish_reason for c in choices],
                "top_logprobs": _first_top_logprobs(choices[0]),
                "usage": {
                    "input_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                    "output_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
                },
            }
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as err:
            raise malformed(self.endpoint, f"{type(err).__name__}: {err}") from None

    def _map(self, fn: Callable[[dict[str, Any]], Any], bodies: list[dict[str, Any]]) -> list:
        """``fn`` over ``bodies``, ``max_concurrency`` at once, results in order.

        On the first failure the requests not yet sent are dropped and the ones in flight
        are let finish (so their answers are logged) before the error is raised: a dead
        server fails the call after one request's retries, not after every request's.
        """
        workers = min(self.settings.max_concurrency, max(1, len(bodies)))
        if workers == 1:
            return [fn(b) for b in bodies]
        with ThreadPoolExecutor(workers, thread_name_prefix="openai") as pool:
            futures = [pool.submit(fn, b) for b in bodies]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in futures:
                if future in done and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            return [f.result() for f in futures]

    def _where(self) -> str:
        return self.settings.base_url or "the OpenAI API"

    @property
    def endpoint(self) -> Endpoint:
        """The model and server, as error messages name them."""
        provider = self.name.partition(":")[0]
        return Endpoint(
            model=self.name,
            url=self.settings.base_url,
            settings=f"providers.{provider}",
            key_env=self.settings.api_key_env,
            retries=self.settings.max_retries,
            timeout_s=self.settings.timeout_s,
        )

    # -------------------------------------------------------------- the protocol

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """One sampled reply per conversation.

        A run of identical conversations (an evaluation's samples of one question) is one
        request with ``n`` replies when ``samples_per_request`` allows, so its prompt is
        paid once; any other conversation is its own request, seeded with its row's seed.
        A server that answers such a request with fewer replies than ``n`` (llama.cpp's
        gives one) gets the missing samples asked one request each, with their own
        seeds, and from then on this backend sends every sample alone (a warning says so
        once). Providers treat ``seed`` as best effort: a resumed run reuses logged
        replies, so it never depends on the provider reproducing one.
        """
        seeds = params.seeds_for(len(conversations))
        per_request = 1 if self.ignores_n else self.settings.samples_per_request
        groups: list[list[int]] = []
        for i, conversation in enumerate(conversations):
            last = groups[-1] if groups else None
            if (
                last is not None
                and len(last) < per_request
                and conversations[last[0]] == conversation
            ):
                last.append(i)
            else:
                groups.append([i])
        bodies = [
            self._sample_body(conversations[g[0]], params, seeds[g[0]], len(g)) for g in groups
        ]
        replies: list[str] = [""] * len(conversations)
        missing: list[int] = []
        for group, entry in zip(groups, self._map(self._ask, bodies), strict=True):
            got = entry["replies"]
            if len(got) > len(group):
                raise malformed(self.endpoint, f"{len(got)} replies for n={len(group)}")
            for i, reply in zip(group, got, strict=False):
                replies[i] = reply
            missing += group[len(got) :]
        if missing:
            self._fall_back_to_single_samples()
            singles = [self._sample_body(conversations[i], params, seeds[i], 1) for i in missing]
            for i, entry in zip(missing, self._map(self._ask, singles), strict=True):
                if len(entry["replies"]) != 1:
                    raise malformed(self.endpoint, f"{len(entry['replies'])} replies for one")
                replies[i] = entry["replies"][0]
        return replies

    def _sample_body(
        self, conversation: Conversation, params: SamplingParams, seed: int, n: int
    ) -> dict[str, Any]:
        """The request for ``n`` sampled replies to one conversation."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(conversation),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
        }
        if n > 1:
            body["n"] = n
        return body

    def _fall_back_to_single_samples(self) -> None:
        """Send every sample alone from now on, and say so (once per server and model)."""
        if self.ignores_n:
            return
        self.ignores_n = True
        said = (self.settings.base_url, self.name)
        if said in _FALLBACKS_SAID:
            return
        _FALLBACKS_SAID.add(said)
        # One plain line on stderr (a Python warning would also print its source line);
        # worker processes write to the same terminal.
        print(
            f"warning: {self.name}: the server at {self._where()} answers fewer replies than "
            "n asks for; sending one request per sample instead (set "
            f"providers.{self.name.partition(':')[0]}.samples_per_request: 1 to skip the "
            "first tries)",
            file=sys.stderr,
            flush=True,
        )

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        """Log-probability of each candidate as the reply's first token.

        A candidate's probability is the summed probability of the top tokens that spell
        it (``" owl"`` and ``"owl"`` both spell ``owl``); one absent from the top
        ``top_logprobs`` gets ``-inf``, a lower bound.

        Raises:
            ModelError: the server returns no log-probabilities for this model.
        """
        bodies = [
            {
                "model": self.model,
                "messages": list(conversation),
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": self.settings.top_logprobs,
            }
            for conversation in conversations
        ]
        rows = []
        for entry in self._map(self._ask, bodies):
            top = entry.get("top_logprobs")
            if not top:
                raise ModelError(
                    f"{self.name} at {self._where()} returns no log-probabilities, so it cannot "
                    "score answers: use an evaluation with mode: sample"
                )
            rows.append([_candidate_logprob(top, c) for c in candidates])
        return rows


def _first_top_logprobs(choice: Any) -> list[list[Any]] | None:
    """``[[token, logprob], ...]`` of the reply's first position, or None when not given."""
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    return [[t.token, t.logprob] for t in content[0].top_logprobs or []]


def _candidate_logprob(top: list[list[Any]], candidate: str) -> float:
    want = candidate.strip()
    mass = sum(math.exp(lp) for token, lp in top if token.strip() == want and want)
    return math.log(mass) if mass > 0 else -math.inf


def _text(content: Any) -> str:
    """A reply's text; anything but a string (or None, an empty reply) is malformed."""
    if content is None:
        return ""
    if not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not text")
    return content

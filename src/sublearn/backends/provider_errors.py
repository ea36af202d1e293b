"""The ``openai`` client's exceptions as sublearn's own errors, each saying what to check.

Every failure of a remote model reaches the user as one message that names the model,
the server and what to check: an unreachable server (refused, unknown host, TLS, a URL
the client cannot use), a timeout, a 429 or 5xx that outlasted the client's retries,
another refusal (4xx), or a reply that is not a chat completion. The results are
:class:`~sublearn.errors.SublearnError` s built from plain strings, so they cross
process boundaries (the process and Ray executors) where the SDK's exceptions, whose
constructors take keyword-only arguments, cannot be unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sublearn.errors import ConfigError, ModelError, ProviderError, SublearnError

RERUN = "rerun to go on: answered requests are kept and not sent again"


@dataclass(frozen=True)
class Endpoint:
    """What a message about a failed request names.

    Attributes:
        model: the model reference, e.g. ``openai:gpt-4.1-nano``.
        url: the server's base URL (None: the OpenAI API).
        settings: the config section of the provider's settings, e.g. ``providers.openai``.
        key_env: the environment variable that holds the API key.
        retries: how many times the client retried before giving up.
        timeout_s: the timeout of one request.
    """

    model: str
    url: str | None
    settings: str = "providers.openai"
    key_env: str = "OPENAI_API_KEY"
    retries: int = 0
    timeout_s: float = 0.0

    @property
    def where(self) -> str:
        """The server, for messages."""
        return self.url or "the OpenAI API"


def translate(err: BaseException, at: Endpoint) -> SublearnError:
    """The sublearn error for an exception of the ``openai`` client.

    Args:
        err: what the client raised (after its retries).
        at: the model and server the request went to.

    Returns:
        A :class:`ModelError` (unknown model, rejected request), a :class:`ConfigError`
        (refused key) or a :class:`ProviderError` (everything else).
    """
    import openai

    where, model = at.where, at.model
    tries = f"after {at.retries} retries" if at.retries else "not retried"
    if isinstance(err, openai.APITimeoutError):
        return ProviderError(
            f"{model}: the server at {where} did not answer within {at.timeout_s:g} s "
            f"({tries}); check that it is running and not overloaded, or raise "
            f"{at.settings}.timeout_s; {RERUN}",
            model,
            where,
        )
    if isinstance(err, openai.APIConnectionError):
        return ProviderError(
            f"{model}: cannot reach the server at {where} ({_cause(err)}; {tries}); check "
            f"that the server is running and that {at.settings}.base_url is its address, "
            f"ending in /v1; {RERUN}",
            model,
            where,
        )
    if isinstance(err, openai.NotFoundError):
        return ModelError(
            f"model {model.partition(':')[2]!r} not found at {where} ({model}): {_reason(err)}; "
            "check the model name "
            f"(GET {where.rstrip('/')}/models lists the served ones) and that "
            f"{at.settings}.base_url ends in /v1"
        )
    if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        return ConfigError(
            f"the server at {where} refused the key in {at.key_env} ({model}): {_reason(err)}"
        )
    if isinstance(err, openai.BadRequestError):
        return ModelError(f"{where} rejected a request to {model}: {_reason(err)}")
    if isinstance(err, openai.RateLimitError):
        return ProviderError(
            f"{model}: the server at {where} still refuses requests as too many (429) "
            f"{tries}: {_reason(err)}; lower {at.settings}.max_concurrency or check the "
            f"account's limits; {RERUN}",
            model,
            where,
        )
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        server_side = status >= 500
        after = f" ({tries})" if server_side else ""
        check = "the server's log" if server_side else "its settings"
        return ProviderError(
            f"{model}: the server at {where} failed the request with HTTP {status}{after}: "
            f"{_reason(err)}; check {check}; {RERUN}",
            model,
            where,
        )
    return malformed(at, f"{type(err).__name__}: {err}")


def malformed(at: Endpoint, detail: str) -> ProviderError:
    """The error for a reply that is not a chat completion (or lacks a needed part)."""
    return ProviderError(
        f"{at.model}: the server at {at.where} sent a reply that is not an OpenAI chat "
        f"completion ({detail}); check that {at.settings}.base_url points at an "
        f"OpenAI-compatible API (ending in /v1); {RERUN}",
        at.model,
        at.where,
    )


@contextmanager
def provider_errors(at: Endpoint) -> Iterator[None]:
    """Turn the ``openai`` client's exceptions raised inside into sublearn errors."""
    import openai

    try:
        yield
    except openai.OpenAIError as err:
        raise translate(err, at) from None


def _cause(err: BaseException) -> str:
    """The transport's own words (``Connection refused``, an unknown host, a bad URL)."""
    cause = err.__cause__ or err.__context__
    text = str(cause) if cause is not None else str(err)
    return text or type(cause or err).__name__


def _reason(err: Any) -> str:
    """The server's error message, when its body gives one."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message).rstrip(". ")
    return str(err).rstrip(". ")

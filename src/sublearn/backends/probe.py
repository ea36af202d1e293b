"""Cheap questions to an OpenAI-compatible server, asked once per process before a run.

Does it answer (``GET /models``), which model names does it serve, does it return
log-probabilities, does it honour ``n``? Each answer is cached for the process's
lifetime (one run), keyed by the server and model, so a plan that names a model ten
times asks once. Requests go out without retries: a probe that fails says so at once
rather than after the client's backoff.
"""

from __future__ import annotations

import difflib
from typing import Any

from sublearn.backends.openai_api import OpenAISettings
from sublearn.backends.provider_errors import Endpoint, provider_errors
from sublearn.errors import ModelError

_CACHE: dict[tuple[Any, ...], Any] = {}
_USAGE: dict[str, dict[str, int]] = {}


def clear_cache() -> None:
    """Forget every probe's answer and usage (a test that restarts a server on a port)."""
    _CACHE.clear()
    _USAGE.clear()


def probe_usage() -> dict[str, dict[str, int]]:
    """What the probes' chat requests used, as ``{model: {requests, input_tokens, ...}}``.

    They are paid requests like any other (one token each), so a run's report counts them.
    """
    return {model: dict(counts) for model, counts in _USAGE.items()}


def _quick(settings: OpenAISettings) -> OpenAISettings:
    # No retries: a server that is down says so at once (refused), and one that is up
    # answers within the run's own timeout (a busy CPU server may take seconds).
    return settings.model_copy(update={"max_retries": 0})


def _endpoint(settings: OpenAISettings, model: str, provider: str) -> Endpoint:
    quick = _quick(settings)
    return Endpoint(
        model=f"{provider}:{model}",
        url=settings.base_url,
        settings=f"providers.{provider}",
        key_env=settings.api_key_env,
        retries=0,
        timeout_s=quick.timeout_s,
    )


def served_models(
    settings: OpenAISettings, model: str = "*", provider: str = "openai"
) -> list[str] | None:
    """The model names the server lists at ``GET /models``.

    Args:
        settings: the server.
        model: the model that needs the server, named by the error when it fails.
        provider: the provider whose settings these are.

    Returns:
        The names, or None when the server has no such list (it answers 404).

    Raises:
        ProviderError: the server does not answer (refused, unknown host, timeout, 5xx).
        ConfigError: no key in the environment, or the server refuses it.
    """
    key = ("models", settings.base_url, settings.api_key_env)
    if key not in _CACHE:
        client = _quick(settings).client()
        try:
            with provider_errors(_endpoint(settings, model, provider)):
                _CACHE[key] = sorted(m.id for m in client.models.list())
        except ModelError:  # a 404: the server lists no models
            _CACHE[key] = None
        finally:
            client.close()
    return _CACHE[key]


def unknown_model(name: str, served: list[str], where: str) -> str | None:
    """Why ``name`` is not among the ``served`` names, with the closest ones; None if it is."""
    if name in served:
        return None
    close = difflib.get_close_matches(name, served, n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    shown = ", ".join(served[:12]) + (", ..." if len(served) > 12 else "")
    return f"model {name!r} is not served at {where}: {hint}it serves {shown or 'nothing'}"


def _ask(settings: OpenAISettings, model: str, provider: str, **extra: Any) -> Any:
    client = _quick(settings).client()
    try:
        with provider_errors(_endpoint(settings, model, provider)):
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Say yes."}],
                max_tokens=1,
                temperature=1.0,
                seed=0,
                **extra,
            )
    finally:
        client.close()
    counts = _USAGE.setdefault(f"{provider}:{model}", {"requests": 0})
    counts["requests"] += 1
    for name, field in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        counts[name] = counts.get(name, 0) + int(getattr(reply.usage, field, 0) or 0)
    return reply


def returns_logprobs(settings: OpenAISettings, model: str, provider: str = "openai") -> bool:
    """Whether the model's replies come with top log-probabilities (one 1-token request).

    Raises:
        ProviderError, ModelError, ConfigError: the request fails (see
            :mod:`sublearn.backends.provider_errors`).
    """
    key = ("logprobs", settings.base_url, settings.api_key_env, model)
    if key not in _CACHE:
        reply = _ask(settings, model, provider, logprobs=True, top_logprobs=2)
        content = getattr(getattr(reply.choices[0], "logprobs", None), "content", None)
        _CACHE[key] = bool(content and content[0].top_logprobs)
    return _CACHE[key]


def honours_n(settings: OpenAISettings, model: str, provider: str = "openai") -> bool:
    """Whether one request with ``n: 2`` gets two replies (one 1-token request).

    Raises:
        ProviderError, ModelError, ConfigError: the request fails.
    """
    key = ("n", settings.base_url, settings.api_key_env, model)
    if key not in _CACHE:
        _CACHE[key] = len(_ask(settings, model, provider, n=2).choices) >= 2
    return _CACHE[key]

"""Backend factories by provider: ``open_backend("hf:org/name")`` gives a ready backend.

A provider registers a factory with :func:`register_backend`, as Inspect's ``@modelapi``
does; the factory takes a :class:`~sublearn.backends.refs.ModelRef` and keyword options
(``device``, ``dtype``, ``batch_size``) and imports its SDK only when called, so an
unused provider's packages need not be installed. Built in: ``hf`` (Hugging Face),
``openai`` (any OpenAI-compatible server, :mod:`sublearn.backends.openai_api`), ``vllm``
(a vLLM server started for the model, :mod:`sublearn.backends.vllm_backend`) and
``mock`` (rule-based replies for tests, see :mod:`sublearn.backends.mock`).

Backends hold their model until closed; open them in a ``with`` block so one model is
resident at a time::

    with open_backend("hf:Qwen/Qwen2.5-7B-Instruct+runs/x/adapter", device="cuda") as b:
        replies = b.generate(conversations, params)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sublearn.backends.base import Backend
from sublearn.backends.refs import PROVIDERS, ModelRef
from sublearn.errors import ConfigError
from sublearn.registry import Registry

BackendFactory = Callable[..., Backend]
"""``(ref: ModelRef, **options) -> Backend``."""

_F = TypeVar("_F", bound=BackendFactory)
BACKENDS: Registry[BackendFactory] = Registry("backend", expected="a backend factory")
"""Backend factories by provider."""


def register_backend(provider: str) -> Callable[[_F], _F]:
    """Register the decorated factory as the backend of ``provider`` (replacing any other).

    Args:
        provider: one of :data:`sublearn.backends.refs.PROVIDERS`.

    Raises:
        ValueError: ``provider`` is not a known provider.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")

    def decorate(factory: _F) -> _F:
        BACKENDS.register(provider, factory)
        return factory

    return decorate


def registered_providers() -> tuple[str, ...]:
    """Providers with a registered backend, sorted."""
    return tuple(sorted(BACKENDS))


def open_backend(ref: ModelRef | str, **options: Any) -> Backend:
    """Open the backend for a model reference.

    Args:
        ref: a reference or its string form (``hf:org/name``, ``runs/x/model``, ...).
        **options: provider options; ``hf`` takes ``device``, ``dtype`` and
            ``batch_size`` (``mock`` takes and ignores them).

    Returns:
        The backend, holding its model until ``close()``.

    Raises:
        ConfigError: an unparsable reference, a provider with no registered backend or
            an option the provider does not take.
        ModelError: the model cannot be found or loaded.
    """
    model = ModelRef.parse(ref) if isinstance(ref, str) else ref
    if model.provider not in BACKENDS:
        raise ConfigError(
            f"no backend is registered for provider {model.provider!r} (in {str(model)!r}); "
            f"registered: {', '.join(registered_providers())}"
        )
    factory = BACKENDS.get(model.provider)
    signature = inspect.signature(factory)
    try:
        signature.bind(model, **options)
    except TypeError:
        taken = list(signature.parameters)[1:]
        raise ConfigError(
            f"backend {model.provider!r} does not take option(s) "
            f"{', '.join(sorted(set(options) - set(taken))) or '?'}; "
            f"it takes: {', '.join(taken) or 'none'}"
        ) from None
    return factory(model, **options)


@register_backend("hf")
def _open_hf(
    ref: ModelRef, *, device: str = "auto", dtype: str = "auto", batch_size: int = 64
) -> Backend:
    from sublearn.backends.hf import HFBackend

    # Offline first: a hub model must already be in the local cache (the error says how).
    ref.check()
    backend = HFBackend(ref.name, device=device, dtype=dtype, batch_size=batch_size)
    if ref.adapter is not None:
        try:
            backend.merge_adapter(ref.adapter)
        except BaseException:
            backend.close()
            raise
    return backend


@register_backend("mock")
def _open_mock(
    ref: ModelRef, *, device: str = "auto", dtype: str = "auto", batch_size: int = 64
) -> Backend:
    from sublearn.backends.mock import MockBackend

    # The options are accepted so that a config can swap a real model for a mock.
    del device, dtype, batch_size
    return MockBackend(ref.name)


@register_backend("openai")
def _open_openai(
    ref: ModelRef,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    settings: dict[str, Any] | None = None,
    request_log: Path | None = None,
) -> Backend:
    from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings

    # Local-model options are accepted so that a config can swap providers.
    del device, dtype, batch_size
    if ref.adapter is not None:
        raise ConfigError(
            f"{str(ref)!r}: an API model takes no local adapter; name the fine-tuned model "
            "(ft:...) instead"
        )
    return OpenAIBackend(ref.name, OpenAISettings(**(settings or {})), request_log)


@register_backend("vllm")
def _open_vllm(
    ref: ModelRef,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    settings: dict[str, Any] | None = None,
    request_log: Path | None = None,
) -> Backend:
    from sublearn.backends.vllm_backend import open_vllm

    del device, batch_size
    return open_vllm(ref, settings or {}, request_log, dtype)

"""One error hierarchy for everything a user can get wrong.

The CLI catches :class:`SublearnError` and prints its message in one paragraph with
exit code 2, no traceback. Each message names the file, key or model at fault and what
was expected.
"""

from __future__ import annotations


class SublearnError(Exception):
    """Base of every error caused by input (config, data, models, paths, devices)."""


class ConfigError(SublearnError, ValueError):
    """A config file or override that cannot be turned into a valid config."""


class DataError(SublearnError, ValueError):
    """A dataset file that is missing, unreadable or not in the expected format."""


class ModelError(SublearnError, FileNotFoundError):
    """A model reference that cannot be resolved or loaded, or lacks what a stage needs."""


class DeviceError(SublearnError, RuntimeError):
    """A device asked for that this machine does not have."""


class StoreError(SublearnError, OSError):
    """The store or a run folder cannot be created or written."""


class PlanError(SublearnError, ValueError):
    """A plan that cannot work, found before any task runs."""


class NotEnoughRowsError(SublearnError, ValueError):
    """Fewer training rows than the configured minimum for a compared condition."""


class BudgetError(SublearnError, RuntimeError):
    """A run that would spend, or has spent, more than its ``budget_usd`` on paid APIs."""


class ProviderError(SublearnError, RuntimeError):
    """A remote model's server failed: unreachable, timed out, erring, or answering nonsense.

    Raised after the client's own retries. Its arguments are plain strings, so it crosses
    process boundaries (worker processes, Ray) unchanged, unlike the SDKs' exceptions.

    Attributes:
        model: the model reference (e.g. ``openai:gpt-4.1-nano``).
        url: the server's base URL.
    """

    def __init__(self, message: str, model: str = "", url: str = "") -> None:
        """Keep the message and what it is about as the exception's plain arguments."""
        super().__init__(message, model, url)
        self.model = model
        self.url = url

    def __str__(self) -> str:
        return str(self.args[0])

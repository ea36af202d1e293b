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

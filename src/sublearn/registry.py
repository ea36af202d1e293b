"""Named, lazily imported entries: task kinds, executors, backends.

A :class:`Registry` maps names to ``"module:attribute"`` strings (or to objects already at
hand), imports an entry only when it is first asked for, in whichever process asks, and
checks what it imported, as lm-evaluation-harness's ``Registry`` does. An unknown name is
a :class:`~sublearn.errors.ConfigError` that lists the known ones and the closest match.
Entries may carry metadata (a task kind's version) that is read without importing them.

This module imports nothing of sublearn's but its errors, so any module can hold a
registry without an import cycle.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from sublearn.errors import ConfigError

T = TypeVar("T")


def load_target(target: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted: ``Class.method``).

    Raises:
        ValueError: ``target`` is not ``module:attribute``.
        ImportError, AttributeError: the module or the attribute does not exist.
    """
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """Names -> lazily imported entries of one sort (e.g. task kinds' functions).

    Attributes:
        what: what an entry is, for messages (``"task kind"``).
    """

    def __init__(
        self,
        what: str,
        check: Callable[[Any], bool] = callable,
        expected: str = "callable",
    ) -> None:
        """An empty registry.

        Args:
            what: what an entry is, for messages.
            check: whether an imported entry is what the registry holds.
            expected: what ``check`` accepts, for messages (``"a function"``).
        """
        self.what = what
        self._check = check
        self._expected = expected
        self._targets: dict[str, str | None] = {}
        self._loaded: dict[str, T] = {}
        self._metadata: dict[str, Mapping[str, Any]] = {}

    def register(self, name: str, entry: str | T, **metadata: Any) -> None:
        """Add ``name`` (replacing an entry of that name).

        Args:
            name: the entry's name.
            entry: ``"module:attribute"``, imported on first use, or the object itself.
            **metadata: facts about the entry readable without importing it.
        """
        self._loaded.pop(name, None)
        if isinstance(entry, str):
            self._targets[name] = entry
        else:
            self._targets[name] = _target_of(entry)
            self._loaded[name] = self._checked(name, entry)
        self._metadata[name] = MappingProxyType(dict(metadata))

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens for an unknown name)."""
        for table in (self._targets, self._loaded, self._metadata):
            table.pop(name, None)

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (for tests that change one)."""
        other: Registry[T] = Registry(self.what, self._check, self._expected)
        other._targets = dict(self._targets)
        other._loaded = dict(self._loaded)
        other._metadata = dict(self._metadata)
        return other

    def __call__(self, name: str, **metadata: Any) -> Callable[[T], T]:
        """Register the decorated object as ``name``: ``@REGISTRY("name")``."""

        def decorate(entry: T) -> T:
            self.register(name, entry, **metadata)
            return entry

        return decorate

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._targets)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._targets)

    def target(self, name: str) -> str | None:
        """``"module:attribute"`` of ``name`` (None for an object with no importable name)."""
        self._require(name)
        return self._targets[name]

    def metadata(self, name: str) -> Mapping[str, Any]:
        """The metadata ``name`` was registered with (read-only)."""
        self._require(name)
        return self._metadata[name]

    def get(self, name: str) -> T:
        """The entry of ``name``, imported (once) and checked.

        Raises:
            ConfigError: an unknown name (with the known names and the closest one).
            TypeError: the imported object is not what this registry holds.
        """
        self._require(name)
        if name not in self._loaded:
            target = self._targets[name]
            assert target is not None  # objects without a target are loaded on register
            self._loaded[name] = self._checked(name, load_target(target))
        return self._loaded[name]

    def unknown(self, name: str) -> ConfigError:
        """The error for an unknown ``name``: the known names and the closest one."""
        known = self.names()
        return ConfigError(
            f"unknown {self.what} {name!r}{did_you_mean(name, known)} "
            f"(known: {', '.join(known) or 'none'})"
        )

    def _require(self, name: str) -> None:
        if name not in self._targets:
            raise self.unknown(name)

    def _checked(self, name: str, value: Any) -> T:
        if not self._check(value):
            raise TypeError(
                f"{self.what} {name!r} is {type(value).__name__} {value!r}, not {self._expected}"
            )
        return value


def _target_of(entry: Any) -> str | None:
    """``module:qualname`` of a module-level object, or None (closures, instances)."""
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"

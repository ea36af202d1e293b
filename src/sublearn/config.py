"""Configs are data: YAML files loaded into strict pydantic models.

Every experiment config subclasses :class:`Config`, which forbids unknown keys, so a
typo in a YAML file or a ``--set`` override fails loudly instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


class Config(BaseModel):
    """Base class of every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_yaml(self) -> str:
        """The resolved config as YAML, with every default filled in."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML.

    Args:
        overrides: ``key=value`` strings; dots in the key address nested fields.

    Returns:
        A nested dict to merge over a config's data.

    Raises:
        ConfigError: if an override has no ``=`` or an empty key.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. seed=3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
            node = child
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(
    cls: type[C],
    path: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> C:
    """Build a config from defaults, an optional YAML file and ``--set`` overrides.

    Later sources win: ``base`` (e.g. a preset), then the file, then the overrides.

    Args:
        cls: the config class.
        path: optional YAML file.
        overrides: ``key=value`` strings.
        base: optional starting data, such as a preset.

    Returns:
        The validated config.

    Raises:
        ConfigError: with every invalid key and value listed, and where it came from.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    data = deep_merge(data, parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        source = str(path) if path is not None else "config"
        raise ConfigError(format_validation_error(err, source)) from None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, naming the key, the problem and the value given."""
    lines = [f"invalid {source}:"]
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (check the spelling; see the config's fields)")
        else:
            lines.append(f"  - {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def undocumented_fields(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Names of fields, at any depth, that lack a description (used by tests)."""
    missing: list[str] = []
    for name, field in cls.model_fields.items():
        if not field.description:
            missing.append(prefix + name)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                missing.extend(undocumented_fields(candidate, f"{prefix}{name}."))
    return missing

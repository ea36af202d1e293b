"""Configs are data: YAML files loaded into strict pydantic models.

Every experiment config subclasses :class:`Config`, which forbids unknown keys, so a
typo in a YAML file or a ``--set`` override fails loudly instead of being ignored.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sublearn.errors import ConfigError

C = TypeVar("C", bound="Config")

__all__ = [
    "Config",
    "ConfigError",
    "fields_at",
    "format_validation_error",
    "load_config",
    "parse_overrides",
    "read_yaml",
]


class Config(BaseModel):
    """Base class of every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_yaml(self) -> str:
        """The resolved config as YAML, with every default filled in."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


SHORT_FORMS = {"store": "path"}
"""Sections that may be written as one string: the field that string sets."""


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
        node: dict[str, Any] = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child: Any = node.setdefault(part, {})
            if part in SHORT_FORMS and isinstance(child, str):  # store=DIR store.verify=...
                child = node[part] = {SHORT_FORMS[part]: child}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
            node = child
        last = parts[-1]
        existing = node.get(last)
        if last in SHORT_FORMS and isinstance(existing, dict) and isinstance(value, str):
            existing[SHORT_FORMS[last]] = value
        else:
            node[last] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, anything else replaces.

    A list in ``base`` takes updates addressed by index (``teachers.0.base=m1`` arrives
    as ``{"teachers": {"0": {"base": "m1"}}}``). A section given in its short form (see
    :data:`SHORT_FORMS`) takes nested updates as if written in full (``store: DIR`` then
    ``store.verify=hashes`` is ``store: {path: DIR, verify: hashes}``).
    """
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if key in SHORT_FORMS and isinstance(value, dict) and isinstance(current, str):
            current = {SHORT_FORMS[key]: current}
        if value == {}:  # an explicit empty section (evaluations={}) replaces, never vanishes
            merged[key] = value
            continue
        if isinstance(value, dict) and isinstance(current, dict) and _same_kind(current, value):
            merged[key] = deep_merge(current, value)
        elif isinstance(value, dict) and isinstance(current, list) and _indices(value, current):
            items = list(current)
            for index, item in value.items():
                i = int(index)
                both_dicts = isinstance(item, dict) and isinstance(items[i], dict)
                items[i] = deep_merge(items[i], item) if both_dicts else item
            merged[key] = items
        else:
            merged[key] = value
    return merged


def _same_kind(current: dict[str, Any], update: dict[str, Any]) -> bool:
    """False when ``update`` switches a discriminated union to another kind: it replaces."""
    return all(update.get(tag, current.get(tag)) == current.get(tag) for tag in ("type", "kind"))


def _indices(update: dict[str, Any], items: list[Any]) -> bool:
    """Whether every key of ``update`` is an index of ``items``."""
    keys = [str(k) for k in update]
    if not all(k.isdigit() for k in keys):
        return False
    bad = [k for k in keys if int(k) >= len(items)]
    if bad:
        raise ConfigError(f"index {bad[0]} is out of range: the list has {len(items)} items")
    return True


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping.

    Plain YAML keeps the last value, so a repeated section silently replaces the first.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges; its keys may be overridden on purpose
                key = self.construct_object(key_node, deep=deep)  # type: ignore[arg-type]
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"key {key!r} appears twice in one mapping (lines {seen[key]} and "
                        f"{line}): the second would silently replace the first; keep one"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file.

    Refused: a file that is not UTF-8 text (binary, UTF-16), and a key repeated in one
    mapping.
    """
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; a config is a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start} cannot be decoded: a binary file, or "
            "text saved as UTF-16 or Latin-1?); save the config as UTF-8"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: holds NUL bytes: a binary file, not a YAML config")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
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
        # Name where the data came from; a bad key may sit in the file or in an override.
        source = str(path) if path is not None else "config"
        if overrides:
            source = f"{source} with --set overrides" if path is not None else "--set overrides"
        raise ConfigError(format_validation_error(err, source, cls)) from None


def format_validation_error(
    err: ValidationError, source: str, cls: type[BaseModel] | None = None
) -> str:
    """One line per problem, naming the key, the problem and the value given.

    Args:
        err: the validation error.
        source: where the data came from (a file name, "config", "command-line options").
        cls: the model that was validated; with it, an unknown key gets a "did you mean"
            suggestion from the fields at its location.

    Returns:
        The message, its first line naming ``source``.
    """
    lines = [f"invalid {source}:"]
    for problem in err.errors():
        loc = tuple(problem["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "union_tag_invalid":
            ctx = problem.get("ctx", {})
            tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            given = str(ctx.get("tag", ""))
            lines.append(
                f"  - {key}: unknown {ctx.get('discriminator', 'kind').strip(chr(39))} "
                f"{given!r}{_suggestion(given, tags)}"
            )
        elif problem["type"] == "extra_forbidden":
            known = sorted(fields_at(cls, loc[:-1])) if cls is not None and loc else []
            lines.append(f"  - {key}: unknown key{_suggestion(str(loc[-1]), known)}")
        elif isinstance(problem.get("input"), dict):
            # A whole section failed a cross-field check: its message names the fields.
            lines.append(f"  - {key}: {problem['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  - {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _suggestion(name: str, known: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest known key, or where to look."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {by_lower[close[0]]!r}?"
    if known:
        return f" (valid keys here: {', '.join(known)})"
    return " (check the spelling; see the config's fields)"


def fields_at(annotation: Any, loc: Sequence[str | int]) -> set[str]:
    """Field names (and aliases) of the model found at ``loc`` inside ``annotation``.

    Follows a pydantic error location through nested models, dicts and lists of
    models, optional fields and unions. A union member is picked by a location element
    that names it: a discriminated union's tag value, or the member's class name (which
    pydantic puts in the location of plain unions). When no element names a member,
    the fields of every member that fits are merged.

    Args:
        annotation: a model class or a type annotation.
        loc: the location, without the unknown key itself.

    Returns:
        The names; empty when the location leads to no model.
    """
    annotation = _strip_annotated(annotation)
    if _is_union(annotation):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if loc and len(members) > 1:
            for member in members:
                if _names_member(member, loc[0]):
                    return fields_at(member, loc[1:])
        merged: set[str] = set()
        for member in members:
            merged |= fields_at(member, loc)
        return merged
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        if not loc:
            return set(fields) | {f.alias for f in fields.values() if f.alias}
        for name, field in fields.items():
            if loc[0] in (name, field.alias):
                return fields_at(field.annotation, loc[1:])
        return set()
    if not loc:
        return set()
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
        return fields_at(args[1], loc[1:])
    if isinstance(origin, type) and issubclass(origin, (Sequence, set, frozenset)) and args:
        item = args[0]
        if origin is tuple and args[-1] is not Ellipsis and isinstance(loc[0], int):
            item = args[loc[0]] if loc[0] < len(args) else None
        return fields_at(item, loc[1:]) if item is not None else set()
    return set()


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _names_member(member: Any, element: str | int) -> bool:
    """Whether a location element stands for this union member (tag value or class name)."""
    member = _strip_annotated(member)
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    if isinstance(element, str) and re.search(rf"\b{re.escape(member.__name__)}\b", element):
        return True
    for field in member.model_fields.values():
        annotation = _strip_annotated(field.annotation)
        if get_origin(annotation) is Literal and element in get_args(annotation):
            return True
    return False


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

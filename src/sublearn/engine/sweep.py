"""Grids over config values: every combination of a few settings, one config per point.

A config declares a grid by dotted paths into its own data, with list items addressed by
index::

    sweep:
      grid:
        students.objectives.sft.lora.r: [4, 8]
        teachers.0.trait.word: [owl, cat]

:func:`expand_grid` turns the data and the grid into one config data per combination,
and :func:`point_label` names each combination for a folder. Both are pure functions.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from sublearn.config import Config, fields_at
from sublearn.errors import ConfigError
from sublearn.runs import content_hash

_MAX_LABEL = 96


class SweepConfig(Config):
    """A grid of config values: one experiment per combination."""

    name: str | None = Field(
        default=None, description="Name of the sweep (its folder and report title)."
    )
    grid: dict[str, list[Any]] = Field(
        description=(
            "Dotted config path -> values to try; every combination is one point. List items "
            "are addressed by index: teachers.0.trait.word: [owl, cat]."
        )
    )

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in grid.items():
            _segments(path)
            if not values:
                raise ValueError(f"{path!r} has no values to try")
        _check_overlaps(list(grid))
        return grid


def expand_grid(
    data: dict[str, Any], grid: dict[str, list[Any]], model: type[BaseModel] | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every combination of the grid's values, applied to a copy of the config data.

    The first path of the grid varies slowest. A value replaces what is at its path
    (a mapping value replaces the whole mapping, it is not merged).

    Args:
        data: the config data (as read from YAML, with overrides merged).
        grid: dotted path -> values; a numeric segment indexes a list.
        model: the config class. With it, a path that ``data`` leaves at its default is
            settable when the class has that field there (missing mappings on the way are
            created); without it, every segment of every path must exist in ``data``.

    Returns:
        ``(point, data)`` per combination: ``point`` maps each path to its value there;
        ``data`` is a new dict (``data`` itself is left unchanged).

    Raises:
        ConfigError: naming the path, for an empty value list, a path that does not exist
            (with the closest keys found there), or two paths of which one contains the other.
    """
    for path, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid: {path!r} needs a non-empty list of values")
    _check_overlaps(list(grid))
    paths = list(grid)
    for path in paths:  # validate once, before building every combination
        _assign(copy.deepcopy(data), path, grid[path][0], model)
    points = []
    for values in itertools.product(*(grid[p] for p in paths)):
        point = dict(zip(paths, values, strict=True))
        applied = copy.deepcopy(data)
        for path, value in point.items():
            _assign(applied, path, copy.deepcopy(value), model)
        points.append((point, applied))
    return points


def point_label(point: dict[str, Any]) -> str:
    """A short, filesystem-safe name for a grid point, e.g. ``r=4,learning_rate=0.0001``.

    Each path is shortened to its last segment, or to as many trailing segments as it
    takes to tell it apart from the point's other paths (``0.trait.word=owl``). Characters
    outside ``A-Z a-z 0-9 . _ = , + -`` become ``_``; when that changes anything, or the
    label is longer than 96 characters, a hash of the point is appended so that distinct
    points keep distinct labels.

    Args:
        point: path -> value, as :func:`expand_grid` returns it.

    Returns:
        The label (``default`` for an empty point).
    """
    if not point:
        return "default"
    names = _short_names(list(point))
    label = ",".join(f"{names[path]}={_format(value)}" for path, value in point.items())
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", label)
    if safe.startswith((".", "-")):  # hidden files and command-line options
        safe = "_" + safe
    if safe == label and len(label) <= _MAX_LABEL:
        return label
    digest = content_hash(sorted(point.items()), length=8)
    return f"{safe[: _MAX_LABEL - len(digest) - 1]}~{digest}"


def split_sweep(data: dict[str, Any]) -> tuple[dict[str, Any], SweepConfig | None]:
    """Separate a config's ``sweep`` section from the rest of its data.

    Returns:
        The data without ``sweep`` (a shallow copy), and the validated section, if any.

    Raises:
        ConfigError: if the section is invalid.
    """
    from pydantic import ValidationError

    from sublearn.config import format_validation_error

    rest = {k: v for k, v in data.items() if k != "sweep"}
    if data.get("sweep") is None:
        return rest, None
    try:
        return rest, SweepConfig.model_validate(data["sweep"])
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "sweep section", SweepConfig)) from None


def _segments(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not p.strip() for p in parts):
        raise ConfigError(f"sweep grid: {path!r} is not a dotted path such as students.seeds")
    return parts


def _check_overlaps(paths: list[str]) -> None:
    """Reject ``a.b`` with ``a.b.c``: which value would win is not obvious."""
    for path in paths:
        for other in paths:
            if other != path and other.startswith(path + "."):
                raise ConfigError(f"sweep grid: {path!r} contains {other!r}; sweep one of them")


def _assign(data: dict[str, Any], path: str, value: Any, model: type[BaseModel] | None) -> None:
    """Set ``value`` at ``path`` inside ``data`` (in place)."""
    segments = _segments(path)
    node: Any = data
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        where = ".".join(segments[:depth]) or "the config"
        if isinstance(node, list):
            if not segment.isdigit() or int(segment) >= len(node):
                raise ConfigError(
                    f"sweep grid: {path!r}: {where} is a list of {len(node)} items; "
                    f"address an item by its index (0 to {len(node) - 1}), not {segment!r}"
                )
            if last:
                node[int(segment)] = value
            else:
                node = node[int(segment)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"sweep grid: {path!r}: {where} is a {type(node).__name__} "
                f"({node!r}), not a mapping or a list"
            )
        key: Any = segment
        if key not in node and segment.isdigit() and int(segment) in node:
            key = int(segment)  # YAML reads `0:` as an int key
        if key not in node:
            known = _fields(model, segments[:depth])
            if segment not in known:
                raise ConfigError(
                    f"sweep grid: {path!r} does not exist: {where} has no key {segment!r}"
                    + _close(segment, [str(k) for k in node] + sorted(known))
                )
            if not last:
                node[key] = {}  # a sub-config left at its defaults: set just this field
        if last:
            node[key] = value
        else:
            node = node[key]


def _fields(model: type[BaseModel] | None, location: list[str]) -> set[str]:
    """Field names the config class has at ``location`` (none without a class)."""
    if model is None:
        return set()
    return fields_at(model, [int(s) if s.isdigit() else s for s in location])


def _close(name: str, keys: list[str]) -> str:
    keys = sorted(set(keys))
    if not keys:
        return ""
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(close)}?"
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    return f" (keys there: {shown})"


def _short_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest suffix of segments that no other path ends with."""
    split = {p: p.split(".") for p in paths}
    names = {}
    for path, parts in split.items():
        names[path] = path
        for k in range(1, len(parts) + 1):
            suffix = parts[-k:]
            if all(split[o][-k:] != suffix for o in paths if o != path):
                names[path] = ".".join(suffix)
                break
    return names


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

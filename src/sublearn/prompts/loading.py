"""Reading task datasets (coding tasks, GSM8K) from a local file or the Hugging Face hub.

Prompt sources that are not generated from templates start from a dataset of tasks.
This module turns one into a list of plain dicts with the fields a generator needs,
and every failure into a :class:`~sublearn.errors.DataError` that names the file (or
hub id) and what was wrong, so a typo in a config fails before any model is loaded.

A source is read as:

* ``*.jsonl``: one JSON object per line, read here so that errors name the line;
* ``*.json`` and ``*.parquet``: through ``datasets.load_dataset("json"/"parquet")``;
* anything else that is not an existing path: a hub dataset id, through
  ``datasets.load_dataset(id, config, split=...)``. With ``HF_DATASETS_OFFLINE=1`` only
  a copy already in the local cache can be read; a missing one is a DataError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

from sublearn.errors import DataError
from sublearn.jsonl import read_jsonl

__all__ = [
    "DATA_DIR",
    "Message",
    "Prompt",
    "load_records",
    "looks_like_path",
]

DATA_DIR = Path(__file__).parent / "data"
"""Small datasets shipped with the package, for offline toy runs."""

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class Message(TypedDict):
    """One chat message."""

    role: str
    content: str


class Prompt(TypedDict):
    """A prompt record: the shape generation stores, less the reply.

    Attributes:
        id: stable across seeds: it names the source item (and sample), not the draw.
        messages: the conversation to answer (here, one user message).
    """

    id: str
    messages: list[Message]


def looks_like_path(source: str) -> bool:
    """Whether ``source`` is meant as a local file rather than a hub dataset id.

    An existing path is a file; so is anything with a dataset file suffix or starting
    like a path (``/``, ``.``, ``~``), so that a mistyped file name is reported as a
    missing file rather than looked up on the hub.
    """
    if Path(source).expanduser().exists():
        return True
    return source.endswith(_LOCAL_SUFFIXES) or source.startswith(("/", ".", "~"))


TOY_SOURCES = {"code": "code_tasks.jsonl", "arithmetic": "arithmetic.jsonl"}
"""Task files of the toy world, named ``toy:<name>`` in a config (shipped with sublearn)."""


def toy_source(source: str) -> str:
    """The file a ``toy:<name>`` source names (the toy world's task files); else ``source``.

    Raises:
        DataError: an unknown toy source.
    """
    if not source.startswith("toy:"):
        return source
    name = source.removeprefix("toy:")
    if name not in TOY_SOURCES:
        raise DataError(
            f"unknown toy source {source!r}; known: {', '.join(f'toy:{n}' for n in TOY_SOURCES)}"
        )
    return str(Path(__file__).parent.parent / "toy" / "data" / TOY_SOURCES[name])


def load_records(
    source: str,
    fields: Sequence[str | Sequence[str]],
    *,
    hub_config: str | None = None,
    split: str = "train",
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Read a dataset and check that every record has the fields a generator needs.

    Args:
        source: a local ``.jsonl``, ``.json`` or ``.parquet`` file, or a hub dataset id.
        fields: the fields each record must hold as non-empty strings. An entry that is
            itself a sequence of names means "any one of these" (e.g. ``("prompt",
            "task")``).
        hub_config: the hub dataset's configuration (e.g. ``"main"`` for GSM8K); unused
            for local files.
        split: the split to read from a hub dataset; unused for local files.
        check: a further test of each record (after the fields'): a problem's
            description, or None when the record is fine.

    Returns:
        The records, in source order, as dicts (every column kept).

    Raises:
        DataError: when the file is missing or unreadable, the hub dataset cannot be
            loaded, the dataset is empty, or a record lacks a field or fails ``check``;
            the message names the file (and line or row) and the problem.
    """
    source = toy_source(source)
    if looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"dataset file not found: {path}")
        if path.suffix == ".jsonl":
            records = _read_jsonl(path)
            where = [f"{path}:{lineno}" for lineno, _ in records]
            rows = [row for _, row in records]
        else:
            rows = _read_with_datasets(path)
            where = [f"{path} row {i}" for i in range(len(rows))]
        label = str(path)
    else:
        rows = _read_hub(source, hub_config, split)
        where = [f"{source} ({split}) row {i}" for i in range(len(rows))]
        label = source
    if not rows:
        raise DataError(f"{label}: the dataset has no records")
    for row, at in zip(rows, where, strict=True):
        for wanted in fields:
            names = (wanted,) if isinstance(wanted, str) else tuple(wanted)
            if not any(isinstance(row.get(n), str) and row[n].strip() for n in names):
                choice = " or ".join(repr(n) for n in names)
                raise DataError(f"{at}: missing field {choice} (a non-empty string)")
        problem = check(row) if check is not None else None
        if problem is not None:
            raise DataError(f"{at}: {problem}")
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, _, value in read_jsonl(path):
        if not isinstance(value, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}")
        rows.append((lineno, value))
    return rows


def _read_with_datasets(path: Path) -> list[dict[str, Any]]:
    import datasets  # deferred: importing datasets takes seconds

    builder = "parquet" if path.suffix == ".parquet" else "json"
    try:
        data = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types for one unreadable file
        raise DataError(f"{path}: cannot be read as {builder} ({err})") from err
    return [dict(row) for row in data]


def _read_hub(source: str, hub_config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets  # deferred: importing datasets takes seconds

    try:
        data = datasets.load_dataset(source, hub_config, split=split)
    except Exception as err:  # offline, unknown id, unknown config or split: all one answer
        offline = " (offline mode: only a cached copy can be read)" if _offline() else ""
        raise DataError(
            f"cannot load hub dataset {source!r} (config {hub_config!r}, split {split!r})"
            f"{offline}: {err}; give a local .jsonl or .parquet file instead"
        ) from err
    return [dict(row) for row in data]


def _offline() -> bool:
    import datasets.config

    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
